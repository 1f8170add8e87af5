"""Drift on live traffic: the sampled inputs and outputs of prediction events against a
model version's training reference (or a pinned window), and a label-free CBPE estimate.

::

    from conveyor.monitoring.drift_live import live_drift

    found = live_drift(project, "fraud", since=now - timedelta(days=1))
    found.detected, found.share, found.drifted, found.prediction_drift, found.cbpe
    found.report_id            # the saved drift report (conveyor.checks.persist)

What is compared
----------------
**Live inputs**: the ``input`` rows of the model's ``prediction`` events in ``[since,
until)``. The server keeps them for a share of requests (``serving.
payload_sample_rate``); they are read with DuckDB from the event log's columnar copy and
its newest events (:class:`~conveyor.monitoring.query.MonitorQuery`), typed by the
version's input signature, every arm and version together (the inputs do not depend on
who answered). At most ``max_rows`` rows (a seeded uniform sample beyond).

**The reference**: by default the analysed version's **training data**, the data set
version(s) its lineage records (``dataset_version_ids``, ``conveyor models show``), the
signature's input columns of it. Or a **pinned window** of live traffic
(``reference_window=(since, until)``, ``--reference-window``), for a model trained on
data the registry does not hold or to compare with "last week".

**The version**: ``version`` if given, else the holder of the ``champion`` alias, else
the version that answered the most sampled requests in the range.

**Prediction drift**: the version's own outputs on the sampled requests (one column per
output value: ``prediction`` for one value per row, ``prediction_0..k-1`` for ``k``
values such as class probabilities, ``NAME``/``NAME_i`` for a model answering a mapping)
against its **reference predictions**: with the training reference, the version run on
the reference rows when the check runs (the loaded model, the same code path as
serving, so nothing needs recording at training time and an old version can be checked
too); with a pinned window, the outputs the same version served in it.

Both use the data layer's statistics unchanged (:class:`~conveyor.data.drift.
DriftDetector`: its tests, Benjamini-Hochberg correction, effect-size floors and
minimum-effect test, the ``significant_below_floor`` status, missing-rate drift). The
report fails when the inputs drifted as a data set (the share of drifted columns reaches
``drift_share``), when an **important** input drifted (the version's most important
features, from the registry, as the data layer chooses them), or when a prediction
column drifted. A failed check that starts an incident (the model's previous check did
not fail for this version) records ``drift.detected``, so ``models.NAME.retrain.
on_events: [drift.detected]`` starts one retraining per incident, not one per check.

**CBPE** (:mod:`.cbpe`): for a classifier (a model with ``predict_proba``, or one
answering class probabilities), its accuracy, ROC AUC and F1 estimated on the live
inputs without labels, calibrated on the training reference with its labels (the
model spec's ``target`` column). With a pinned window there are no labels, so no CBPE.

Every run records ``monitoring.drift_checked`` (control: version, reference, rows,
share, verdict, prediction drift, CBPE estimate); the alert metrics ``drift.share``,
``prediction_drift`` and ``cbpe.accuracy`` read the latest of these in their range
(:func:`drift_metric`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.capability import EventKind
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.events.catalogue import NUMBER

if TYPE_CHECKING:
    from concurrent.futures import Future

    import pyarrow as pa

    from conveyor.checks.result import Report
    from conveyor.data.drift import DriftResult
    from conveyor.monitoring.cbpe import Estimate
    from conveyor.project import Project

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DRIFT_CHECKED",
    "LiveDrift",
    "drift_metric",
    "live_drift",
    "live_rows",
]

_log = logging.getLogger(__name__)

#: Live rows compared at most (a seeded uniform sample of the sampled requests beyond).
DEFAULT_MAX_ROWS = 1_000_000
#: Prefix of the columns that carry a prediction event's own fields in :func:`live_rows`.
_META = ("_version", "_version_id", "_arm", "_time_us", "_request_id", "_row")
_SEED = 20261204
#: The alert metrics a live drift check yields (see :func:`drift_metric`).
_METRICS = (
    "drift.share",
    "prediction_drift",
    "cbpe.accuracy",
    "cbpe.roc_auc",
    "cbpe.f1",
    "cbpe.accuracy_error",
)

DRIFT_CHECKED = EventKind(
    "monitoring.drift_checked",
    "control",
    {
        "version_id": str,
        "report_id": str,
        "verdict": str,
        "share": NUMBER,
        "drifted": list,
        "metrics": dict,
        "compared": dict,
        "alerted": bool,
    },
    "a model's sampled live traffic was compared for drift with its reference (training data "
    "or a pinned window): the report, the share of drifted inputs, the drifted columns, the "
    "alert metrics (drift.share, prediction_drift, cbpe.*) and whether it recorded "
    "drift.detected (alerted: a failed check after a passed one, or the version's first)",
    optional=frozenset({"alerted"}),
)


@dataclass(frozen=True, slots=True)
class LiveDrift:
    """One live drift check (see the module)."""

    model: str
    version: int
    version_id: str
    since: datetime
    until: datetime
    reference: dict[str, Any]
    current: dict[str, Any]
    inputs: DriftResult
    predictions: DriftResult | None
    cbpe: Estimate | None
    #: Once labels arrived (feedback by request id): the realized metrics on the labelled
    #: rows beside the estimate on the same rows, and the estimate's error.
    cbpe_realized: dict[str, Any] | None
    report: Report
    important: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: Seconds per phase: read (the live rows), reference, inputs, predictions, cbpe, record.
    phases: dict[str, float] = field(default_factory=dict)
    #: Once recorded: whether this check recorded ``drift.detected`` (a failed check whose
    #: previous one, for the same version, did not fail). None when not recorded.
    alerted: bool | None = None

    @property
    def detected(self) -> bool:
        """Whether the report failed (``drift.detected`` is recorded for it)."""
        return not self.report.passed

    @property
    def share(self) -> float:
        """Share of the compared input columns that drifted."""
        return float(self.inputs.share)

    @property
    def drifted(self) -> list[str]:
        """Drifted input columns, then drifted prediction columns (``prediction:NAME``)."""
        found = list(self.inputs.drifted_columns)
        if self.predictions is not None:
            found += [f"prediction:{c}" for c in self.predictions.drifted_columns]
        return found

    @property
    def prediction_drift(self) -> float | None:
        """The largest effect size among the prediction columns (KS D, Cramér's V, |log OR|),
        None when predictions were not compared."""
        if self.predictions is None:
            return None
        sizes = [c.effect_size for c in self.predictions.columns.values() if c.effect_size]
        return max(sizes) if sizes else 0.0

    @property
    def report_id(self) -> str:
        return self.report.id

    def metrics(self) -> dict[str, float | None]:
        """The alert metrics this check yields (``drift.share``, ``prediction_drift``,
        ``cbpe.accuracy``, ``cbpe.roc_auc``, ``cbpe.f1``, ``cbpe.accuracy_error``)."""
        return {
            "drift.share": self.share,
            "prediction_drift": self.prediction_drift,
            "cbpe.accuracy": None if self.cbpe is None else self.cbpe.accuracy,
            "cbpe.roc_auc": None if self.cbpe is None else self.cbpe.roc_auc,
            "cbpe.f1": None if self.cbpe is None else self.cbpe.f1,
            "cbpe.accuracy_error": (
                None if self.cbpe_realized is None else self.cbpe_realized["accuracy_error"]
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "version_id": self.version_id,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "detected": self.detected,
            "alerted": self.alerted,
            "verdict": self.report.verdict,
            "report_id": self.report.id,
            "share": round(self.share, 6),
            "drift_share": self.inputs.drift_share,
            "drifted": self.drifted,
            "important": self.important,
            "below_floor": list(self.inputs.below_floor_columns),
            "prediction_drift": _round(self.prediction_drift),
            "reference": self.reference,
            "current": self.current,
            "columns": {name: col.to_dict() for name, col in self.inputs.columns.items()},
            "predictions": (
                None
                if self.predictions is None
                else {n: c.to_dict() for n, c in self.predictions.columns.items()}
            ),
            "cbpe": None if self.cbpe is None else self.cbpe.to_dict(),
            "cbpe_realized": self.cbpe_realized,
            "metrics": {k: _round(v) for k, v in self.metrics().items()},
            "failures": [c.name for c in self.report.failures],
            "seconds": round(self.seconds, 4),
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            "notes": self.notes,
        }


def live_drift(
    project: Project,
    model: str,
    *,
    since: datetime,
    until: datetime | None = None,
    version: int | str | None = None,
    reference_window: tuple[datetime, datetime] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    drift_share: float = 0.5,
    important: Sequence[str] | None = None,
    cbpe: bool = True,
    record: bool = True,
    actor: str | None = None,
) -> LiveDrift:
    """Compare ``model``'s sampled live traffic in ``[since, until)`` with its reference.

    Raises NotFoundError for an unknown model or version (``reason``: ``no_model``),
    a version without a training reference (``no_reference``: give a
    ``reference_window``), no sampled inputs in the range (``no_sampled_inputs``: is
    ``serving.payload_sample_rate`` above 0?); InvalidInputError for bad arguments.
    With ``record``, the report is saved and ``monitoring.drift_checked`` (and, when it
    failed, ``drift.detected``) recorded, by ``actor``.
    """
    import numpy as np

    from conveyor.data.drift import DriftDetector

    started = time.perf_counter()
    until = until or datetime.now(UTC)
    _check_range(since, until, "since", "until")
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 10:
        raise InvalidInputError(
            f"max_rows must be an integer >= 10, got {max_rows!r}", field="max_rows"
        )
    if reference_window is not None:
        if not (isinstance(reference_window, Sequence) and len(reference_window) == 2):
            raise InvalidInputError(
                "reference_window must be (since, until)", field="reference_window"
            )
        _check_range(*reference_window, "reference_window", "reference_window")
    notes: list[str] = []
    phases: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - clock[0]
        clock[0] = now

    chosen = _version(project, model, version, since, until)
    columns, outputs = _signature(chosen)
    features = [name for name, _ in columns]

    loaded: Any = None

    def load() -> Any:
        nonlocal loaded
        if loaded is None:
            loaded = project.registry.load(chosen)
        return loaded

    # The training reference (read through the data layer, the version run on it, its
    # important features, CBPE calibrated on it) is prepared in a thread while DuckDB
    # reads the live rows: both spend most of their time in native code that releases
    # the GIL.
    prepared: Future[Any] | None = None
    pool = None
    if reference_window is None:
        from concurrent.futures import ThreadPoolExecutor

        expected = _prediction_names(outputs)

        def prepare() -> tuple[Any, ...]:
            inputs, described, known = _training_reference(project, model, chosen, features)
            predicted = None
            if expected:
                predicted = _prediction_table(load().predict(inputs), outputs, expected)
            picked = _important(project, chosen, features, important, load, notes)
            fitted = _cbpe_fit(load, inputs, known, notes, predicted) if cbpe else None
            return inputs, described, known, predicted, picked, fitted

        pool = ThreadPoolExecutor(1, thread_name_prefix="drift-reference")
        prepared = pool.submit(prepare)
    try:
        # Unordered (a sort of every row costs a third of the read): the statistics do
        # not depend on the order, and a sample below sorts first, so it is reproducible.
        live = live_rows(
            project,
            model,
            since=since,
            until=until,
            columns=columns,
            outputs=outputs,
            ordered=False,
        )
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True)
        raise
    if live.num_rows == 0:
        if pool is not None:
            pool.shutdown(wait=True)
        raise NotFoundError(
            f"no sampled inputs of model {model!r} between {since.isoformat()} and "
            f"{until.isoformat()}: the server keeps a request's inputs for "
            "serving.payload_sample_rate of them (0 by default)",
            model=model,
            reason="no_sampled_inputs",
        )
    requests = live.num_rows
    if live.num_rows > max_rows:
        live = live.sort_by([(c, "ascending") for c in ("_time_us", "_request_id", "_row")])
        pick = np.sort(np.random.default_rng(_SEED).choice(live.num_rows, max_rows, replace=False))
        live = live.take(pick)
        notes.append(f"{max_rows:,} of {requests:,} sampled rows compared (uniform sample)")
    ours = np.asarray(live.column("_version_id").to_numpy(zero_copy_only=False)) == chosen.id
    prediction_names = [n for n in live.column_names if n not in _META and n not in features]
    live_inputs = live.select(features)
    live_predictions = live.filter(ours).select(prediction_names) if prediction_names else None
    lap("read")

    labels: Any = None
    estimator: Any = None
    if prepared is not None and pool is not None:
        try:
            (
                reference_inputs,
                reference,
                labels,
                reference_predictions,
                chosen_important,
                estimator,
            ) = prepared.result()
        finally:
            pool.shutdown(wait=True)
        if live_predictions is None:
            reference_predictions = None
    else:
        assert reference_window is not None
        ref_since, ref_until = reference_window
        pinned = live_rows(
            project, model, since=ref_since, until=ref_until, columns=columns, outputs=outputs
        )
        if pinned.num_rows == 0:
            raise NotFoundError(
                f"no sampled inputs of model {model!r} in the reference window "
                f"{ref_since.isoformat()} to {ref_until.isoformat()}",
                model=model,
                reason="no_reference",
            )
        if pinned.num_rows > max_rows:
            pick = np.sort(
                np.random.default_rng(_SEED + 1).choice(pinned.num_rows, max_rows, replace=False)
            )
            pinned = pinned.take(pick)
        reference_inputs = pinned.select(features)
        mine = np.asarray(pinned.column("_version_id").to_numpy(zero_copy_only=False)) == chosen.id
        reference_predictions = None
        if live_predictions is not None:
            if mine.any():
                reference_predictions = pinned.filter(mine).select(prediction_names)
            else:
                notes.append(
                    f"version {chosen.number} served no sampled request in the reference "
                    "window: predictions not compared"
                )
        reference = {
            "kind": "window",
            "since": ref_since.isoformat(),
            "until": ref_until.isoformat(),
            "rows": reference_inputs.num_rows,
            "description": f"window:{ref_since.isoformat()}/{ref_until.isoformat()}",
        }
        chosen_important = _important(project, chosen, features, important, load, notes)
    if live_predictions is not None and live_predictions.num_rows == 0:
        notes.append(
            f"version {chosen.number} answered none of the sampled requests: predictions "
            "not compared"
        )
        live_predictions = None
    lap("reference")
    detector = DriftDetector(columns=features, important=chosen_important, drift_share=drift_share)
    inputs = detector.fit(reference_inputs).score(live_inputs)
    lap("inputs")
    predictions = None
    if live_predictions is not None and reference_predictions is not None:
        predictions = (
            DriftDetector(columns=prediction_names)
            .fit(reference_predictions)
            .score(live_predictions)
        )
    elif not outputs:
        notes.append("the version's signature records no outputs: predictions not compared")
    lap("predictions")

    estimate, realized = None, None
    if cbpe:
        if estimator is None and reference_window is not None:
            estimator = _cbpe_fit(load, reference_inputs, labels, notes)
        estimate, realized = _cbpe(
            project, model, estimator, load, live, chosen.id, features, since, until, notes
        )
    lap("cbpe")

    report = inputs.to_report(f"model:{model}")
    report.subject_version = str(chosen.number)
    if predictions is not None:
        _add_prediction_checks(report, predictions)
    current = {
        "kind": "live",
        "since": since.isoformat(),
        "until": until.isoformat(),
        "rows": live_inputs.num_rows,
        "sampled_rows": requests,
        "version_rows": None if live_predictions is None else live_predictions.num_rows,
        "description": f"live:{model}:{since.isoformat()}/{until.isoformat()}",
    }
    found = LiveDrift(
        model=model,
        version=chosen.number,
        version_id=chosen.id,
        since=since,
        until=until,
        reference=reference,
        current=current,
        inputs=inputs,
        predictions=predictions,
        cbpe=estimate,
        cbpe_realized=realized,
        report=report,
        important=list(chosen_important),
        seconds=time.perf_counter() - started,
        notes=notes,
        phases=phases,
    )
    if record:
        object.__setattr__(found, "alerted", _record(project, found, actor))
        lap("record")
        object.__setattr__(found, "seconds", time.perf_counter() - started)
    return found


def live_rows(
    project: Project,
    model: str,
    *,
    since: datetime,
    until: datetime,
    columns: Sequence[tuple[str, str]],
    outputs: Sequence[Mapping[str, Any]] = (),
    cache: bool = True,
    ordered: bool = True,
) -> pa.Table:
    """The sampled rows of ``model``'s prediction events in ``[since, until)``: one row per
    input row, the input ``columns`` (name, Arrow type) typed, the outputs as prediction
    columns (see the module), and ``_version``, ``_version_id``, ``_arm``, ``_time_us``,
    ``_request_id`` and ``_row`` (the row's position in its request). In time order,
    unless ``ordered`` is False (then in no particular order, and sooner).

    Each payload is parsed once (DuckDB's ``json_transform`` into the signature's types).
    With ``cache``, what one compacted file yields for this model and signature is kept
    as a Parquet file beside the copy (``cache/drift_live/``): a file of the copy never
    changes once listed, so a check that runs every hour over the last day parses only
    the files compacted since the last one, and the log's tail.
    """
    import duckdb

    from conveyor.events.filters import to_us
    from conveyor.monitoring.compaction import copy_root
    from conveyor.monitoring.query import MonitorQuery

    extract = _extraction(columns, outputs)
    since_us, until_us = to_us(since, "since"), to_us(until, "until")
    con = duckdb.connect()
    try:
        monitor = MonitorQuery(project)
        snapshot = monitor.relation(con, kinds=["prediction"], since=since, until=until)
        root = copy_root(project)
        folder = root / "cache" / "drift_live" / _digest(model, extract)
        sources, fresh = [], {}
        for name in snapshot.files:
            cached = folder / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".parquet")
            if cache and cached.exists():
                sources.append(f"SELECT * FROM read_parquet({_sql(str(cached))})")
            else:
                fresh[str(root / name)] = cached
        if fresh:
            # Every file not parsed yet in one query (DuckDB's threads over all of them),
            # then each file's rows cached under its own name.
            listed = ", ".join(_sql(path) for path in fresh)
            source = f"read_parquet([{listed}], filename = true, union_by_name = true)"
            con.execute(
                "CREATE TEMP TABLE _fresh AS "
                + extract.format(source=source, src="filename").replace("$model", _sql(model))
            )
            if cache:
                for path, cached in fresh.items():
                    _cache_file(con, path, cached)
            sources.append("SELECT * EXCLUDE (_src) FROM _fresh")
        tail = f"(SELECT * FROM events WHERE seq > {int(snapshot.checkpoint)})"
        sources.append(f"SELECT * EXCLUDE (_src) FROM ({extract.format(source=tail, src='NULL')})")
        query = (
            "SELECT * FROM ("
            + " UNION ALL BY NAME ".join(sources)
            + f") WHERE _time_us >= {since_us} AND _time_us < {until_us}"
            + (" ORDER BY _time_us, _request_id, _row" if ordered else "")
        )
        try:
            return con.sql(query, params={"model": model}).to_arrow_table()
        except duckdb.Error:
            if not cache or len(fresh) == len(snapshot.files):
                raise
            # A cached file that cannot be read (a disk error, a hand edit): the cache is
            # only a copy, so it is dropped (the next check rebuilds it) and the rows are
            # parsed again from the copy.
            _log.warning("live drift: dropping the unreadable cache %s", folder, exc_info=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        con.close()
    return live_rows(
        project,
        model,
        since=since,
        until=until,
        columns=columns,
        outputs=outputs,
        cache=False,
        ordered=ordered,
    )


#: Bump when the extraction changes: cached files of another version are not read.
_EXTRACTION_VERSION = 2


def _extraction(columns: Sequence[tuple[str, str]], outputs: Sequence[Mapping[str, Any]]) -> str:
    """The query turning prediction events of ``{source}`` (with ``$model``) into rows,
    with ``{src}`` as their ``_src`` (the file they came from)."""
    shape = {name: _duck_type(kind) for name, kind in columns}
    paths = _output_paths(outputs)
    unnests = ["unnest(_p.input) AS _i"]
    picks = [f'_i."{_ident(name)}" AS "{_ident(name)}"' for name in shape]
    answer: Any = None
    for position, (_, name, out) in enumerate(paths):
        per_row = _duck_type(str(out.get("dtype", "float64")))
        dims = list(out.get("shape") or [])
        kind: Any = [per_row] if not dims else [[per_row]]
        if len(paths) == 1 and paths[0][0] == "$.output":  # one output, answered as is
            answer, field = kind, "_p.output"
        else:
            answer = {**(answer or {}), str(out["name"]): kind}
            field = f'_p.output."{_ident(str(out["name"]))}"'
        unnests.append(f"unnest({field}) AS _o{position}")
        if not dims:
            picks.append(f'_o{position} AS "{_ident(name)}"')
        else:
            picks += [f'_o{position}[{j + 1}] AS "{_ident(f"{name}_{j}")}"' for j in range(dims[0])]
    unnests.append("unnest(range(len(_p.input))) AS _row")
    structure: dict[str, Any] = {"input": [shape]}
    if answer is not None:
        structure["output"] = answer
    typed = _sql(json.dumps(structure)).replace("{", "{{").replace("}", "}}")
    return (
        "SELECT _src, _version, _version_id, _arm, _time_us, _request_id, _row, "
        + ", ".join(picks)
        + " FROM (SELECT _src, _version, _version_id, _arm, _time_us, _request_id, "
        + ", ".join(unnests)
        + " FROM (SELECT {src} AS _src, subject_version AS _version, version_id AS _version_id, "
        "arm AS _arm, time_us AS _time_us, request_id AS _request_id, "
        f"json_transform(payload, {typed}) AS _p FROM {{source}} "
        "WHERE kind = 'prediction' AND subject = $model) WHERE _p.input IS NOT NULL)"
    )


def _digest(model: str, extract: str) -> str:
    text = json.dumps([_EXTRACTION_VERSION, model, extract])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_file(con: Any, path: str, cached: Path) -> None:
    """The rows parsed from ``path`` (in ``_fresh``), written durably to ``cached``."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        con.execute(
            f"COPY (SELECT * EXCLUDE (_src) FROM _fresh WHERE _src = {_sql(path)}) "
            f"TO {_sql(str(partial))} (FORMAT parquet)"
        )
        os.replace(partial, cached)
    finally:
        partial.unlink(missing_ok=True)


def drift_metric(
    project: Project, name: str, model: str | None, since: datetime, until: datetime
) -> float | None:
    """An alert metric from the latest live drift check of ``model`` recorded in ``[since,
    until)`` (``monitoring.drift_checked``): ``drift.share``, ``prediction_drift``,
    ``cbpe.accuracy``, ``cbpe.roc_auc``, ``cbpe.f1``, ``cbpe.accuracy_error`` (the
    estimate minus the realized accuracy, once labels arrived); None when no check ran in
    the range (schedule them: ``monitoring.drift.cron``)."""
    if name not in _METRICS:
        raise InvalidInputError(f"no live drift metric {name!r}", field="metric")
    _check_range(since, until, "since", "until")
    page = project.events.query(
        kind=DRIFT_CHECKED.name, subject=model, since=since, until=until, limit=1, descending=True
    )
    events = list(page.items)
    if not events:
        return None
    metrics = events[0].payload.get("metrics") or {}
    value = metrics.get(name)
    return None if value is None else float(value)


# -- the pieces ---------------------------------------------------------------------------


def _version(
    project: Project, model: str, version: int | str | None, since: datetime, until: datetime
) -> Any:
    registry = project.registry
    try:
        registry.get(model, "latest")
    except NotFoundError:
        raise NotFoundError(
            f"no model {model!r} in the registry", model=model, reason="no_model"
        ) from None
    if version is not None:
        try:
            return registry.get(model, version)
        except NotFoundError as exc:
            raise NotFoundError(exc.message, model=model, reason="no_model") from None
    try:
        return registry.get(model, "champion")
    except NotFoundError:
        pass
    from conveyor.monitoring.query import MonitorQuery

    busiest = (
        MonitorQuery(project)
        .sql(
            "SELECT subject_version, count(*) AS n FROM events WHERE kind = 'prediction' "
            "AND subject = $model GROUP BY ALL ORDER BY n DESC LIMIT 1",
            kinds=["prediction"],
            since=since,
            until=until,
            params={"model": model},
        )
        .to_pylist()
    )
    if busiest and busiest[0]["subject_version"]:
        return registry.get(model, str(busiest[0]["subject_version"]))
    return registry.get(model, "latest")


def _signature(version: Any) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    signature = version.signature or {}
    columns = [
        (str(c["name"]), str(c.get("type", "string")))
        for c in signature.get("inputs", [])
        if isinstance(c, Mapping) and "name" in c
    ]
    if not columns:
        raise NotFoundError(
            f"model {version.ref} has no input signature: live inputs cannot be typed "
            "(register it with signature_from=)",
            model=version.model,
            reason="no_signature",
        )
    outputs = [dict(o) for o in signature.get("outputs", []) if isinstance(o, Mapping)]
    return columns, outputs


def _output_paths(outputs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(JSON path in the payload, column name, output) per output the signature records."""
    from conveyor.registry.outputs import DEFAULT_OUTPUT

    if len(outputs) == 1 and outputs[0].get("name") == DEFAULT_OUTPUT:
        return [("$.output", "prediction", outputs[0])]
    return [(f"$.output.{json.dumps(str(o['name']))}", str(o["name"]), o) for o in outputs]


def _prediction_names(outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The prediction columns :func:`live_rows` makes of the signature's outputs."""
    names = []
    for _, name, out in _output_paths(outputs):
        dims = list(out.get("shape") or [])
        names += [name] if not dims else [f"{name}_{j}" for j in range(dims[0])]
    return names


def _prediction_table(
    answer: Any, outputs: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> pa.Table:
    """A model's answer on the reference, as the columns :func:`live_rows` makes of served
    outputs."""
    import numpy as np
    import pyarrow as pa

    parts: dict[str, Any] = {}
    answers = answer if isinstance(answer, Mapping) else None
    for _, name, out in _output_paths(outputs):
        key = str(out["name"])
        value = answers[key] if answers is not None else answer
        array = np.asarray(value)
        if array.ndim == 2 and array.shape[1] == 1 and not out.get("shape"):
            array = array[:, 0]
        if array.ndim == 1:
            parts[name] = array
        else:
            for j in range(array.shape[1]):
                parts[f"{name}_{j}"] = array[:, j]
    missing = [n for n in names if n not in parts]
    if missing:
        raise InvalidInputError(
            f"the model's answer on its reference has no {missing[0]!r}", field="output"
        )
    return pa.table(
        {n: pa.array(parts[n].tolist() if parts[n].dtype == object else parts[n]) for n in names}
    )


def _training_reference(
    project: Project, model: str, version: Any, features: Sequence[str]
) -> tuple[pa.Table, dict[str, Any], Any]:
    """The version's training data (its lineage's data set version holding the inputs),
    the reference's description, and its labels (the model spec's target) if known."""
    ids = list(version.dataset_version_ids or [])
    if not ids:
        raise NotFoundError(
            f"model {version.ref} records no training data in its lineage "
            "(dataset_version_ids): compare against a pinned window of traffic instead "
            "(reference_window=, --reference-window)",
            model=model,
            reason="no_reference",
        )
    target = _target(project, model)
    prepare = _prepare_ref(project, model)
    repo = project.data.versions
    for version_id in ids:
        found = repo.resolve(version_id)
        names = [c["name"] for c in found.schema.get("columns", [])]
        holds = all(f in names for f in features)
        if holds or prepare is not None:
            table: pa.Table = repo.read(found, purpose="drift")
            if not holds:
                # The model's inputs were made by its ``prepare`` entry point from this
                # data set's rows: the reference is that frame, made by the same code.
                table = _prepared(project, prepare, table)  # type: ignore[arg-type]
                if not all(f in table.column_names for f in features):
                    continue
            labels = None
            if target is not None and target in table.column_names:
                labels = table.column(target).to_numpy(zero_copy_only=False)
            return (
                table.select(list(features)),
                {
                    "kind": "training",
                    "dataset": found.dataset,
                    "dataset_version": found.number,
                    "dataset_version_id": found.id,
                    "rows": table.num_rows,
                    "target": target if labels is not None else None,
                    "description": f"dataset:{found.dataset}@{found.number}",
                },
                labels,
            )
    raise NotFoundError(
        f"none of the data set versions in the lineage of {version.ref} holds its input "
        f"columns ({', '.join(features)}): its training frame was prepared from them. "
        "Compare against a pinned window of traffic instead (reference_window=)",
        model=model,
        reason="no_reference",
    )


def _prepare_ref(project: Project, model: str) -> str | None:
    """The model's ``prepare`` entry point in the spec (``model:add_features``), if any."""
    try:
        models = project.spec.section("models")
    except Exception:  # no training capability installed
        return None
    spec = models.get(model) if isinstance(models, Mapping) else None
    ref = getattr(spec, "prepare", None)
    return ref if isinstance(ref, str) and ref else None


def _prepared(project: Project, ref: str, table: pa.Table) -> pa.Table:
    """``table`` through the model's ``prepare`` entry point, as training prepared it."""
    import pyarrow as pa

    from conveyor.user_code import load_entry_point

    prepare = load_entry_point(ref, project.spec.root, field="prepare")
    try:
        frame = prepare(table.to_pandas())
    except Exception as exc:
        raise InvalidInputError(
            f"prepare ({ref}) failed on the training reference: {type(exc).__name__}: {exc}",
            field="prepare",
            reason="prepare_failed",
        ) from exc
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _target(project: Project, model: str) -> str | None:
    try:
        models = project.spec.section("models")
    except Exception:  # no training capability installed: no spec, no known target
        return None
    spec = models.get(model) if isinstance(models, Mapping) else None
    target = getattr(spec, "target", None)
    return target if isinstance(target, str) else None


def _important(
    project: Project,
    version: Any,
    features: Sequence[str],
    given: Sequence[str] | None,
    load: Any,
    notes: list[str],
) -> list[str]:
    from conveyor.data.drift.importance import important_features, registered_importances

    if given is not None:
        unknown = [c for c in given if c not in features]
        if unknown:
            raise InvalidInputError(
                f"important: {', '.join(map(repr, unknown))} are not inputs of the model "
                f"({', '.join(features)})",
                field="important",
            )
        return list(given)
    try:
        weights = registered_importances(version, load)
    except Exception as exc:  # a model that cannot be loaded here still gets a drift check
        notes.append(f"feature importances unavailable ({type(exc).__name__}: {exc})")
        return []
    if not weights:
        return []
    return important_features(weights, among=list(features))


def _cbpe_fit(
    load: Any,
    reference_inputs: pa.Table,
    labels: Any,
    notes: list[str],
    reference_predictions: pa.Table | None = None,
) -> tuple[Any, list[str] | None] | None:
    """CBPE calibrated on the reference (the version's scores and the true labels), and
    where live scores come from: None for the model's ``predict_proba``, else the names of
    the prediction columns holding class probabilities (a model that answers them, such
    as an ONNX or PyTorch classifier). None, with a note, when there is no estimate."""
    from conveyor.monitoring.cbpe import CBPE

    if labels is None:
        notes.append(
            "no CBPE estimate: no labelled reference (the model spec's target column in "
            "its training data)"
        )
        return None
    loaded = load()
    try:
        if callable(getattr(loaded.model, "predict_proba", None)):
            fitted = CBPE().fit(
                _scores(loaded, reference_inputs),
                labels,
                classes=getattr(loaded.model, "classes_", None),
            )
            return fitted, None
        names = _probability_columns(reference_predictions)
        if names is None:
            notes.append(
                "no CBPE estimate: the model has no predict_proba and answers no class "
                "probabilities (not a classifier)"
            )
            return None
        assert reference_predictions is not None
        scores = _matrix_of(reference_predictions, names)
        return CBPE().fit(scores, labels), names
    except InvalidInputError as exc:
        notes.append(f"no CBPE estimate: {exc.message}")
        return None


def _probability_columns(table: pa.Table | None) -> list[str] | None:
    """The prediction columns ``NAME_0`` to ``NAME_k-1`` (k >= 2) holding probabilities
    (numbers in [0, 1] summing to 1 per row), if the model answers them."""
    import numpy as np

    if table is None:
        return None
    groups: dict[str, list[str]] = {}
    for name in table.column_names:
        stem, _, index = name.rpartition("_")
        if stem and index.isdigit():
            groups.setdefault(stem, []).append(name)
    for stem, names in groups.items():
        if len(names) < 2 or names != [f"{stem}_{j}" for j in range(len(names))]:
            continue
        try:
            matrix = _matrix_of(table, names)
        except (TypeError, ValueError):
            continue
        if (
            len(matrix)
            and np.isfinite(matrix).all()
            and matrix.min() >= 0.0
            and matrix.max() <= 1.0
            and np.abs(matrix.sum(axis=1) - 1.0).max() < 1e-3
        ):
            return names
    return None


def _matrix_of(table: pa.Table, names: Sequence[str]) -> Any:
    import numpy as np

    return np.column_stack(
        [
            np.asarray(table.column(n).to_numpy(zero_copy_only=False), dtype=np.float64)
            for n in names
        ]
    )


def _scores(loaded: Any, table: pa.Table) -> Any:
    """The version's class probabilities for ``table`` (its signature enforced first)."""
    frame = loaded.signature.enforce(table) if loaded.signature is not None else table
    return loaded.model.predict_proba(frame.to_pandas())


def _cbpe(
    project: Project,
    model: str,
    fitted: tuple[Any, list[str] | None] | None,
    load: Any,
    live: pa.Table,
    version_id: str,
    features: Sequence[str],
    since: datetime,
    until: datetime,
    notes: list[str],
) -> tuple[Estimate | None, dict[str, Any] | None]:
    """The CBPE estimate on the live rows, and, for the rows whose labels arrived (the
    quality monitors' feedback join), the realized metrics. Scores from the model's
    ``predict_proba`` on every sampled row, or from the probabilities the version itself
    answered (its rows only)."""
    import numpy as np

    if fitted is None:
        return None, None
    estimator, names = fitted
    try:
        if names is None:
            live_scores = _scores(load(), live.select(list(features)))
        else:
            ids = np.asarray(live.column("_version_id").to_numpy(zero_copy_only=False))
            live = live.filter(ids == version_id)
            if live.num_rows == 0:
                notes.append("no CBPE estimate: the version answered none of the sampled rows")
                return None, None
            live_scores = _matrix_of(live, names)
        estimate = estimator.estimate(live_scores)
    except InvalidInputError as exc:
        notes.append(f"no CBPE estimate: {exc.message}")
        return None, None
    found = _labels(project, model, live, since, until)
    if found is None:
        return estimate, None
    rows, truth = found
    try:
        realized = estimator.realized(live_scores[rows], truth)
    except InvalidInputError as exc:
        notes.append(f"CBPE not compared with the labels: {exc.message}")
        return estimate, None
    return estimate, {"labelled": len(rows), **realized}


def _labels(
    project: Project, model: str, live: pa.Table, since: datetime, until: datetime
) -> tuple[Any, list[Any]] | None:
    """Positions in ``live`` of the rows with a label, and their labels: the feedback join
    of the quality monitors (:func:`conveyor.monitoring.feedback_join.labelled`: by request
    id and row, or by entity key and time; the latest record per row)."""
    import numpy as np

    from conveyor.monitoring.feedback_join import labelled
    from conveyor.monitoring.query import MonitorQuery

    # The join reads every prediction of the range again: only when feedback exists.
    count = (
        MonitorQuery(project)
        .sql(
            "SELECT count(*) AS n FROM events WHERE kind = 'feedback'",
            kinds=["feedback"],
            since=since,
        )
        .to_pylist()
    )
    if not count or not count[0]["n"]:
        return None
    found = labelled(project, model, since=since, until=until)
    known = {
        (rid, row): label
        for rid, row, label in zip(found.request_id, found.row, found.label, strict=True)
        if label is not None
    }
    if not known:
        return None
    ids = live.column("_request_id").to_pylist()
    positions = live.column("_row").to_pylist()
    rows, truth = [], []
    for i, key in enumerate(zip(ids, positions, strict=True)):
        label = known.get(key)
        if label is not None:
            rows.append(i)
            truth.append(label)
    if not rows:
        return None
    return np.asarray(rows, dtype=np.int64), truth


def _add_prediction_checks(report: Report, predictions: DriftResult) -> None:
    from conveyor.checks.result import CheckResult

    for name, col in predictions.columns.items():
        check = col.check()
        report.add(
            CheckResult(
                f"drift.prediction.{name}",
                not col.drifted,
                observed=check.observed,
                threshold=check.threshold,
                detail=check.detail,
                severity="error" if col.drifted else check.severity,
            )
        )


def _record(project: Project, found: LiveDrift, actor: str | None) -> bool:
    """Save the report, record the check and, for a new incident, ``drift.detected``.

    A drift that persists fails every check until it is dealt with; an hourly job would
    record ``drift.detected`` every hour, and each would start a retraining. So it is
    recorded once per incident: when the check fails and the model's previous check did
    not fail for the same version (or there was none). A new version (a retraining, a
    rollback) starts afresh."""
    from conveyor.checks.persist import save_report
    from conveyor.data.events import DRIFT_DETECTED

    previous = project.events.query(
        kind=DRIFT_CHECKED.name, subject=found.model, limit=1, descending=True
    ).items
    ongoing = bool(previous) and (
        previous[0].payload.get("version_id") == found.version_id
        and previous[0].payload.get("verdict") == "failed"
    )
    alerted = found.detected and not ongoing
    save_report(project.store, found.report)
    compared = {"reference": found.reference, "current": found.current}
    metrics = {k: _round(v) for k, v in found.metrics().items()}
    project.events.record(
        DRIFT_CHECKED,
        subject=found.model,
        subject_version=str(found.version),
        actor=actor,
        payload={
            "version_id": found.version_id,
            "report_id": found.report.id,
            "verdict": found.report.verdict,
            "share": round(found.share, 6),
            "drifted": found.drifted,
            "metrics": metrics,
            "compared": compared,
            "alerted": alerted,
        },
    )
    if alerted:
        project.events.record(
            DRIFT_DETECTED,
            subject=found.model,
            subject_version=str(found.version),
            actor=actor,
            payload={
                "reference": str(found.reference["description"]),
                "current": str(found.current["description"]),
                "report_id": found.report.id,
                "drifted": [c.name for c in found.report.failures],
                "compared": compared,
            },
        )
    project.events.flush()
    return alerted


def _check_range(since: Any, until: Any, first: str, second: str) -> None:
    for name, value in ((first, since), (second, until)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidInputError(f"{name} must be an aware datetime, got {value!r}", field=name)
    if until <= since:
        raise InvalidInputError(
            f"{second} ({until.isoformat()}) must come after {first} ({since.isoformat()})",
            field=second,
        )


def _duck_type(kind: str) -> str:
    """The DuckDB type a JSON value of an Arrow or numpy type name is read as."""
    k = kind.lower()
    if k.startswith(("float", "double", "halffloat", "decimal")):
        return "DOUBLE"
    if k.startswith(("int", "uint")):
        return "BIGINT"
    if k.startswith("bool"):
        return "BOOLEAN"
    return "VARCHAR"


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
