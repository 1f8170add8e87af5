"""``conveyor models ...``: list, show, register, alias, history, rollback, promote, gates, compare.

Promotion goes through gates (see :mod:`conveyor.registry.promotion`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import (
    CursorOpt,
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    echo_list,
    echo_report,
    errors,
    open_project,
    parse_since,
    print_table,
    when,
)
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.registry import Registry
    from conveyor.registry.versions import ModelVersion

models_app = typer.Typer(
    help="The model registry: versions, aliases and their history.", no_args_is_help=True
)

PairsOpt = Annotated[list[str] | None, typer.Option(help="key=value; repeat for more.")]


def _registry(proj: Project) -> Registry:
    from conveyor.registry.registry import Registry

    return proj.service("registry", Registry)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{option} {item!r}: expected key=value", field=option)
        pairs[key] = value
    return pairs


def _numbers(values: list[str] | None, option: str) -> dict[str, float]:
    numbers = {}
    for key, value in _pairs(values, option).items():
        try:
            numbers[key] = float(value)
        except ValueError:
            raise InvalidInputError(
                f"{option} {key}={value!r}: expected a number", field=option
            ) from None
    return numbers


def _params(values: list[str] | None) -> dict[str, Any]:
    import orjson

    params: dict[str, Any] = {}
    for key, value in _pairs(values, "--param").items():
        try:
            params[key] = orjson.loads(value)  # numbers and booleans keep their type
        except orjson.JSONDecodeError:
            params[key] = value
    return params


def _load_object(file: Path | None, obj: str | None) -> Any:
    if (file is None) == (obj is None):
        raise InvalidInputError(
            "give the model as --file model.pkl or as --object module:attr", field="model"
        )
    if file is not None:
        if not file.is_file():
            raise InvalidInputError(f"model file {file} does not exist", field="file")
        import joblib  # type: ignore[import-untyped]

        try:
            return joblib.load(file)  # reads plain pickles too
        except Exception as exc:  # a corrupt or foreign file: say which
            raise InvalidInputError(
                f"cannot read a pickled model from {file}: {exc}", field="file"
            ) from exc
    import importlib
    import sys

    assert obj is not None
    module_name, sep, attr = obj.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(f"--object {obj!r}: expected module:attr", field="object")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"--object {obj!r}: {exc}", field="object") from exc
    return found() if isinstance(found, type) else found


def _read_frame(path: Path) -> Any:
    from conveyor.data.sources import CSVSource, ParquetSource

    source = ParquetSource(path) if path.suffix.lower() in (".parquet", ".pq") else CSVSource(path)
    return source.read().table


@models_app.command("list")
@errors
def list_cmd(
    name: Annotated[str | None, typer.Argument(help="Only versions of this model.")] = None,
    search: Annotated[str | None, typer.Option(help="Model name contains this.")] = None,
    tag: Annotated[str | None, typer.Option(help="key or key=value.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List model versions, newest first."""
    with open_project(project) as proj:
        registry = _registry(proj)
        page = registry.search(search, tag, name=name, limit=limit, cursor=cursor)
        if as_json:
            echo_list((v.to_dict() for v in page.items), page.next_cursor)
            return
        from rich.table import Table

        table = Table(title="model versions", title_justify="left")
        for column in ("version", "flavor", "metrics", "tags", "git", "created", "id"):
            table.add_column(column, overflow="fold")
        for v in page.items:
            git = "-" if v.git_commit is None else v.git_commit[:10] + ("*" if v.git_dirty else "")
            table.add_row(
                v.ref,
                v.flavor,
                ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items())),
                ", ".join(f"{k}={x}" for k, x in sorted(v.tags.items())),
                git,
                when(v.created_at),
                v.id,
            )
        print_table(table, page.next_cursor)


@models_app.command("show")
@errors
def show(
    ref: Annotated[str, typer.Argument(help="name, name@N, name@alias or a version id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one version: artifact, signature, libraries, lineage and its aliases."""
    with open_project(project) as proj:
        registry = _registry(proj)
        version = registry.resolve(ref)
        aliases = sorted(
            a for a, n in registry.aliases(version.model).items() if n == version.number
        )
        body = {**version.to_dict(), "aliases": aliases, "lineage": _lineage(proj, version)}
        if as_json:
            echo_json(body)
            return
        from rich.markup import escape

        out = console()
        out.print(f"[bold]{escape(version.ref)}[/] ({version.flavor}) {version.id}")
        shown = {
            **body,
            "parent_id": _ref_of(registry, version.parent_id),
            "dataset_version_ids": _dataset_refs(proj, version.dataset_version_ids),
        }
        labels = {"parent_id": "parent", "dataset_version_ids": "datasets"}
        for key in (
            "aliases",
            "artifact_digest",
            "artifact_size",
            "status",
            "created_at",
            "run_id",
            "parent_id",
            "git_commit",
            "git_dirty",
            "dataset_version_ids",
            "params",
            "metrics",
            "tags",
            "libraries",
            "environment",
        ):
            label = labels.get(key, key)
            out.print(f"  {label}: {escape(_fmt(shown[key]))}", soft_wrap=True)
        if version.signature:
            cols = ", ".join(
                f"{c['name']}:{c['type']}{'' if c['nullable'] else '!'}"
                for c in version.signature["inputs"]
            )
            out.print(f"  signature: {escape(cols)}", soft_wrap=True)
        if version.compiled:  # the formula servers answer from (docs/serving.md)
            compiled = version.compiled
            out.print(
                f"  formula: {escape(str(compiled['kind']))} {escape(str(compiled['digest']))} "
                f"({compiled['size']} bytes; served without unpickling the model)",
                soft_wrap=True,
            )
        if version.inputs:
            out.print("  lineage:")
            for path in body["lineage"]:
                out.print(f"    {escape(' -> '.join(path))}", soft_wrap=True)


@models_app.command("register")
@errors
def register(
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A pickled or joblib model file.")
    ] = None,
    obj: Annotated[
        str | None,
        typer.Option("--object", help="module:attr naming a model (a class is instantiated)."),
    ] = None,
    signature_from: Annotated[
        Path | None,
        typer.Option(help="CSV or Parquet training data to infer the input signature from."),
    ] = None,
    param: PairsOpt = None,
    metric: PairsOpt = None,
    tag: PairsOpt = None,
    parent: Annotated[str | None, typer.Option(help="The version this one derives from.")] = None,
    run_id: Annotated[str | None, typer.Option(help="The training run's id.")] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="Training dataset version (name@N); repeatable.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="The model's description.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model file or object as the next version of NAME."""
    with open_project(project) as proj:
        who = authorized(proj, "models.register")
        model = _load_object(file, obj)
        frame = _read_frame(signature_from) if signature_from is not None else None
        datasets = [proj.data.versions.resolve(ref) for ref in dataset or []]
        version = _registry(proj).register(
            name,
            model,
            signature_from=frame,
            params=_params(param),
            metrics=_numbers(metric, "--metric"),
            tags=_pairs(tag, "--tag"),
            parent=parent,
            run_id=run_id,
            dataset_versions=datasets,
            description=description,
            actor=who,
        )
        if as_json:
            echo_json(version.to_dict())
        else:
            typer.echo(f"Registered {version.ref} ({version.flavor}) {version.id}")


@models_app.command("compile")
@errors
def compile_cmd(
    ref: Annotated[str, typer.Argument(help="The version: name@N, name@alias or an id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record the formula of a version registered before formulas were recorded at
    registration, so servers answer from it without unpickling the model (a scikit-learn
    linear model with numeric inputs; docs/serving.md)."""
    with open_project(project) as proj:
        who = authorized(proj, "models.register")
        registry = _registry(proj)
        found = registry.resolve(ref)  # once: record_formula takes the version itself
        version = registry.record_formula(found, actor=who)
        if as_json:
            echo_json({**version.to_dict(), "already_recorded": found.compiled is not None})
        else:
            compiled = version.compiled or {}
            said = "already had" if found.compiled is not None else "recorded"
            typer.echo(f"{version.ref}: {said} its formula {compiled.get('digest')}")


@models_app.command("alias")
@errors
def alias_cmd(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[str, typer.Argument(help="Version number or id.")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the history).")] = None,
    force: Annotated[bool, typer.Option(help="A forced move (needs --reason).")] = False,
    expected_version: Annotated[
        int | None,
        typer.Option(help="Refuse if the alias moved since this row version (0: unset)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS of NAME at VERSION, recording who, when and why."""
    with open_project(project) as proj:
        who = authorized(proj, "models.promote")
        move = _registry(proj).set_alias(
            name,
            alias,
            version,
            actor=who,
            reason=reason,
            forced=force,
            expected_version=expected_version,
        )
        _print_move(proj, move, as_json)


@models_app.command("rollback")
@errors
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to move back, e.g. champion.")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the history).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move ALIAS back to the version it pointed at before its last move."""
    with open_project(project) as proj:
        who = authorized(proj, "models.promote")
        move = _registry(proj).rollback(name, alias, actor=who, reason=reason)
        _print_move(proj, move, as_json)


def _print_move(proj: Project, move: Any, as_json: bool) -> None:
    if as_json:
        echo_json(move.to_dict())
        return
    registry = _registry(proj)
    target = registry.by_id(move.to_version_id)
    source = registry.by_id(move.from_version_id).ref if move.from_version_id else "(unset)"
    typer.echo(f"{move.model}@{move.alias}: {source} -> {target.ref}")


@models_app.command("history")
@errors
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Instead: which version ALIAS held then (an ISO time, or an age: 2h)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many moves, newest first.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alias moves of NAME (newest first), or with --at, what ALIAS pointed at then."""
    with open_project(project) as proj:
        registry = _registry(proj)
        if at is not None:
            if alias is None:
                raise InvalidInputError("--at needs an ALIAS", field="alias")
            moment = parse_since(at, option="--at")
            assert moment is not None
            found = registry.alias_at(name, alias, moment)
            if as_json:
                echo_json({"at": moment.isoformat(), "version": found.to_dict() if found else None})
            else:
                typer.echo(f"{name}@{alias} at {when(moment)}: {found.ref if found else '(unset)'}")
            return
        moves = registry.alias_history(name, alias, limit=limit)
        if as_json:
            echo_list(m.to_dict() for m in moves)
            return
        ids = {i for m in moves for i in (m.from_version_id, m.to_version_id) if i}
        numbers = {i: registry.by_id(i).number for i in ids}
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"alias history of {name}", title_justify="left")
        for column in ("at", "alias", "from", "to", "actor", "forced", "reason"):
            table.add_column(column, overflow="fold")
        for m in moves:
            table.add_row(
                when(m.at),
                m.alias,
                _number(numbers, m.from_version_id),
                _number(numbers, m.to_version_id),
                m.actor or "-",
                "yes" if m.forced else "",
                Text(m.reason or ""),  # the user's words, not markup
            )
        console().print(table)


def _number(numbers: dict[str, int], version_id: str | None) -> str:
    if version_id is None:
        return "-"
    number = numbers.get(version_id)
    return str(number) if number is not None else version_id[:12]


@models_app.command("promote")
@errors
def promote(
    ref: Annotated[str, typer.Argument(help="Version to promote: name@N.")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the history).")] = None,
    force: Annotated[
        bool, typer.Option(help="Promote although its gates failed or never ran (needs --reason).")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make REF the champion (or --alias) if its newest gate report passed."""
    with open_project(project) as proj:
        who = authorized(proj, "models.promote")
        registry = _registry(proj)
        version = registry.resolve(ref)
        promotion = registry.promote(
            version.model,
            version,
            alias=alias,
            actor=who,
            reason=reason,
            force=force,
        )
        if as_json:
            echo_json(promotion.to_dict())
            return
        verdict = promotion.report.verdict if promotion.report else "no gate report"
        if promotion.unchanged:
            typer.echo(f"{version.ref} is already {alias!r}: nothing moved, nothing recorded")
            return
        typer.echo(
            f"{version.model}@{alias} -> {version.ref} (gates: {verdict}"
            + (", FORCED" if promotion.forced else "")
            + ")"
        )


@models_app.command("gates")
@errors
def gates(
    ref: Annotated[str, typer.Argument(help="Version: name@N or name@alias.")],
    rerun: Annotated[
        bool, typer.Option(help="Run the spec's gates again on today's data and champion.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show REF's newest gate report, or run its gates again with --rerun. Exit 3 if failed."""
    with open_project(project) as proj:
        who: str | None = None
        if rerun:  # the key is checked before anything is looked up
            who = authorized(proj, "training.evaluate")
        registry = _registry(proj)
        version = registry.resolve(ref)
        if who is not None:
            from conveyor.training.flow import evaluate_version

            report = evaluate_version(proj, version.ref, actor=who)
        else:
            found = registry.gate_report(version)
            if found is None:
                raise InvalidInputError(
                    f"{version.ref} has no gate report yet: conveyor models gates "
                    f"{version.ref} --rerun",
                    field="ref",
                )
            report = found
        echo_report(report, as_json)
    if not report.passed:
        check_failed()


@models_app.command("compare")
@errors
def compare_cmd(
    left: Annotated[str, typer.Argument(help="First version, e.g. fraud@champion.")],
    right: Annotated[str, typer.Argument(help="Second version, e.g. fraud@challenger.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two versions: metrics, parameters, lineage and gate verdicts side by side."""
    with open_project(project) as proj:
        registry = _registry(proj)
        a, b = registry.resolve(left), registry.resolve(right)
        rows: list[tuple[str, Any, Any]] = [
            ("flavor", a.flavor, b.flavor),
            ("created", when(a.created_at), when(b.created_at)),
            ("size (bytes)", a.artifact_size, b.artifact_size),
            ("parent", _ref_of(registry, a.parent_id), _ref_of(registry, b.parent_id)),
            (
                "datasets",
                _dataset_refs(proj, a.dataset_version_ids),
                _dataset_refs(proj, b.dataset_version_ids),
            ),
            ("git", a.git_commit or "-", b.git_commit or "-"),
        ]
        for key in sorted(set(a.metrics) | set(b.metrics)):
            rows.append((f"metric {key}", a.metrics.get(key), b.metrics.get(key)))
        for key in sorted(set(a.params) | set(b.params)):
            rows.append((f"param {key}", a.params.get(key), b.params.get(key)))
        ra, rb = registry.gate_report(a), registry.gate_report(b)
        rows.append(("gates", ra.verdict if ra else "-", rb.verdict if rb else "-"))
        if as_json:
            echo_json(
                {
                    "left": a.ref,
                    "right": b.ref,
                    "rows": [{"field": f, "left": x, "right": y} for f, x, y in rows],
                }
            )
            return
        from rich.table import Table

        table = Table(title=f"{a.ref} vs {b.ref}")
        table.add_column("field")
        table.add_column(a.ref)
        table.add_column(b.ref)
        for field_name, x, y in rows:
            mark = "" if x == y else "bold"
            table.add_row(field_name, _fmt(x), _fmt(y), style=mark)
        console().print(table)


def _ref_of(registry: Registry, version_id: str | None) -> str:
    if version_id is None:
        return "-"
    return registry.by_id(version_id).ref


def _dataset_refs(proj: Project, version_ids: Sequence[str]) -> str:
    """``houses@2, loans@5``: the data set versions a model was trained on, by name (the id
    when a version has been forgotten since)."""
    from conveyor.errors import NotFoundError

    refs = []
    for version_id in version_ids:
        try:
            refs.append(proj.data.versions.by_id(version_id).ref)
        except NotFoundError:
            refs.append(version_id)
    return ", ".join(refs) or "-"


def _lineage(proj: Project, version: ModelVersion) -> list[list[str]]:
    """Each path from a data set version to ``version``: ``[houses@2, houses_model@3]``
    for its own data, ``[tx@4, view spend v1, service fraud v2, fraud@5]`` through a
    feature service."""
    own = _dataset_refs(proj, version.dataset_version_ids[:1])
    paths = [[own, version.ref]] if version.dataset_version_ids else []
    for used in version.inputs:
        if used.get("kind") != "feature_service":
            paths.append([f"{used.get('kind')} {used.get('name')}", version.ref])
            continue
        service = f"service {used['name']} v{used.get('version')}"
        for view, seen in (used.get("views") or {}).items():
            sources = list(seen.get("datasets") or []) or [seen.get("path") or "?"]
            for source in sources:
                paths.append([source, f"view {view} v{seen.get('version')}", service, version.ref])
    return paths


def _fmt(value: Any) -> str:
    """A value as a person reads it: ``-`` for nothing, ``k=v, k=v`` for a mapping, ``a, b``
    for a list, four significant digits for a float."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)
