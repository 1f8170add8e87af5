"""Serving commands: ``conveyor deploy``, ``conveyor route ...``, ``conveyor rollback``.

::

    conveyor deploy fraud@3                          # all traffic to version 3
    conveyor deploy fraud@4 --canary 10              # 10 % to 4, the rest to the current stable
    conveyor route show fraud
    conveyor route set fraud --policy-file policy.json   # any policy (docs/serving.md)
    conveyor route history fraud
    conveyor rollback fraud --reason "p99 up"        # the previous revision's policy, as a new one

Every command here writes through :class:`conveyor.serving.route_store.RouteStore`,
so each change is a revision in the history with who and why, and an audit
event. ``serving_app`` has no name: its commands mount at the top level.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    ServerUrlOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
    when,
)
from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.serving.route_store import RouteState, RouteStore
    from conveyor.serving.routes import RoutePolicy

serving_app = typer.Typer(help="Deploy models and route their traffic.")
route_app = typer.Typer(help="Route policies: who gets which model version.", no_args_is_help=True)
serving_app.add_typer(route_app, name="route")

ReasonOpt = Annotated[str | None, typer.Option(help="Why (recorded in the route's history).")]
ExpectedOpt = Annotated[
    int | None,
    typer.Option(help="Refuse if the route is no longer at this revision (0: no route yet)."),
]


def _routes(proj: Project) -> RouteStore:
    from conveyor.serving.route_store import RouteStore

    return RouteStore(proj.store, proj.events, proj.registry)


def _current(routes: RouteStore, model: str) -> RouteState | None:
    try:
        return routes.get(model)
    except NotFoundError:
        return None


def _stable_of(policy: RoutePolicy) -> int:
    """The version a canary starts from: the fixed one, the ``stable`` arm, or the heaviest."""
    for arm in policy.versions:
        if arm.arm == "stable":
            return arm.version
    return max(policy.versions, key=lambda a: a.weight).version


def describe(policy: Mapping[str, Any]) -> str:
    """One line: ``canary: stable v3 90% | canary v4 10%; shadow v5; sticky x-user-id``.

    ``policy`` is the policy's JSON document (``RoutePolicy.to_dict()``, or a server's
    answer), so a command that asked a server prints it without building the model."""
    versions = policy.get("versions") or []
    total = sum(a.get("weight", 1.0) for a in versions) or 1.0

    def label(arm: Mapping[str, Any]) -> str:
        return arm.get("arm") or f"v{arm['version']}"

    if policy.get("mode") == "fixed":
        parts = [f"fixed: v{versions[0]['version']}"]
    else:
        arms = " | ".join(
            f"{label(a)} v{a['version']} {100 * a.get('weight', 1.0) / total:.4g}%"
            for a in versions
        )
        parts = [f"{policy.get('mode')}: {arms}"]
    if policy.get("shadow"):
        parts.append("shadow " + ", ".join(f"v{v}" for v in policy["shadow"]))
    if policy.get("flags"):
        parts.append("flags " + ", ".join(f"{f['name']}->v{f['version']}" for f in policy["flags"]))
    if policy.get("sticky_header"):
        parts.append(f"sticky {policy['sticky_header']}")
    if not policy.get("cache", True):
        parts.append("no cache")
    return "; ".join(parts)


def _print_state(state: RouteState | Mapping[str, Any], as_json: bool, verb: str = "") -> None:
    document = state if isinstance(state, Mapping) else state.to_dict()
    if as_json:
        echo_json(dict(document))
        return
    from rich.markup import escape

    prefix = f"{verb} " if verb else ""
    summary = escape(describe(document["policy"]))
    console().print(
        f"{prefix}{escape(document['model'])} revision {document['revision']}: {summary}",
        soft_wrap=True,
    )


@serving_app.command()
@errors
def deploy(
    ref: Annotated[
        str | None,
        typer.Argument(help="MODEL@VERSION or MODEL@ALIAS to deploy (--target server)."),
    ] = None,
    canary: Annotated[
        float | None,
        typer.Option(help="Send only this percent of traffic to REF (a canary)."),
    ] = None,
    stable: Annotated[
        int | None,
        typer.Option(help="With --canary: the version the rest goes to (default: current)."),
    ] = None,
    shadow: Annotated[
        list[int] | None,
        typer.Option(help="A version that also gets every request, unanswered; repeatable."),
    ] = None,
    sticky_header: Annotated[
        str | None,
        typer.Option(help="Header keeping a user on one arm (default: the current route's)."),
    ] = None,
    reason: ReasonOpt = None,
    target: Annotated[
        str,
        typer.Option(
            help="server: route a model version (default); kubernetes: render the project's "
            "Helm chart for --env NAME (and --apply it)."
        ),
    ] = "server",
    output: Annotated[
        Path | None,
        typer.Option(
            help="--target kubernetes: write the manifests here (default: .conveyor/deploy/ENV)."
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="--target kubernetes: kubectl apply them.")
    ] = False,
    tag: Annotated[
        str | None,
        typer.Option(help="--target kubernetes: the image tag (default: the git commit)."),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="--target kubernetes: a chart value, KEY.PATH=YAML; repeatable."
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Route MODEL's traffic to a version: all of it, or a --canary share.

    The route's sticky header, flag rules and cache setting are kept; the
    versions and shadows are replaced. The write is refused if someone else
    changed the route meanwhile.

    With --target kubernetes (and --env NAME), render the project's Helm chart for that
    environment instead, validate every manifest, and with --apply hand them to kubectl.
    """
    from conveyor.serving.routes import RoutePolicy

    if target == "kubernetes":
        _deploy_kubernetes(project, ref, output, apply, tag, set_values or [], as_json)
        return
    if target != "server":
        raise InvalidInputError(
            f"--target {target!r}: expected server or kubernetes", field="target"
        )
    if ref is None:
        raise InvalidInputError("give MODEL@VERSION to deploy", field="ref")
    if stable is not None and canary is None:
        raise InvalidInputError("--stable goes with --canary PCT", field="stable")
    with open_project(project) as proj:
        who = authorized(proj, "serving.deploy")
        routes = _routes(proj)
        version = proj.registry.resolve(ref)
        model = version.model
        current = _current(routes, model)
        options: dict[str, Any] = {"shadow": list(shadow or [])}
        if current is not None:
            kept = current.policy
            options.update(sticky_header=kept.sticky_header, flags=kept.flags, cache=kept.cache)
        if sticky_header is not None:
            options["sticky_header"] = sticky_header
        if canary is None:
            policy = RoutePolicy.fixed(version.number, **options)
        else:
            if stable is None:
                if current is None:
                    raise InvalidInputError(
                        f"model {model!r} has no route yet to take the stable version from: "
                        "give --stable N",
                        field="stable",
                    )
                stable = _stable_of(current.policy)
            policy = RoutePolicy.canary(stable, version.number, canary, **options)
        state = routes.set(
            model,
            policy,
            actor=who,
            reason=reason,
            expected_revision=0 if current is None else current.revision,
        )
        _print_state(state, as_json, "deployed")


def _deploy_kubernetes(
    project: Path | None,
    ref: str | None,
    output: Path | None,
    apply: bool,
    tag: str | None,
    set_values: list[str],
    as_json: bool,
) -> None:
    """``deploy --target kubernetes``: through the ``kubernetes`` service (the deploy
    capability's), which serving does not import."""
    if ref is not None:
        raise InvalidInputError(
            "--target kubernetes deploys the whole project, not one model: drop "
            f"{ref!r} (the routes travel with the store)",
            field="ref",
        )
    with open_project(project) as proj:
        if apply:  # the key first: a refusal renders nothing
            who = authorized(proj, "deploy.apply")
        kubernetes: Any = proj.service("kubernetes")
        folder = output or proj.spec.state_dir / "deploy" / str(proj.spec.environment)
        rendered = kubernetes.render(tag=tag, set_values=set_values, output=folder)
        applied = kubernetes.apply(rendered, actor=who) if apply else None
    if as_json:
        echo_json({**rendered.to_dict(), "applied": applied is not None})
    else:
        for line in rendered.describe():
            typer.echo(line)
        for problem in rendered.problems:
            typer.secho(f"  {problem}", fg="red", err=True)
        if applied is not None:
            typer.echo(applied.rstrip())
    if not rendered.valid:
        check_failed()


@serving_app.command()
@errors
def rollback(
    model: Annotated[str, typer.Argument(help="Model name.")],
    reason: ReasonOpt = None,
    url: ServerUrlOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore MODEL's previous route policy (as a new revision; the history is kept).

    With --url, the running server does it: the command then starts in a fraction of
    the time (no store to open), and that server switches at once, the others within
    their poll. To move a registry alias back instead, see `conveyor models rollback`.
    """
    if url:
        from conveyor.cli.remote import call, segment

        path = f"/v1/models/{segment(model)}/rollback"
        _print_state(call(url, "POST", path, query={"reason": reason}), as_json, "rolled back")
        return
    with open_project(project) as proj:
        who = authorized(proj, "serving.rollback")
        state = _routes(proj).rollback(model, actor=who, reason=reason)
        _print_state(state, as_json, "rolled back")


@route_app.command("show")
@errors
def route_show(
    model: Annotated[str, typer.Argument(help="Model name.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show MODEL's live route: revision, who set it and why, its arms, and the servers
    that could not load it (degraded: they serve an older revision or answer 503)."""
    with open_project(project) as proj:
        routes = _routes(proj)
        state = routes.get(model)
        degraded = routes.health(state)
        if as_json:
            echo_json({**state.to_dict(), "degraded": degraded})
            return
        from rich.markup import escape
        from rich.table import Table

        out = console()
        policy = state.policy
        out.print(
            f"[bold]{escape(state.model)}[/] revision {state.revision} ({policy.mode}), "
            f"set {when(state.updated_at)} by {escape(state.actor or '-')}"
            + (f": {escape(state.reason)}" if state.reason else ""),
            soft_wrap=True,
        )
        total = sum(a.weight for a in policy.versions) or 1.0
        table = Table(title_justify="left")
        for column in ("arm", "version", "share"):
            table.add_column(column)
        for a in policy.versions:
            share = "100%" if policy.mode == "fixed" else f"{100 * a.weight / total:.4g}%"
            table.add_row(a.label, str(a.version), share)
        for f in policy.flags:
            match = ", ".join(f"{k}={v}" for k, v in f.match.items()) or "any"
            table.add_row(f"flag:{f.name}", str(f.version), f"{f.percent:.4g}% of {match}")
        for v in policy.shadow:
            table.add_row("shadow", str(v), "copy")
        out.print(table)
        out.print(
            f"sticky header: {policy.sticky_header or '-'}; cache: "
            f"{'on' if policy.cache else 'off'}"
        )
        for worker in degraded:
            serving = worker["serving_revision"]
            out.print(
                f"[bold red]degraded[/] on {escape(worker['worker'])} since "
                f"{worker['since']}: {escape(worker['reason'])}: {escape(worker['message'])} "
                f"(serving {'nothing' if serving is None else f'revision {serving}'})",
                soft_wrap=True,
            )


@route_app.command("list")
@errors
def route_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Every model's live route."""
    with open_project(project) as proj:
        states = _routes(proj).all()
        if as_json:
            echo_list(s.to_dict() for s in states)
            return
        from rich.table import Table

        table = Table(title="routes", title_justify="left")
        for column in ("model", "revision", "policy", "updated", "by"):
            table.add_column(column, overflow="fold")
        for s in states:
            table.add_row(
                s.model,
                str(s.revision),
                describe(s.policy.to_dict()),
                when(s.updated_at),
                s.actor or "-",
            )
        console().print(table)


@route_app.command("set")
@errors
def route_set(
    model: Annotated[str, typer.Argument(help="Model name.")],
    policy_text: Annotated[
        str | None, typer.Option("--policy", help="The policy as JSON text.")
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy-file", "-f", help="A JSON file holding the policy."),
    ] = None,
    reason: ReasonOpt = None,
    expected_revision: ExpectedOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a policy (JSON, see docs/serving.md) MODEL's live route."""
    from conveyor.serving.routes import RoutePolicy

    if (policy_file is None) == (policy_text is None):
        raise InvalidInputError(
            "give the policy as --policy-file policy.json or as --policy '{...}'",
            field="policy",
        )
    if policy_file is not None:
        if not policy_file.is_file():
            raise InvalidInputError(
                f"policy file {policy_file} does not exist", field="policy_file"
            )
        text = policy_file.read_bytes()
    else:
        assert policy_text is not None
        text = policy_text.encode()
    policy = RoutePolicy.from_json(text)
    with open_project(project) as proj:
        who = authorized(proj, "serving.route")
        state = _routes(proj).set(
            model,
            policy,
            actor=who,
            reason=reason,
            expected_revision=expected_revision,
        )
        _print_state(state, as_json, "set")


@route_app.command("history")
@errors
def route_history(
    model: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[int, typer.Option(help="How many revisions, newest first.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """MODEL's route revisions, newest first: what, who, when and why."""
    with open_project(project) as proj:
        states = _routes(proj).history(model, limit)
        if not states:
            raise NotFoundError(f"model {model!r} has never had a route", model=model)
        if as_json:
            echo_list(s.to_dict() for s in states)
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"route history of {model}", title_justify="left")
        for column in ("revision", "at", "by", "policy", "reason"):
            table.add_column(column, overflow="fold")
        for s in states:
            table.add_row(
                str(s.revision),
                when(s.updated_at),
                s.actor or "-",
                describe(s.policy.to_dict()),
                Text(s.reason or ""),  # the user's words, not markup
            )
        console().print(table)


def worker_app() -> Any:
    """One worker's app over the project named by ``CONVEYOR_SERVE_PROJECT`` (uvicorn factory),
    draining on SIGTERM as ``serving.drain`` says (:mod:`conveyor.serving.drain`)."""
    import os

    from conveyor.project import Project
    from conveyor.serving.drain import draining_app
    from conveyor.serving.server import PROJECT_ENV, die_with_supervisor

    die_with_supervisor()
    return draining_app(Project.open(os.environ[PROJECT_ENV]))


def startup_notes(root: Path, auth: str) -> list[str]:
    """What ``conveyor serve`` says before it starts: the auth mode and the next step, and
    the models it will serve (or that nothing is deployed, and how to deploy)."""
    from conveyor.governance.access import describe_auth
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project
    from conveyor.serving.watcher import NOTHING_DEPLOYED

    with Project.open(root) as proj:
        has_keys = ApiKeys(proj.store, None, cache_ttl=0).any()
        states = _routes(proj).all()
    notes = [describe_auth(auth, has_keys)]
    if states:
        notes.append(
            "serving: "
            + "; ".join(
                f"{s.model} (revision {s.revision}: {describe(s.policy.to_dict())})" for s in states
            )
        )
    else:
        notes.append(f"{NOTHING_DEPLOYED}; until then readiness (/v2/health/ready) answers 503")
    return notes


@serving_app.command("serve")
@errors
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Interface (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: serving.workers).")
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="TLS certificate, PEM (default: serving.ssl_certfile); needs the key."),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(help="TLS private key, PEM (default: serving.ssl_keyfile)."),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Serve every deployed model: native API, Open Inference Protocol v2, /metrics.

    It first says how callers get in (the auth mode, and the key to create) and what it
    serves; with nothing deployed, readiness answers 503 until a model has a route.
    """
    from conveyor.config import load_spec
    from conveyor.serving.server import serve
    from conveyor.serving.settings import serving_of

    spec = load_spec(project)
    cfg = serving_of(spec)
    certfile = str(ssl_certfile) if ssl_certfile else cfg.ssl_certfile
    keyfile = str(ssl_keyfile) if ssl_keyfile else cfg.ssl_keyfile
    if bool(certfile) != bool(keyfile):
        raise InvalidInputError(
            "TLS needs both a certificate and its key: --ssl-certfile and --ssl-keyfile "
            "(or serving.ssl_certfile and serving.ssl_keyfile)",
            field="ssl_keyfile" if certfile else "ssl_certfile",
        )
    for name, tls_file in (("ssl_certfile", certfile), ("ssl_keyfile", keyfile)):
        if tls_file and not (spec.root / tls_file).is_file():
            raise InvalidInputError(f"{name}: no file at {tls_file}", field=name)
    for line in startup_notes(spec.root, cfg.auth):
        typer.echo(line, err=True)
    serve(
        spec.root,
        "conveyor.cli.serving:worker_app",
        host=host or cfg.host,
        port=cfg.port if port is None else port,
        workers=workers or cfg.workers,
        ssl_certfile=str(spec.root / certfile) if certfile else None,
        ssl_keyfile=str(spec.root / keyfile) if keyfile else None,
        header_timeout_s=cfg.header_timeout_s,
        keep_alive_s=cfg.keep_alive_s,
        max_connections=cfg.max_connections,
        graceful_s=cfg.drain.graceful_s,
    )


@serving_app.command("predict")
@errors
def predict_cmd(
    ref: Annotated[
        str,
        typer.Argument(
            help="NAME: as its route decides (canary, A-B, flags: as the server does); "
            "NAME@N or NAME@ALIAS: that version."
        ),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help='JSON: {"records": [...]} or {"columns": {...}}.')
    ],
    url: Annotated[
        str | None,
        typer.Option(
            help="Ask a running server (e.g. http://127.0.0.1:8000) instead of "
            "loading the model here."
        ),
    ] = None,
    sticky: Annotated[
        str | None,
        typer.Option(
            "--sticky",
            help="The value of the route's sticky header (a user id): the arm the server "
            "keeps that user on.",
        ),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Predict with MODEL as its route serves it, or with a named version or alias.

    Locally, the route is read from the project's route store and decided as a server
    decides it; with --url, the server does it (an alias is sent as ?version=ALIAS). The
    answer (JSON) goes to stdout; which version answered, and why, to stderr.
    """
    name, at, which = ref.partition("@")
    if not name or (at and not which):
        raise InvalidInputError(
            f"{ref!r}: expected NAME, NAME@N or NAME@ALIAS", field="ref", ref=ref
        )
    if url:
        _predict_remote(url, name, which or None, data, sticky)
        return
    _predict_local(project, name, which or None, data, sticky)


def _predict_remote(url: str, name: str, which: str | None, data: str, sticky: str | None) -> None:
    import json

    from conveyor.cli.remote import call, segment

    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidInputError(f"--data is not JSON: {exc}", field="data") from None
    headers: dict[str, str] = {}
    if sticky is not None:
        # The server reads the key from the header its route names; it is not known here,
        # so the route's sticky header is asked for first.
        route = call(url, "GET", f"/v1/models/{segment(name)}/route")
        header = (route.get("policy") or {}).get("sticky_header")
        if not header:
            raise InvalidInputError(
                f"--sticky: the route of {name!r} has no sticky_header", field="sticky"
            )
        headers[header] = sticky
    answer = call(
        url,
        "POST",
        f"/v1/models/{segment(name)}/predict",
        query={"version": which},
        document=document,
        headers=headers,
    )
    typer.echo(json.dumps(answer))
    _say_who_answered(answer, f"by the server at {url}", which)


def _predict_local(
    project: Path | None, name: str, which: str | None, data: str, sticky: str | None
) -> None:
    import random

    import orjson

    from conveyor.serving.native import decode_native_request

    decoded = decode_native_request(data.encode())
    with open_project(project) as proj:
        if which is not None:
            version = proj.registry.get(name, which)
            arm, revision = "direct", None
        else:
            try:
                state = _routes(proj).get(name)
            except NotFoundError:
                raise NotFoundError(
                    f"model {name!r} is not deployed: it has no route (conveyor deploy "
                    f"{name}@N); to ask one version, name it: {name}@N or {name}@champion",
                    model=name,
                ) from None
            if sticky is not None and not state.policy.sticky_header:
                raise InvalidInputError(
                    f"--sticky: the route of {name!r} has no sticky_header", field="sticky"
                )
            decision = state.policy.compiled().decide(
                model=name,
                key=sticky,
                attributes={k: str(v) for k, v in decoded.attributes.items()},
                rand=random.random(),
            )
            version = proj.registry.get(name, decision.version)
            arm, revision = decision.arm, state.revision
        loaded = proj.registry.load(version)
        output = loaded.predict(decoded.table)
    answer = {
        "predictions": output.tolist() if hasattr(output, "tolist") else output,
        "model": version.model,
        "version": version.number,
        "arm": arm,
    }
    typer.echo(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    _say_who_answered(answer, "here" if revision is None else f"route revision {revision}", which)


def _say_who_answered(answer: Mapping[str, Any], where: str, which: str | None) -> None:
    """One line on stderr: which version answered, and whether the route or the caller
    chose it (``fraud@3 answered (route revision 4, arm canary)``)."""
    model, number = answer.get("model"), answer.get("version")
    if which is None:
        why = f"{where}, arm {answer.get('arm')}"
    elif str(which) == str(number):
        why = f"{where}, named"
    else:
        why = f"{where}, as {model}@{which}"
    typer.secho(f"{model}@{number} answered ({why})", dim=True, err=True)
