"""Train a model from its spec, judge it on a hold-out it never saw, and register it.

This is what ``conveyor train NAME`` and continuous training run::

    models:
      fraud:
        train: model:fit                 # fit(X, y, *, seed, **params) -> fitted model
        prepare: model:add_features      # optional: dataset rows -> frame with features
        dataset: transactions            # its latest version trains the model
        features: [log_amount, hour, is_foreign]
        target: is_fraud
        holdout: {by: time, column: timestamp, fraction: 0.2}
        groups: is_foreign               # for the fairness gate
        gates:
          - metric_floor: {}             # floor from slos.quality
          - champion_comparison: {metric: roc_auc, min_absolute_change: 0.0}
          - fairness: {metric: recall, max_equalized_odds_difference: 0.2}
          - latency_budget: {}           # slos.latency_p95_ms
          - regression_suite: {dataset: fraud-suite}
          - data_checks: {}
        auto_promote: false

One candidate, step by step:

1. a training run starts (params, seed, git state, environment);
2. the dataset's latest version is read (lineage recorded) and prepared; with
   ``feature_service``, its rows are an entity/label frame and the service's
   features are joined to them point-in-time first (the service's applied
   version and the data set versions of its views join the lineage);
3. the hold-out rows are set aside *before* training sees anything;
4. ``train`` fits the model (or, with ``retrain.incremental``, the champion
   continues with ``partial_fit`` on the rows it has not seen);
5. the model is registered with its signature, run, dataset version,
   parameters and hold-out metric (parent: the champion when incremental);
6. every gate runs on the hold-out against the champion; the report is
   saved under ``model:NAME`` / version ``N``;
7. a candidate that passed becomes ``challenger``, and ``champion`` too when
   ``auto_promote`` is set. A failed one stays registered, with its report
   saying why, and moves no alias.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor._names import NameTable
from conveyor.data.events import DATA_READ
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.training.events import MODEL_CANDIDATE, MODEL_VALIDATED
from conveyor.user_code import load_entry_point

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from conveyor.checks.gates import Gate
    from conveyor.checks.result import Report
    from conveyor.data.versions import DatasetVersion
    from conveyor.project import Project
    from conveyor.registry.promotion import Promotion
    from conveyor.registry.registry import Registry
    from conveyor.registry.versions import AliasMove, ModelVersion
    from conveyor.training.settings import HoldoutSpec, ModelSpec

__all__ = [
    "GATES",
    "Candidate",
    "GateBuilder",
    "Prepared",
    "build_gates",
    "check_params",
    "evaluate_version",
    "holdout_mask",
    "load_entry_point",
    "prepare",
    "train_candidate",
]


@dataclass(frozen=True)
class Prepared:
    """A dataset version turned into training and hold-out sets."""

    version: DatasetVersion
    frame: pd.DataFrame
    holdout: npt.NDArray[np.bool_]
    new_rows: npt.NDArray[np.bool_]  # rows from parts the champion's data did not have
    features: list[str]
    target: str
    #: The feature service the frame was joined from, as the registry records it (None:
    #: the data set's own columns), and the data set versions its views read.
    feature_service: dict[str, Any] | None = None
    feature_datasets: tuple[DatasetVersion, ...] = ()

    @property
    def dataset_versions(self) -> list[DatasetVersion]:
        """Every data set version the frame was built from: the model's, then the views'."""
        found = {self.version.id: self.version}
        for version in self.feature_datasets:
            found.setdefault(version.id, version)
        return list(found.values())

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The registry's lineage beyond data sets (the feature service, when used)."""
        return [self.feature_service] if self.feature_service else []

    @property
    def X_train(self) -> pd.DataFrame:
        return self.frame.loc[~self.holdout, self.features]

    @property
    def y_train(self) -> pd.Series[Any]:
        return self.frame.loc[~self.holdout, self.target]

    @property
    def X_holdout(self) -> pd.DataFrame:
        return self.frame.loc[self.holdout, self.features]

    @property
    def y_holdout(self) -> pd.Series[Any]:
        return self.frame.loc[self.holdout, self.target]


@dataclass(frozen=True)
class Candidate:
    """What one training produced: the version, its gate report, and the aliases it moved."""

    version: ModelVersion
    report: Report
    run_id: str
    incremental: bool
    challenger: AliasMove | None
    promotion: Promotion | None

    @property
    def passed(self) -> bool:
        return self.report.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version.ref,
            "version_id": self.version.id,
            "run": self.run_id,
            "incremental": self.incremental,
            "report": self.report.id,
            "verdict": self.report.verdict,
            "failed": [c.name for c in self.report.failures],
            "metrics": self.version.metrics,
            "challenger": self.challenger is not None,
            "champion": self.promotion is not None,
        }


# -- entry points ----------------------------------------------------------------


# -- data --------------------------------------------------------------------------


def holdout_mask(frame: pd.DataFrame, spec: HoldoutSpec) -> npt.NDArray[np.bool_]:
    """True for the rows training never sees (see :class:`conveyor.config.HoldoutSpec`)."""
    import hashlib

    import numpy as np

    n = len(frame)
    if spec.column is not None and spec.column not in frame.columns:
        raise InvalidInputError(
            f"holdout column {spec.column!r} is not in the data (columns: "
            f"{', '.join(map(str, frame.columns))})",
            field="holdout.column",
        )
    if spec.by == "random":
        rng = np.random.default_rng(spec.seed)
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=max(1, round(n * spec.fraction)), replace=False)] = True
        return mask
    assert spec.column is not None
    column = frame[spec.column]
    if spec.by == "time":
        cutoff = column.quantile(1 - spec.fraction, interpolation="higher")
        return (column >= cutoff).to_numpy() if n else np.zeros(0, dtype=bool)
    # hash: an entity lands on the same side in every version and every run.
    bound = int(spec.fraction * 2**64)
    digests = [
        int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "big")
        for v in column.tolist()
    ]
    return np.fromiter((d < bound for d in digests), dtype=bool, count=n)


def prepare(
    project: Project,
    spec: ModelSpec,
    *,
    seen_parts: frozenset[str] = frozenset(),
    actor: str | None = None,
) -> Prepared:
    """The latest version of the model's dataset, prepared and split."""
    import numpy as np
    import pyarrow as pa

    repo = project.data.versions
    version = repo.latest(spec.dataset)
    if version is None:
        raise NotFoundError(
            f"data set {spec.dataset!r} has no version yet: ingest it first "
            f"(conveyor data ingest {spec.dataset})",
            dataset=spec.dataset,
        )
    tables, new = [], []
    for part in repo.parts(version):
        table = repo.read_part(part)
        tables.append(table)
        new.append(np.full(table.num_rows, part.digest not in seen_parts))
    project.events.record(
        DATA_READ,
        subject=version.dataset,
        subject_version=str(version.number),
        actor=actor,
        payload={"version_id": version.id, "rows": version.row_count, "purpose": "training"},
    )
    table = pa.concat_tables(tables) if tables else pa.table({})
    service: dict[str, Any] | None = None
    service_datasets: tuple[DatasetVersion, ...] = ()
    if spec.feature_service is not None:
        # Through the features capability's service (training does not import it).
        joined = project.features.training_join(
            table, spec.feature_service, entity_time=spec.entity_time, actor=actor or "training"
        )
        table, service, service_datasets = joined.table, joined.input, tuple(joined.datasets)
    frame = table.to_pandas()
    new_rows = np.concatenate(new) if new else np.zeros(0, dtype=bool)
    if spec.prepare:
        from conveyor.training.errors import call_user

        prepare_fn = load_entry_point(spec.prepare, project.spec.root, field="prepare")
        shaped = call_user("prepare", spec.prepare, prepare_fn, frame)
        if len(shaped) != len(frame):
            new_rows = np.ones(len(shaped), dtype=bool) if not seen_parts else new_rows
            if seen_parts:
                raise InvalidInputError(
                    f"prepare ({spec.prepare}) returned {len(shaped)} rows for {len(frame)}: "
                    "incremental training needs it to keep every row, in order",
                    field="prepare",
                )
        frame = shaped.reset_index(drop=True)
    features = list(spec.features) or (list(service["features"]) if service else [])
    missing = [c for c in [*features, spec.target] if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"model data lacks column(s) {', '.join(missing)} (have: "
            f"{', '.join(map(str, frame.columns))})",
            field="features" if missing[0] != spec.target else "target",
        )
    mask = holdout_mask(frame, spec.holdout)
    if mask.all() or not mask.any():
        raise InvalidInputError(
            f"the hold-out split of {version.ref} leaves {int((~mask).sum())} training and "
            f"{int(mask.sum())} hold-out rows; both need rows",
            field="holdout",
        )
    return Prepared(
        version, frame, mask, new_rows, features, spec.target, service, service_datasets
    )


# -- gates -------------------------------------------------------------------------

#: What a gate's entry in the spec becomes: ``builder(options, project=, spec=, prepared=)``.
GateBuilder = Callable[..., "Gate"]


def _check_builder(name: str, builder: GateBuilder) -> None:
    if not callable(builder):
        raise InvalidInputError(
            f"gate {name!r}: a gate builder is a callable taking (options, *, project, spec, "
            f"prepared), got {builder!r}",
            field="builder",
        )


def _gate_metric_floor(options: dict[str, Any], **_: Any) -> Gate:
    """The candidate's hold-out metric is on the right side of a floor: slos.quality's, or
    the one the options give.

    Options: ``metric`` and ``floor`` (together, or neither: slos.quality), ``direction``
    (maximize | minimize; default: the metric's own).
    """
    from conveyor.training.gates import metric_floor

    if "metric" in options:
        options = {"metric_name": options.pop("metric"), **options}
    return metric_floor(**options)


def _gate_champion(options: dict[str, Any], **_: Any) -> Gate:
    """The candidate beats the champion on the hold-out by a margin (MLflow's
    MetricThreshold); with no champion yet it fails, or warns (``no_champion: warn``).

    Options: ``metric`` (required); at least one of ``threshold`` (an absolute value to
    reach), ``min_absolute_change`` (> 0), ``min_relative_change`` (0..1);
    ``greater_is_better`` (default: the metric's own), ``no_champion`` (fail | warn),
    ``require_significant`` (the paired bootstrap interval of the difference is on the
    better side of zero), ``confidence`` (0.95), ``n_resamples`` (1000), ``seed`` (0).
    """
    from conveyor.training.gates import champion_comparison

    options = dict(options)
    metric_name = options.pop("metric", None)
    if metric_name is None:
        raise InvalidInputError("champion_comparison needs a metric", field="metric")
    return champion_comparison(metric_name, **options)


def _gate_fairness(options: dict[str, Any], *, spec: ModelSpec, **_: Any) -> Gate:
    """A binary classifier treats the groups of the model's ``groups`` column alike:
    demographic parity, equalized odds and the spread of a metric across groups.

    Options: ``metric`` (accuracy), ``groups`` (a feature column; default the model's
    ``groups``), ``min_group_size`` (30), ``max_demographic_parity_difference`` (0.1),
    ``max_equalized_odds_difference`` (0.1), ``max_metric_gap`` (none: reported only).
    """
    from conveyor.training.gates import fairness

    options = dict(options)
    metric_name = options.pop("metric", "accuracy")
    return fairness(metric_name, **options)


def _gate_latency(options: dict[str, Any], **_: Any) -> Gate:
    """Single-row predictions (one thread, as a server runs them) meet a p95 budget.

    Options: ``p95_ms`` (default slos.latency_p95_ms), ``n_rows`` timed (200, at least
    20), ``warmup`` calls not timed (10), ``seed`` (0).
    """
    from conveyor.training.gates import latency_budget

    return latency_budget(**options)


def _gate_suite(options: dict[str, Any], *, project: Project, **_: Any) -> Gate:
    """Curated examples (a data set's latest version) give the expected outputs:
    numbers within a tolerance, anything else equal.

    Options: ``dataset`` (required: the data set of examples), ``expected`` (its column of
    expected outputs, default expected), ``tolerance`` (its column of tolerances per row,
    default tolerance), ``default_tolerance`` (0.0), ``features`` (default: its other columns),
    ``row_names`` (a column naming failing rows), ``max_listed`` (10).
    """
    from conveyor.training.gates import regression_suite

    options = dict(options)
    dataset = options.pop("dataset", None)
    if not dataset:
        raise InvalidInputError(
            "regression_suite needs dataset: the data set holding the curated examples",
            field="dataset",
        )
    examples = project.data.versions.read(
        project.data.versions.resolve(dataset), kind="pandas", purpose="regression suite"
    )
    return regression_suite(examples, **options)


def _gate_data(options: dict[str, Any], *, project: Project, prepared: Prepared, **_: Any) -> Gate:
    """The training data's validation checks (the report of the ingest that made the
    data set version) passed; each is reported as ``data.<check>``.
    """
    from conveyor.checks.persist import get_report
    from conveyor.training.gates import data_checks

    report_id = prepared.version.source.get("validation_report")
    if not report_id:
        raise InvalidInputError(
            f"data_checks: {prepared.version.ref} has no validation report (it was not "
            "ingested through conveyor data ingest)",
            field="data_checks",
        )
    return data_checks(get_report(project.store, report_id))


_BUILT_IN_GATES: dict[str, GateBuilder] = {
    "metric_floor": _gate_metric_floor,
    "champion_comparison": _gate_champion,
    "fairness": _gate_fairness,
    "latency_budget": _gate_latency,
    "regression_suite": _gate_suite,
    "data_checks": _gate_data,
}
#: Gate name in the spec -> builder(options, project=, spec=, prepared=), which checks the
#: options and returns the gate. ``GATES.register("name", builder)`` adds a gate a model
#: spec can then name, as the built-in ones.
GATES: NameTable[GateBuilder] = NameTable("gate", _BUILT_IN_GATES, check=_check_builder)


def build_gates(project: Project, name: str, spec: ModelSpec, prepared: Prepared) -> list[Gate]:
    """The spec's gates, each built (and its options checked) before anything trains."""
    gates = []
    for i, entry in enumerate(spec.gates):
        where = f"models.{name}.gates[{i}]"
        if len(entry) != 1:
            raise InvalidInputError(
                f"{project.spec.where(where)}: a gate is one {{name: {{options}}}}, got "
                f"{sorted(entry)}",
                field=where,
            )
        ((gate_name, options),) = entry.items()
        builder = GATES.require(gate_name, where=project.spec.where(where), field=where)
        try:
            gates.append(
                builder(dict(options or {}), project=project, spec=spec, prepared=prepared)
            )
        except TypeError as exc:
            raise InvalidInputError(
                f"{project.spec.where(where)}: {gate_name}: {exc}", field=where
            ) from exc
    return gates


def _context(
    project: Project, spec: ModelSpec, prepared: Prepared, model: Any, champion: Any
) -> Any:
    from conveyor.training.gates import GateContext

    groups = None
    if spec.groups is not None:
        if spec.groups not in prepared.frame.columns:
            raise InvalidInputError(
                f"groups column {spec.groups!r} is not in the data", field="groups"
            )
        groups = prepared.frame.loc[prepared.holdout, spec.groups].astype(str).to_numpy()
    return GateContext(
        model,
        prepared.X_holdout,
        prepared.y_holdout,
        champion=champion,
        groups=groups,
        slos=project.spec.slos,
    )


# -- the flow ----------------------------------------------------------------------


def train_candidate(
    project: Project,
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    actor: str | None = None,
    incremental: bool | None = None,
    auto_promote: bool | None = None,
    trigger: str = "manual",
    spec: ModelSpec | None = None,
) -> Candidate:
    """Train ``name`` from its spec, register it, run its gates, move its aliases.

    ``params`` override the spec's; ``incremental`` and ``auto_promote``
    default to the spec's ``retrain.incremental`` and ``auto_promote``.
    ``spec`` replaces ``models.NAME`` of the project's spec (a retraining
    pipeline trains the spec it was built from).
    """
    from conveyor.registry.promotion import gate_subject
    from conveyor.training.errors import TrainingFailedError, call_user, in_run
    from conveyor.training.runs import run
    from conveyor.training.settings import model_spec

    spec = model_spec(project.spec, name) if spec is None else spec
    registry = project.registry
    merged = {**spec.params, **(params or {})}
    field = f"models.{name}.train"
    train_fn = load_entry_point(spec.train, project.spec.root, field=field)
    champion = _champion(registry, name)
    incremental = spec.retrain.incremental if incremental is None else incremental
    seen: frozenset[str] = frozenset()
    if incremental:
        if champion is None:
            incremental = False  # nothing to continue: the first model trains from scratch
        else:
            seen = _parts_of(project, champion[0])
    if not incremental:
        check_params(train_fn, spec.train, spec.params, params or {}, model=name)
    run_id: str | None = None
    try:
        with run(
            name,
            kind="train",
            params=merged,
            seed=seed,
            project=project,
            tags={"trigger": trigger},
        ) as training:
            run_id = training.id
            prepared = prepare(project, spec, seen_parts=seen, actor=actor)
            training.use_dataset(prepared.version)
            gates = build_gates(project, name, spec, prepared)
            champion_model = champion[1] if champion else None
            champion_judged = _judged(champion_model, spec, prepared)
            if incremental:
                model = _continue(champion_model, prepared)
            else:
                model = call_user(
                    field,
                    spec.train,
                    train_fn,
                    prepared.X_train,
                    prepared.y_train,
                    seed=training.seed,
                    **merged,
                )
                if model is None:
                    raise TrainingFailedError(
                        f"{field} ({spec.train}) returned None, not a fitted model: it must "
                        "end with `return model`",
                        field=field,
                        entry_point=spec.train,
                        returned="None",
                        frames=[],
                    )
            judged = _judged(model, spec, prepared)
            metrics = _holdout_metrics(project, judged, prepared)
            training.log_metrics(metrics)
            version = registry.register(
                name,
                model,
                signature_from=prepared.X_train.head(1000),
                params=merged,
                metrics=metrics,
                run_id=training.id,
                parent=champion[0] if incremental and champion else None,
                dataset_versions=prepared.dataset_versions,
                inputs=prepared.inputs,
                tags={"trigger": trigger, "incremental": str(bool(incremental)).lower()},
                actor=actor,
            )
            report = training.validate(
                gates,
                _context(project, spec, prepared, judged, champion_judged),
                subject=gate_subject(name),
                subject_version=str(version.number),
            )
    except TrainingFailedError as exc:
        if run_id is None:
            raise
        raise in_run(exc, run_id, name) from exc.__cause__
    assert run_id is not None
    challenger = promotion = None
    if report.passed:
        challenger = registry.set_alias(
            name,
            "challenger",
            version,
            actor=actor,
            reason=f"trained by run {run_id} ({trigger}); gates {report.verdict}",
        )
        if spec.auto_promote if auto_promote is None else auto_promote:
            promotion = registry.promote(
                name, version, actor=actor, reason=f"auto-promoted: gates {report.verdict}"
            )
    candidate = Candidate(version, report, run_id, bool(incremental), challenger, promotion)
    project.events.record(
        MODEL_CANDIDATE,
        subject=name,
        subject_version=str(version.number),
        actor=actor,
        payload={**candidate.to_dict(), "trigger": trigger},
    )
    return candidate


def evaluate_version(project: Project, ref: str, *, actor: str | None = None) -> Report:
    """Run the spec's gates again on ``ref`` (``name@N``) against today's champion and data.

    The report is saved like a training's, so a version can be re-judged
    (and then promoted) without retraining.
    """
    from conveyor.checks.gates import run_gates
    from conveyor.checks.persist import save_report
    from conveyor.registry.promotion import GATE_REPORT_KIND, gate_subject
    from conveyor.training.settings import model_spec

    registry = project.registry
    version = registry.resolve(ref)
    spec = model_spec(project.spec, version.model)
    prepared = prepare(project, spec, actor=actor)
    gates = build_gates(project, version.model, spec, prepared)
    champion = _champion(registry, version.model)
    champion_model = champion[1] if champion and champion[0].id != version.id else None
    model = _gate_model(registry, version)
    report = run_gates(
        gate_subject(version.model),
        gates,
        _context(
            project,
            spec,
            prepared,
            _judged(model, spec, prepared),
            _judged(champion_model, spec, prepared),
        ),
        kind=GATE_REPORT_KIND,
        subject_version=str(version.number),
    )
    save_report(project.store, report, run_id=version.run_id)
    project.events.record(
        MODEL_VALIDATED,
        subject=gate_subject(version.model),
        subject_version=str(version.number),
        actor=actor,
        payload={
            "report": report.id,
            "verdict": report.verdict,
            "failed": [c.name for c in report.failures],
            "dataset": prepared.version.ref,
        },
    )
    return report


def _champion(registry: Registry, name: str) -> tuple[ModelVersion, Any] | None:
    try:
        version = registry.get(name, "champion")
    except NotFoundError:
        return None
    return version, _gate_model(registry, version)


def _gate_model(registry: Registry, version: ModelVersion) -> Any:
    """The version's model as the gates call it (``predict``, ``predict_proba``).

    An ONNX version loads as an onnxruntime session; the gates get the
    :class:`~conveyor.training.optimize.onnx_model.OnnxModel` around the same
    verified bytes instead, which predicts like the model it was exported from.
    """
    if version.flavor != "onnx":
        return registry.load(version).model  # sha256 verified, library versions compared
    from conveyor.registry.flavors import check_libraries
    from conveyor.training.optimize.onnx_model import OnnxModel

    check_libraries(version.libraries, f"model {version.ref}")
    return OnnxModel(registry.artifacts.get(version.artifact_digest))  # read once, verified


def _judged(model: Any, spec: ModelSpec, prepared: Prepared) -> Any:
    """``model`` as the gates call it: a PyTorch module gets ``predict``/``predict_proba``.

    The module itself is what is registered; :class:`TorchPredictor` reads its
    outputs as ``spec.task`` says (see :mod:`conveyor.training.optimize.torch_model`).
    """
    from conveyor.training.optimize.torch_model import TorchPredictor, is_torch_module

    if model is None or not is_torch_module(model):
        return model

    return TorchPredictor.of(
        model, prepared.X_holdout.head(1), spec.task, columns=prepared.features
    )


def _parts_of(project: Project, version: ModelVersion) -> frozenset[str]:
    repo = project.data.versions
    digests: set[str] = set()
    for dataset_version_id in version.dataset_version_ids:
        try:
            found = repo.by_id(dataset_version_id)
        except NotFoundError:
            continue
        digests.update(p.digest for p in repo.parts(found))
    return frozenset(digests)


def _continue(champion: Any, prepared: Prepared) -> Any:
    """The champion, copied, after ``partial_fit`` on the training rows it has not seen."""
    if not hasattr(champion, "partial_fit"):
        raise InvalidInputError(
            f"incremental training needs an estimator with partial_fit; the champion is a "
            f"{type(champion).__name__}: set retrain.incremental to false",
            field="retrain.incremental",
        )
    from conveyor.training.errors import call_user

    model = copy.deepcopy(champion)
    fresh = prepared.new_rows & ~prepared.holdout
    if fresh.any():
        rows = prepared.frame.loc[fresh]
        call_user(
            "retrain.incremental",
            f"{type(champion).__name__}.partial_fit",
            model.partial_fit,
            rows[prepared.features],
            rows[prepared.target],
        )
    return model


def check_params(
    train_fn: Callable[..., Any],
    ref: str,
    spec_params: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    model: str,
) -> None:
    """Refuse, before anything runs, a parameter ``train_fn`` does not take (``--param`` or
    ``models.NAME.params``), with the closest name it does take; and a ``train_fn`` that
    cannot be called as ``fit(X, y, *, seed, **params)``. A function with ``**kwargs``
    takes any parameter."""
    import difflib
    import inspect

    try:
        signature = inspect.signature(train_fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    takes_rows = len(positional) >= 2 or any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters
    )
    keywords = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p not in positional[:2]
    ]
    field = f"models.{model}.train"
    if not takes_rows or "seed" not in keywords:
        raise InvalidInputError(
            f"{field}: {ref} is called as fn(X, y, *, seed, **params); its signature is "
            f"{train_fn.__name__}{signature}",
            field=field,
        )
    accepted = [k for k in keywords if k != "seed"]
    for source, given in (("--param", overrides), (f"models.{model}.params", spec_params)):
        for name in given:
            if name in accepted or (source != "--param" and name in overrides):
                continue
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            takes = ", ".join(accepted) if accepted else "no parameters besides seed"
            shown = f"--param {name}" if source == "--param" else f"{source}.{name}"
            raise InvalidInputError(
                f"{shown}: {ref} has no parameter {name!r}{hint} (it takes: {takes})",
                field="param" if source == "--param" else source,
                param=name,
                **({"suggestion": close[0]} if close else {}),
            )


def _holdout_metrics(project: Project, model: Any, prepared: Prepared) -> dict[str, float]:
    """The quality SLO's metric (or the task's default) on the hold-out: the version's headline."""
    from conveyor.training.gates import GateContext, metric
    from conveyor.training.optimize.predictors import has_proba, is_classifier
    from conveyor.training.settings import default_metric

    quality = project.spec.slos.quality
    if quality:
        name = quality.metric
    elif is_classifier(model):
        name = default_metric("classification", scores=has_proba(model))
    else:
        name = default_metric("regression")
    chosen = metric(name)
    ctx = GateContext(model, prepared.X_holdout, prepared.y_holdout)
    values = ctx.predictions("model", needs=chosen.needs)
    return {
        f"holdout_{chosen.name}": float(chosen(ctx.y(), values)),
        "train_rows": float((~prepared.holdout).sum()),
        "holdout_rows": float(prepared.holdout.sum()),
    }
