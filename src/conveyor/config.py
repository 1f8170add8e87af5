"""The project spec: ``conveyor.yaml`` as pydantic models, with env overrides.

A project is a folder holding ``conveyor.yaml`` (the spec, kept in git) and
``.conveyor/`` (local state: the embedded databases and artifacts, ignored by
git). :func:`find_project_root` walks up from the current directory to find
it, as git finds ``.git``.

The foundation owns three sections: ``project``, ``backends`` (one URL per
seam) and ``slos``. Every other section belongs to a capability, which
declares it (:attr:`conveyor.capability.Capability.settings`); the model of
the whole spec is assembled from the installed capabilities
(:func:`spec_model`), so a new capability adds its section without touching
this module. Read a section with :meth:`ProjectSpec.section`.

The spec is loaded once, at the entry point, and passed on explicitly; nothing
reads it at import. Environment variables override any field, so the same
spec runs on a laptop, in a container and against real services::

    CONVEYOR_STORE=postgresql://conveyor@db:5432/conveyor      # backends.store (short form)
    CONVEYOR_BACKENDS__STORE=postgresql://...                  # the same, in full
    CONVEYOR_SERVING__PORT=8080                                 # serving.port
    CONVEYOR_MODELS__FRAUD__PARAMS='{"C": 0.5}'                 # JSON for lists and mappings

A malformed spec raises :class:`~conveyor.errors.ConfigError` naming the file
(or the environment variable), the line, the field and what was expected.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
)

from conveyor.backends import BackendURL, Seam
from conveyor.errors import ConfigError, ConveyorError, ProjectNotFoundError

__all__ = [
    "ENVIRONMENT_ENV",
    "ENV_PREFIX",
    "SPEC_FILE",
    "STATE_DIR",
    "TEMPLATES",
    "Backends",
    "EnvironmentSpec",
    "EventsSpec",
    "ProjectSpec",
    "QualitySLO",
    "Resources",
    "SLOs",
    "deep_merged",
    "env_overrides",
    "environment_of",
    "find_project_root",
    "load_spec",
    "named_in",
    "render_template",
    "spec_model",
]

log = logging.getLogger("conveyor.config")

SPEC_FILE = "conveyor.yaml"
STATE_DIR = ".conveyor"
#: Points at a project folder, bypassing the walk up from the current directory.
PROJECT_DIR_ENV = "CONVEYOR_PROJECT_DIR"
#: ``CONVEYOR_A__B__C`` overrides the field ``a.b.c``; ``CONVEYOR_<SEAM>`` is short for
#: ``CONVEYOR_BACKENDS__<SEAM>`` and ``CONVEYOR_PROJECT`` for ``project``.
ENV_PREFIX = "CONVEYOR_"
#: Fields written by earlier versions that no installed capability reads any more:
#: dropped with a warning, so an existing conveyor.yaml keeps loading.
_RETIRED: dict[tuple[str, ...], str] = {}


def _parse_url(value: Any) -> BackendURL:
    if isinstance(value, BackendURL):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string such as sqlite:///path.db, got {value!r}")
    try:
        return BackendURL.parse(value)
    except ConveyorError as exc:
        raise ValueError(exc.message) from None


URL = Annotated[
    BackendURL,
    BeforeValidator(_parse_url),
    PlainSerializer(lambda u: u.render(hide_password=True), return_type=str),
]


def named_in(table: str, *, key: str = "kind") -> AfterValidator:
    """A validator of a mapping whose ``key`` names an entry of a table of named things.

    ``table`` is the table's import string (a :class:`conveyor._names.NameTable`,
    imported when a mapping is checked), so a capability's section checks the names
    its entries use while the spec loads, and a wrong one is an error with its file
    and line like any other::

        expectations: list[Annotated[dict[str, Any], named_in("pkg.kinds:KINDS")]]
        # conveyor.yaml:9: datasets.tx.expectations.0.kind: unknown kind 'nul'; known: ...

    A name must be registered before the spec is loaded.
    """

    def check(value: dict[str, Any]) -> dict[str, Any]:
        from conveyor.capability import load

        names = load(table)
        if key not in value:
            raise ConfigError(f"no {key}; known: {', '.join(names)}", inside=key)
        if not isinstance(value[key], str) or value[key] not in names:
            raise ConfigError(names.unknown(value[key]).message, inside=key)
        return value

    return AfterValidator(check)


class QualitySLO(BaseModel):
    """The model-quality floor gates and alerts hold a model to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="Metric name, e.g. roc_auc, f1, rmse.", min_length=1)
    floor: float = Field(description="The worst acceptable value of the metric.")
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="maximize: higher is better (AUC); minimize: lower is (RMSE)."
    )

    def met_by(self, value: float) -> bool:
        """Whether ``value`` is on the right side of the floor."""
        return value >= self.floor if self.direction == "maximize" else value <= self.floor

    @property
    def comparator(self) -> str:
        return ">=" if self.direction == "maximize" else "<="


class SLOs(BaseModel):
    """Success criteria, stated up front and read by gates, canaries and alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: QualitySLO | None = Field(None, description="Model quality floor.")
    latency_p95_ms: float | None = Field(
        None, gt=0, description="95th percentile prediction latency, milliseconds."
    )
    throughput_rps: float | None = Field(
        None, gt=0, description="Sustained requests per second the service must carry."
    )
    availability: float | None = Field(
        None, gt=0, le=1, description="Fraction of successful requests, e.g. 0.999."
    )


class EventsSpec(BaseModel):
    """How the event log is written (the foundation's; ``CONVEYOR_EVENTS__SPILL_DIR``...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buffer: int = Field(
        100_000,
        ge=1000,
        description="Events held in memory before writers wait (telemetry spills instead).",
    )
    spill_dir: str | None = Field(
        ".conveyor/spill/events",
        description="Where telemetry waits on local disk while the event log is behind "
        "(relative to the project folder); null sheds it instead, counted.",
    )
    flush_interval_s: float = Field(
        0.05,
        gt=0,
        le=5,
        description="How often the writer commits what is buffered (sooner when a batch "
        "fills): with durability buffered, the window of telemetry a kill -9 can lose.",
    )
    durability: Literal["buffered", "acknowledged"] = Field(
        "buffered",
        description="buffered: a prediction is answered at once and its event committed "
        "within flush_interval_s (a kill -9 loses that window); acknowledged: the answer "
        "waits until its event is committed (group commit: many answers share one).",
    )
    ack_timeout_s: float = Field(
        5.0,
        gt=0,
        description="With durability acknowledged: how long an answer waits for its "
        "commit before it is a 503 (the event is kept and retried).",
    )


class Resources(BaseModel):
    """What one server container asks of its node (Kubernetes quantities)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str = Field("500m", description="CPU requested (Kubernetes quantity: 500m, 2).")
    memory: str = Field("1Gi", description="Memory requested (Kubernetes quantity: 512Mi, 2Gi).")
    cpu_limit: str | None = Field(None, description="CPU limit (default: none, no throttling).")
    memory_limit: str | None = Field(
        None, description="Memory limit (default: the memory requested)."
    )


class EnvironmentSpec(BaseModel):
    """One place the project runs (dev, staging, prod): what differs there.

    Selected with ``--env NAME`` (or ``CONVEYOR_ENV=NAME``): its backends, SLOs and
    settings are merged over the spec's before the ``CONVEYOR_*`` variables apply.
    Environments are listed in promotion order: a model version is promoted from one
    to the next (``conveyor promote``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What this environment is for.")
    backends: dict[str, str] = Field(
        default_factory=dict, description="Backend URLs that differ here: seam -> URL."
    )
    slos: dict[str, Any] = Field(
        default_factory=dict, description="SLO fields that differ here (latency_p95_ms...)."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other section's fields that differ here, merged over the spec's "
        "(serving: {workers: 4}).",
    )
    replicas: int = Field(1, ge=1, le=1000, description="Server replicas (Kubernetes).")
    resources: Resources = Field(
        default_factory=Resources, description="Each server container's CPU and memory."
    )
    url: str | None = Field(
        None,
        description="Where this environment's server answers (https://staging.example.com): "
        "what `conveyor smoke` and promotions from here call.",
    )
    namespace: str | None = Field(None, description="Kubernetes namespace (default: the name).")
    approval: bool = Field(
        False, description="A promotion into this environment must name an approver."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value


#: The environment variable ``--env NAME`` sets: the environment every command loads.
ENVIRONMENT_ENV = "CONVEYOR_ENV"


class Backends(BaseModel):
    """One URL per seam (:func:`conveyor.capability.seams`). Relative ``sqlite:///`` and
    ``file://`` paths are relative to the project folder, not to the current directory.

    The fields are assembled from the seams (:func:`spec_model`): the foundation's
    (store, artifacts, events, cache) and those capabilities add (the rate limiter's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _known_scheme(cls, url: BackendURL, info: Any) -> BackendURL:
        from conveyor.capability import seams

        try:
            seams()[info.field_name].spec(url)
        except ConveyorError as exc:
            raise ValueError(exc.message) from None
        return url


class ProjectSpec(BaseModel):
    """The foundation's part of ``conveyor.yaml``; the loaded spec is an instance of
    :func:`spec_model`, which adds each capability's sections to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(
        description="Project name: letters, digits, '-', '_' and '.'.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    )
    backends: Backends = Field(default_factory=Backends, description="One URL per seam.")
    slos: SLOs = Field(default_factory=SLOs, description="Success criteria.")
    events: EventsSpec = Field(default_factory=EventsSpec, description="The event log's writing.")
    environments: dict[str, EnvironmentSpec] = Field(
        default_factory=dict,
        description="Where the project runs (dev, staging, prod), in promotion order: "
        "what differs in each.",
    )
    environment: str | None = Field(
        None, exclude=True, description="The environment this spec was loaded for (--env)."
    )
    root: Path = Field(
        default=Path("."), exclude=True, description="The project folder (set at load)."
    )

    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    def where(self, dotted: str) -> str:
        """``conveyor.yaml:LINE`` of a field (or its nearest parent), for error messages."""
        parts = dotted.replace("[", ".").replace("]", "").split(".")
        for n in range(len(parts), 0, -1):
            line = self._lines.get(".".join(parts[:n]))
            if line:
                return f"{self.spec_file}:{line}"
        return str(self.spec_file)

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, value: dict[str, EnvironmentSpec]) -> dict[str, EnvironmentSpec]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"environment name {name!r}: use lowercase letters, digits and '-' "
                    "(it names a Kubernetes namespace)"
                )
        return value

    def environment_spec(self, name: str | None = None) -> EnvironmentSpec:
        """An environment's declaration (the loaded one by default); unknown: ConfigError."""
        name = name or self.environment
        if name is None:
            raise ConfigError("no environment selected: pass --env NAME", field="environment")
        found: EnvironmentSpec = environment_of(self.environments, name)
        return found

    def next_environment(self, name: str) -> str | None:
        """The environment after ``name`` in promotion order (None after the last)."""
        environment_of(self.environments, name)
        names = list(self.environments)
        index = names.index(name)
        return names[index + 1] if index + 1 < len(names) else None

    @property
    def spec_file(self) -> Path:
        return self.root / SPEC_FILE

    def section(self, name: str) -> Any:
        """A capability's section (``serving``, ``models``...), validated with its model.

        Each capability offers a typed reader (``conveyor.serving.settings.serving_of``).
        """
        if name in type(self).model_fields and name not in ProjectSpec.model_fields:
            return getattr(self, name)
        known = sorted(set(type(self).model_fields) - set(ProjectSpec.model_fields))
        raise ConfigError(
            f"no section {name!r} in this spec: no installed capability declares it "
            f"(sections: {', '.join(known) or 'none'})",
            field=name,
        )

    def url(self, seam: str) -> BackendURL:
        """The seam's URL, with a relative embedded path made absolute under ``root``."""
        url: BackendURL | None = getattr(self.backends, seam, None)
        if url is None or seam not in type(self.backends).model_fields:
            known = ", ".join(type(self.backends).model_fields)
            raise ConfigError(f"unknown seam {seam!r}; seams: {known}", field=seam)
        if url.scheme == "file" and url.path and not url.path.startswith("/"):
            return url.with_(path=str((self.root / url.path).resolve()))
        if url.scheme == "sqlite" and url.location not in ("", ":memory:"):
            location = Path(url.location)
            if not location.is_absolute():
                return url.with_(path="/" + str((self.root / location).resolve()))
        return url

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def path(self, relative: str) -> Path:
        """A path of the spec, relative to the project folder unless absolute."""
        found = Path(relative).expanduser()
        return found if found.is_absolute() else self.root / found


_ENV_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def environment_of(declared: Mapping[str, Any], name: str) -> Any:
    """``declared[name]``, or a ConfigError listing the environments the spec declares."""
    if name not in declared:
        known = ", ".join(declared) or "none (declare them under environments:)"
        raise ConfigError(
            f"unknown environment {name!r}; this spec declares: {known}",
            field="environment",
            environment=name,
        )
    return declared[name]


def spec_model() -> type[ProjectSpec]:
    """The model of the whole spec: the foundation's sections and every capability's."""
    from conveyor.capability import capabilities, seams

    return _assemble(tuple(capabilities()), tuple(seams().values()))


@functools.cache
def _assemble(caps: tuple[Any, ...], all_seams: tuple[Seam, ...]) -> type[ProjectSpec]:
    from conveyor.capability import load

    backend_fields: dict[str, Any] = {
        seam.name: (
            URL,
            Field(
                default=BackendURL.parse(seam.default or "memory://"),
                description=f"{seam.description}: {' | '.join(f'{s}://' for s in seam.schemes())}",
            ),
        )
        for seam in all_seams
    }
    backends = create_model("Backends", __base__=Backends, __module__=__name__, **backend_fields)
    fields: dict[str, Any] = {
        "backends": (backends, Field(default_factory=backends, description="One URL per seam."))
    }
    owners: dict[str, str] = {}
    for declared in caps:
        if not declared.settings:
            continue
        for name, definition in dict(load(declared.settings)).items():
            if name in ProjectSpec.model_fields or name in owners:
                raise ConfigError(
                    f"the capability {declared.name!r} declares the spec section {name!r}, "
                    f"which {owners.get(name, 'the foundation')!r} already owns",
                    capability=declared.name,
                )
            owners[name] = declared.name
            fields[name] = definition
    model: type[ProjectSpec] = create_model(
        "ProjectSpec", __base__=ProjectSpec, __module__=__name__, **fields
    )
    return model


def find_project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` holding ``.conveyor/`` or ``conveyor.yaml``.

    ``$CONVEYOR_PROJECT_DIR`` wins when set.
    """
    if start is None and os.environ.get(PROJECT_DIR_ENV):
        root = Path(os.environ[PROJECT_DIR_ENV]).expanduser().resolve()
        if not root.is_dir():
            raise ProjectNotFoundError(
                f"${PROJECT_DIR_ENV} points at {root}, which is not a folder", path=str(root)
            )
        return root
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / STATE_DIR).is_dir() or (folder / SPEC_FILE).is_file():
            return folder
    raise ProjectNotFoundError(
        f"no Conveyor project in {here} or any parent folder (looked for {STATE_DIR}/ and "
        f"{SPEC_FILE}); run `conveyor init` to create one",
        path=str(here),
    )


def load_spec(
    root: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    environment: str | None = None,
) -> ProjectSpec:
    """Load and validate the spec of the project at (or above) ``root``.

    ``env`` defaults to ``os.environ``; its ``CONVEYOR_*`` variables override
    the file. ``environment`` (default ``$CONVEYOR_ENV``) names one of the spec's
    ``environments:``, merged over the file first. A project folder without
    ``conveyor.yaml`` gets the defaults, named after the folder.
    """
    folder = find_project_root(root)
    env = os.environ if env is None else env
    path = folder / SPEC_FILE
    lines: dict[tuple[str, ...], int] = {}
    data: Any = {"project": folder.name}
    if path.is_file():
        text = _read(path)
        try:
            data = yaml.safe_load(text)
            lines = _line_map(yaml.compose(text, Loader=yaml.SafeLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or exc
            raise ConfigError(f"{where}: not valid YAML: {problem}", file=str(path)) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: expected a mapping of fields (project:, backends:, slos:), "
                f"got {type(data).__name__}",
                file=str(path),
            )
    environment = environment or env.get(ENVIRONMENT_ENV) or None
    overrides = env_overrides(env)
    # a variable naming an environment's field (CONVEYOR_ENVIRONMENTS__PROD__BACKENDS__STORE,
    # a secret URL) changes that environment before it is merged; every other one is
    # applied over the merged spec, so it wins over the environment
    inside = {p: o for p, o in overrides.items() if p[0] == "environments"}
    from_env = _apply_env(data, inside)
    if environment is not None:
        _apply_environment(data, environment, path)
    from_env |= _apply_env(data, {p: o for p, o in overrides.items() if p not in inside})
    _drop_retired(data, path, lines)
    data["root"] = folder
    data["environment"] = environment
    model = spec_model()
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, lines, from_env, model), file=str(path)) from None
    spec._lines = {".".join(k): v for k, v in lines.items()}
    return spec


def _apply_environment(data: dict[str, Any], name: str, path: Path) -> None:
    """Merge the environment ``name``'s backends, SLOs and settings over ``data``."""
    declared = data.get("environments") or {}
    if not isinstance(declared, dict):
        return  # the model's validation names the problem
    chosen = environment_of(declared, name)
    if not isinstance(chosen, dict):
        raise ConfigError(f"{path}: environments.{name}: expected a mapping", environment=name)
    for key in ("backends", "slos"):
        if chosen.get(key):
            current = data.get(key)
            data[key] = deep_merged(current if isinstance(current, dict) else {}, chosen[key])
    for section, fields in (chosen.get("settings") or {}).items():
        if section in ("environments", "project", "root", "environment"):
            raise ConfigError(
                f"{path}: environments.{name}.settings.{section}: an environment cannot "
                "change this field",
                environment=name,
            )
        current = data.get(section)
        if isinstance(current, dict) and isinstance(fields, dict):
            data[section] = deep_merged(current, fields)
        else:
            data[section] = fields


def deep_merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` deep-merged into it (mappings merged, the rest replaced)."""
    out = dict(base)
    for key, value in over.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merged(current, value)
        else:
            out[key] = value
    return out


def env_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, str]]:
    """The spec fields ``env`` overrides: field path -> (variable, value).

    ``CONVEYOR_A__B=v`` sets ``a.b`` (names are lowercased; a mapping key such
    as a model's name is matched case-insensitively when the spec is read);
    ``CONVEYOR_<SEAM>`` and ``CONVEYOR_PROJECT`` are short forms. Variables
    without ``__`` that name no seam (``CONVEYOR_API_KEY``) are not spec fields.
    """
    from conveyor.capability import seams

    short = {"PROJECT": ("project",), **{n.upper(): ("backends", n) for n in seams()}}
    found: dict[tuple[str, ...], tuple[str, str]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or value == "":
            continue
        rest = var[len(ENV_PREFIX) :]
        if "__" in rest:
            path = tuple(part.lower() for part in rest.split("__"))
            if not all(path):
                raise ConfigError(
                    f"${var}: an empty field name between '__' separators", variable=var
                )
        elif rest in short:
            path = short[rest]
        else:
            continue
        found[path] = (var, value)
    return found


def _apply_env(
    data: dict[str, Any], overrides: Mapping[tuple[str, ...], tuple[str, str]]
) -> dict[tuple[str, ...], str]:
    """Write ``overrides`` (:func:`env_overrides`) into ``data``; return field path ->
    variable."""
    import orjson

    applied: dict[tuple[str, ...], str] = {}
    for path, (var, raw) in sorted(overrides.items()):
        value: Any = raw
        if raw[:1] in "[{":  # lists and mappings are written as JSON
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"${var}: not valid JSON: {exc}", variable=var) from None
        node = data
        keys = list(path)
        for index, key in enumerate(keys[:-1]):
            key = _existing_key(node, key)
            keys[index] = key
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        keys[-1] = _existing_key(node, keys[-1])
        node[keys[-1]] = value
        applied[tuple(keys)] = var
    return applied


def _existing_key(node: dict[str, Any], key: str) -> str:
    """``key`` as the spec spells it (``Fraud`` for ``fraud``), or as given if absent."""
    if key in node:
        return key
    return next((k for k in node if isinstance(k, str) and k.lower() == key), key)


def _drop_retired(data: dict[str, Any], path: Path, lines: dict[tuple[str, ...], int]) -> None:
    from conveyor.capability import seams

    for field_path, why in _RETIRED.items():
        if field_path[:1] == ("backends",) and field_path[1] in seams():
            continue  # a capability reads it again
        node: Any = data
        for key in field_path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and field_path[-1] in node:
            del node[field_path[-1]]
            line = lines.get(field_path)
            where = f"{path}:{line}" if line else str(path)
            log.warning("%s: %s is ignored: %s", where, ".".join(field_path), why)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})", file=str(path)) from None


def _line_map(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            out[path] = key.start_mark.line + 1
            out.update(_line_map(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, str(index))
            out[path] = item.start_mark.line + 1
            out.update(_line_map(item, path))
    return out


def _explain(
    exc: ValidationError,
    path: Path,
    lines: dict[tuple[str, ...], int],
    from_env: dict[tuple[str, ...], str],
    model: type[BaseModel],
) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        raised = (err.get("ctx") or {}).get("error")
        inside = raised.context.get("inside") if isinstance(raised, ConfigError) else None
        if isinstance(inside, str) and inside:
            loc = (*loc, *inside.split("."))  # a validator's error names a field of the value
        dotted = ".".join(loc) or "(top level)"
        env_var = next(
            (from_env[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in from_env),
            # an unknown field the variable named: the error is about its first part
            next((var for path, var in from_env.items() if loc and path[: len(loc)] == loc), None),
        )
        if env_var is not None:
            where = f"${env_var}"
        else:
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
            where = f"{path}:{line}" if line else str(path)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field; expected one of: {', '.join(_fields_at(model, loc[:-1]))}"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif "input" in err and err["type"] not in ("value_error",):
            message += f" (got {err['input']!r})"
        problems.append(f"  {where}: {dotted}: {message}")
    return f"{path} is not a valid Conveyor spec:\n" + "\n".join(problems)


def _fields_at(model: Any, loc: tuple[str, ...]) -> list[str]:
    parts = list(loc)
    while parts:
        if getattr(model, "__origin__", None) is dict:  # dict[str, Model]: the key names an entry
            model = model.__args__[1]
            parts.pop(0)
            continue
        field = model.model_fields.get(parts.pop(0)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
        if getattr(model, "__origin__", None) is not dict:
            for arg in getattr(model, "__args__", ()):  # Optional[Model]
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    if not hasattr(model, "model_fields"):
        return []
    return [name for name, f in model.model_fields.items() if not f.exclude]


SPEC_TEMPLATE = """\
# Conveyor project spec. Documented in docs/spec.md (`conveyor spec` lists every field);
# `conveyor doctor` checks it.
project: {name}

# One URL per kind of state. Relative sqlite:/// and file:// paths are relative
# to this folder. Environment variables override each one, e.g.
#   CONVEYOR_STORE=postgresql://conveyor@db.internal:5432/conveyor
backends:
{backends}
# Success criteria, read by validation gates, canary analysis and alerts.
slos:
  quality:
    {metric:<23}# the metric gates compare (`conveyor spec metrics`)
    {floor:<23}# worst acceptable value
    {direction:<23}# maximize (higher is better) | minimize
  latency_p95_ms: 50       # p95 prediction latency
  throughput_rps: 500      # sustained requests per second
  availability: 0.999      # fraction of successful requests

# Data sets by name: where batches come from and what they must satisfy
# (`conveyor spec sources`, `conveyor spec expectations`). Uncomment the block
# below, put a CSV at data/train.csv and run `conveyor data ingest train`.
# datasets:
#   train:
#     source: {{kind: csv, path: data/train.csv}}
#     expectations:
#       - {{kind: not_null, column: target}}
#       - {{kind: row_count, min: 100}}
#     on_failure: quarantine   # fail | quarantine (set failing rows aside) | warn

# Trainable models by name (`conveyor spec gates`). Uncomment the block below and
# write model.py with fit(X, y, *, seed, **params) returning a fitted model, then
# run `conveyor train model`.
# models:
#   model:
#     train: model:fit
#     dataset: train
#     features: [x1, x2]
#     target: target
#     task: {task}
#     holdout: {{by: random, fraction: 0.2, seed: 0}}
#     gates:
#       - metric_floor: {{}}   # slos.quality above
#     auto_promote: true

# Where the project runs, in promotion order (docs/deploy.md). `--env NAME` on any
# command merges that environment's backends, SLOs and settings over the above;
# `conveyor promote MODEL@N --from staging` copies a version into the next one.
# environments:
#   dev: {{}}
#   staging:
#     backends: {{store: postgresql://conveyor@staging-db:5432/conveyor}}
#     url: https://staging.example.com     # what `conveyor smoke --env staging` asks
#     replicas: 2
#   prod:
#     backends: {{store: postgresql://conveyor@prod-db:5432/conveyor}}
#     replicas: 4
#     resources: {{cpu: "2", memory: 4Gi}}
#     approval: true                       # promotions into prod name an --approver
"""

#: ``conveyor init --template TASK``: the quality floor each kind of model starts with.
#: The metric is training's default for the task (``conveyor.training.settings.DEFAULT_METRICS``).
TEMPLATES: dict[str, dict[str, str]] = {
    "classification": {"metric": "roc_auc", "floor": "0.85", "direction": "maximize"},
    "regression": {"metric": "r2", "floor": "0.5", "direction": "maximize"},
}


def render_template(name: str, task: str = "classification") -> str:
    """The commented ``conveyor.yaml`` that ``conveyor init`` writes (a line per seam), for a
    ``classification`` or a ``regression`` model (:data:`TEMPLATES`)."""
    from conveyor.capability import seams

    if task not in TEMPLATES:
        raise ConfigError(
            f"unknown template {task!r}; templates: {', '.join(TEMPLATES)}", field="template"
        )
    backends = "".join(
        f"  # {seam.description[:1].upper()}{seam.description[1:]}: "
        f"{' | '.join(f'{s}://...' for s in seam.schemes())}\n"
        f"  {seam.name}: {seam.default}\n"
        for seam in seams().values()
        if seam.default
    )
    quality = {key: f"{key}: {value}" for key, value in TEMPLATES[task].items()}
    return SPEC_TEMPLATE.format(name=name, backends=backends, task=task, **quality)
