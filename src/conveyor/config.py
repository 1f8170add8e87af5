"""The project spec: ``conveyor.yaml`` as pydantic models, with env overrides.

A project is a folder holding ``conveyor.yaml`` (the spec, kept in git) and
``.conveyor/`` (local state: the embedded databases and artifacts, ignored by
git). :func:`find_project_root` walks up from the current directory to find
it, as git finds ``.git``.

The spec is loaded once, at the entry point, and passed on explicitly; nothing
reads it at import. Environment variables override the backend URLs, so the
same spec runs on a laptop and against real services::

    CONVEYOR_STORE=postgresql://conveyor@db:5432/conveyor conveyor doctor

A malformed spec raises :class:`~conveyor.errors.ConfigError` naming the file,
the line, the field and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from conveyor.backends import SEAMS, BackendURL
from conveyor.errors import ConfigError, ConveyorError, NotFoundError, ProjectNotFoundError

__all__ = [
    "ENV_OVERRIDES",
    "SPEC_FILE",
    "STATE_DIR",
    "Backends",
    "DatasetSpec",
    "EncryptionSpec",
    "ProjectSpec",
    "QualitySLO",
    "SLOs",
    "find_project_root",
    "load_spec",
    "render_template",
]

SPEC_FILE = "conveyor.yaml"
STATE_DIR = ".conveyor"
#: Points at a project folder, bypassing the walk up from the current directory.
PROJECT_DIR_ENV = "CONVEYOR_PROJECT_DIR"
#: Environment variable -> the spec field it overrides.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CONVEYOR_PROJECT": ("project",),
    **{f"CONVEYOR_{seam.upper()}": ("backends", seam) for seam in SEAMS},
}


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


class Backends(BaseModel):
    """One URL per seam. Relative ``sqlite:///`` and ``file://`` paths are
    relative to the project folder, not to the current directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: URL = Field(
        default=BackendURL.parse("sqlite:///.conveyor/conveyor.db"),
        description="Metadata store: sqlite:///path | postgresql://user@host:port/db",
    )
    artifacts: URL = Field(
        default=BackendURL.parse("file://.conveyor/artifacts"),
        description="Artifact store: file://path | memory://name | s3://bucket/prefix",
    )
    events: URL = Field(
        default=BackendURL.parse("sqlite:///.conveyor/events.db"),
        description="Event log: sqlite:///path | postgresql://user@host:port/db",
    )
    online: URL = Field(
        default=BackendURL.parse("sqlite:///.conveyor/online.db"),
        description="Online feature store: sqlite:///path | memory:// | redis://host:port/db",
    )
    cache: URL = Field(
        default=BackendURL.parse("memory://"),
        description="Prediction cache and rate limits: memory:// | redis://host:port/db",
    )

    @field_validator("*")
    @classmethod
    def _known_scheme(cls, url: BackendURL, info: Any) -> BackendURL:
        seam = SEAMS[info.field_name]
        try:
            seam.spec(url)
        except ConveyorError as exc:
            raise ValueError(exc.message) from None
        return url


class DatasetSpec(BaseModel):
    """A data set: where it comes from, what it must satisfy, what is sensitive.

    ``source`` and ``expectations`` are checked by the data layer when used
    (:func:`conveyor.data.sources.source_from_spec`,
    :func:`conveyor.data.validation.parse_expectations`), with errors naming
    ``datasets.<name>.source...``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What the data set holds.")
    source: dict[str, Any] | None = Field(
        None, description="Where batches come from: {kind: csv|parquet|sql|http, ...}."
    )
    expectations: list[dict[str, Any]] = Field(
        default_factory=list, description="Checks every batch must pass: [{kind: ..., ...}]."
    )
    on_failure: Literal["fail", "quarantine", "warn"] = Field(
        "quarantine",
        description="fail: reject the batch; quarantine: set failing rows aside and go on; "
        "warn: keep everything and report.",
    )
    sensitive: list[str] = Field(
        default_factory=list,
        description="Columns encrypted at rest (snapshots, quarantine, events) and masked.",
    )
    subject_keys: list[str] = Field(
        default_factory=list,
        description="Columns identifying a data subject, for `conveyor data forget`.",
    )


class EncryptionSpec(BaseModel):
    """Where the key for sensitive columns comes from (never the key itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_env: str = Field(
        "CONVEYOR_DATA_KEY",
        description="Environment variable holding the keyring (see docs/data.md).",
    )
    key_file: str | None = Field(
        None, description="A file holding the keyring, relative to the project folder."
    )


class HoldoutSpec(BaseModel):
    """How the rows training never sees are chosen (the gates judge on them).

    - ``time``: the latest ``fraction`` of rows by ``column`` (no look-ahead);
    - ``hash``: rows whose ``column`` value hashes into ``fraction`` (an entity
      such as a customer stays on one side in every version);
    - ``random``: a seeded random ``fraction`` of rows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["time", "hash", "random"] = Field("random", description="time | hash | random.")
    column: str | None = Field(None, description="The time or key column (time and hash).")
    fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out.")
    seed: int = Field(0, ge=0, description="Seed of the random split.")

    @model_validator(mode="after")
    def _column_when_needed(self) -> HoldoutSpec:
        if self.by != "random" and not self.column:
            raise ValueError(f"a holdout by {self.by} needs a column")
        return self


class RetrainSpec(BaseModel):
    """When a model retrains by itself (``conveyor pipeline schedule`` runs it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(None, description="Cron expression, e.g. '0 3 * * *'.")
    on_events: list[str] = Field(
        default_factory=list,
        description="Event kinds that trigger a retraining, e.g. drift.detected, alert.fired.",
    )
    on_new_data: bool = Field(False, description="Retrain when the dataset gets a new version.")
    incremental: bool = Field(
        False,
        description="Continue the champion with partial_fit on the rows it has not seen "
        "(estimators with partial_fit only) instead of training from scratch.",
    )


class ModelSpec(BaseModel):
    """A trainable model: entry point, data, hold-out, gates and retraining.

    ``train`` is ``module:function`` (importable from the project folder),
    called as ``function(X, y, *, seed, **params)`` and returning a fitted
    model; ``prepare`` (optional) turns the dataset's rows into the frame
    ``features`` and ``target`` are read from, the same for training and the
    hold-out. ``gates`` is a list of ``{name: {options}}`` (see
    :mod:`conveyor.training.flow`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: str = Field(description="Training entry point, module:function.", min_length=3)
    prepare: str | None = Field(None, description="Optional frame preparation, module:function.")
    dataset: str = Field(description="The data set whose latest version trains the model.")
    features: list[str] = Field(min_length=1, description="Input columns, in order.")
    target: str = Field(description="The label column.")
    task: Literal["classification", "regression"] | None = Field(
        None,
        description="How a PyTorch model's outputs read (one output column is a regression "
        "unless this says classification); scikit-learn models know their own.",
    )
    holdout: HoldoutSpec = Field(default_factory=HoldoutSpec)
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to train().")
    groups: str | None = Field(None, description="Column of group labels for the fairness gate.")
    gates: list[dict[str, dict[str, Any]]] = Field(
        default_factory=list, description="Gates run on every candidate: [{name: {options}}]."
    )
    auto_promote: bool = Field(
        False, description="Make a candidate champion by itself when its gates pass."
    )
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)

    @field_validator("train", "prepare")
    @classmethod
    def _entry_point(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", value):
            raise ValueError(f"expected module:function, got {value!r}")
        return value


class BatchingSpec(BaseModel):
    """Dynamic batching per served version (``max_batch_size: 1`` turns it off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, le=4096, description="Rows per model call, at most.")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait for a batch to fill.")
    max_queue: int = Field(
        1024, ge=1, description="Queued rows per version before 503 + Retry-After."
    )


class ServingSpec(BaseModel):
    """``conveyor serve``: where it listens, who may call it, and how it batches and caches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")
    auth: Literal["required", "disabled"] = Field(
        "required",
        description="required: every request needs an API key; disabled: open until the "
        "first key is created (local development).",
    )
    rate_limiter: str = Field(
        "memory://", description="Token buckets: memory:// (per worker) or redis://host:port/db."
    )
    max_body_bytes: int = Field(8 << 20, ge=1024, description="Larger request bodies get 413.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cache: bool = Field(True, description="Cache predictions in the cache backend.")
    cache_ttl_s: float = Field(300, gt=0, description="Seconds a cached prediction lives.")
    poll_interval_s: float = Field(
        0.5, gt=0, le=10, description="How often workers re-read the routes."
    )
    payload_sample_rate: float = Field(
        0.0, ge=0, le=1, description="Share of predictions whose inputs go into the event log."
    )
    ssl_certfile: str | None = Field(None, description="TLS certificate (PEM).")
    ssl_keyfile: str | None = Field(None, description="TLS private key (PEM).")


class ProjectSpec(BaseModel):
    """The whole of ``conveyor.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(
        description="Project name: letters, digits, '-', '_' and '.'.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    )
    backends: Backends = Field(default_factory=Backends)
    slos: SLOs = Field(default_factory=SLOs)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    encryption: EncryptionSpec = Field(default_factory=EncryptionSpec)
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
                return f"{self.root / SPEC_FILE}:{line}"
        return str(self.root / SPEC_FILE)

    def model(self, name: str) -> ModelSpec:
        """The named model's spec; NotFoundError listing the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(
                f"no model {name!r} under models: in {self.root / SPEC_FILE} (known: {known})",
                model=name,
            ) from None

    def dataset(self, name: str) -> DatasetSpec:
        """The named data set's spec; NotFoundError listing the known ones."""
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise NotFoundError(
                f"no data set {name!r} in {self.root / SPEC_FILE} (known: {known})", dataset=name
            ) from None

    def url(self, seam: str) -> BackendURL:
        """The seam's URL, with a relative embedded path made absolute under ``root``."""
        if seam not in SEAMS:
            raise ConfigError(f"unknown seam {seam!r}; seams: {', '.join(SEAMS)}", field=seam)
        url: BackendURL = getattr(self.backends, seam)
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
) -> ProjectSpec:
    """Load and validate the spec of the project at (or above) ``root``.

    ``env`` defaults to ``os.environ``; its ``CONVEYOR_*`` variables override
    the file. A project folder without ``conveyor.yaml`` gets the defaults,
    named after the folder.
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
    from_env: dict[tuple[str, ...], str] = {}
    for var, field_path in ENV_OVERRIDES.items():
        if env.get(var):
            node = data
            for key in field_path[:-1]:
                node = node.setdefault(key, {}) if isinstance(node.get(key), dict | None) else {}
            node[field_path[-1]] = env[var]
            from_env[field_path] = var
    data["root"] = folder
    try:
        spec = ProjectSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, lines, from_env), file=str(path)) from None
    spec._lines = {".".join(k): v for k, v in lines.items()}
    return spec


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
) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        if loc in from_env:
            where = f"${from_env[loc]}"
        else:
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
            where = f"{path}:{line}" if line else str(path)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field; expected one of: {', '.join(_fields_at(loc[:-1]))}"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif "input" in err and err["type"] not in ("value_error",):
            message += f" (got {err['input']!r})"
        problems.append(f"  {where}: {dotted}: {message}")
    return f"{path} is not a valid Conveyor spec:\n" + "\n".join(problems)


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    model: Any = ProjectSpec
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
# Conveyor project spec. Documented in docs/spec.md; `conveyor doctor` checks it.
project: {name}

# One URL per kind of state. Relative sqlite:/// and file:// paths are relative
# to this folder. Environment variables override each one, e.g.
#   CONVEYOR_STORE=postgresql://conveyor@db.internal:5432/conveyor
backends:
  # Metadata store (runs, reports, registry, routes): sqlite:///... | postgresql://...
  store: sqlite:///.conveyor/conveyor.db
  # Artifacts, content-addressed by sha256: file://... | s3://bucket/prefix
  artifacts: file://.conveyor/artifacts
  # Append-only event log: sqlite:///... | postgresql://...
  events: sqlite:///.conveyor/events.db
  # Online feature store: sqlite:///... | memory:// | redis://host:6379/0
  online: sqlite:///.conveyor/online.db
  # Prediction cache and rate limits: memory:// | redis://host:6379/1
  cache: memory://

# Success criteria, read by validation gates, canary analysis and alerts.
slos:
  quality:
    metric: roc_auc        # the metric gates compare
    floor: 0.85            # worst acceptable value
    direction: maximize    # maximize (higher is better) | minimize
  latency_p95_ms: 50       # p95 prediction latency
  throughput_rps: 500      # sustained requests per second
  availability: 0.999      # fraction of successful requests
"""


def render_template(name: str) -> str:
    """The commented ``conveyor.yaml`` that ``conveyor init`` writes."""
    return SPEC_TEMPLATE.format(name=name)
