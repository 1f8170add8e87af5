"""The production readiness report: one :class:`~conveyor.checks.result.Report` holding
the project against the success criteria in its spec (``slos:`` and ``readiness:``).

::

    made = readiness_report(project, load_test=True, token=os.environ["CONVEYOR_API_KEY"])
    made.report.verdict           # passed | passed with warnings | failed
    made.items[0].fix             # what to do when that check fails

Each check says how it was measured (its ``detail``) and, when it did not pass, what to
do (``Fix: ...`` in the detail, and :attr:`Item.fix`). What cannot be measured (no
target declared, too little traffic, no feedback yet, the load test not asked for) is a
*warning* that says why, never a pass. Areas and checks:

========================  ==================================================================
quality.MODEL             ``slos.quality.metric`` over the predictions of the window that
                          have feedback (monitoring's quality code), against its floor
latency.MODEL             live p95 of answered requests (system monitors) <= latency_p95_ms
throughput.MODEL          the busiest minute's requests per second >= throughput_rps
                          (a warning only: low live traffic is no capacity failure)
availability.MODEL        1 - 5xx share of the window's requests >= availability
load_test.*               ``--load-test``: requests at throughput_rps for a few seconds
                          against the running server: rate achieved, p95, errors
security.auth             serving.auth is ``required``
security.keys             active keys exist; no admin key without expiry; no expired key
                          left unrevoked; no key with a default name
security.encryption       the data sets' sensitive columns have a key to be encrypted with
security.audit            the audit trail holds events (keys, routes, aliases...)
security.tls              TLS configured when readiness.tls_required
compliance.deletion       a deletion request ran end to end (a ``data.forgotten`` event)
compliance.retention      retention_days declared and no telemetry older than it
business.MODEL            mean feedback value against readiness.business target (and the
                          lift over its baseline)
========================  ==================================================================

The report is saved (:mod:`conveyor.checks.persist`, kind ``readiness``) and
``readiness.reported`` is recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult, Report

if TYPE_CHECKING:
    from conveyor.config import SLOs
    from conveyor.project import Project
    from conveyor.readiness.settings import ReadinessSpec

__all__ = [
    "DEFAULT_KEY_NAMES",
    "Item",
    "ReadinessReport",
    "latest_readiness",
    "readiness_report",
]

#: Key names that betray a key made for a demo or a first try, never for production.
DEFAULT_KEY_NAMES = frozenset({"admin", "default", "demo", "test", "root", "key", "changeme"})

#: Telemetry kinds a retention period applies to (they hold inputs and outcomes).
_TELEMETRY = ("prediction", "prediction.failed", "prediction.shadow", "feedback")


@dataclass(frozen=True, slots=True)
class Item:
    """One check of the report, with its area and what to do when it fails."""

    area: str
    check: CheckResult
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "area": self.area,
            **self.check.to_dict(),
            "status": self.check.status,
            "fix": self.fix,
        }


@dataclass(slots=True)
class ReadinessReport:
    """The report, its items (with fixes), and what was measured to make them."""

    report: Report
    items: list[Item]
    models: list[str]
    since: datetime
    until: datetime
    load_test: dict[str, Any] | None
    seconds: float
    measured: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.report.id,
            "subject": self.report.subject,
            "verdict": self.report.verdict,
            "passed": self.report.passed,
            "created_at": self.report.created_at.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "models": self.models,
            "items": [i.to_dict() for i in self.items],
            "load_test": self.load_test,
            "measured": self.measured,
            "seconds": round(self.seconds, 4),
        }


class _Items:
    """Collects items; a failed one's detail ends with its fix."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def check(
        self,
        area: str,
        name: str,
        passed: bool,
        observed: Any,
        threshold: Any,
        how: str,
        fix: str,
        severity: str = "error",
    ) -> None:
        detail = how if passed else f"{how}. Fix: {fix}"
        result = CheckResult(name, passed, observed, threshold, detail, severity)  # type: ignore[arg-type]
        self.items.append(Item(area, result, fix))

    def unmeasured(self, area: str, name: str, why: str, fix: str, threshold: Any = None) -> None:
        self.check(area, name, False, None, threshold, f"not measured: {why}", fix, "warning")


def readiness_report(
    project: Project,
    *,
    load_test: bool = False,
    token: str | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    save: bool = True,
    server_url: str | None = None,
) -> ReadinessReport:
    """Hold the project against its success criteria (see the module). ``token``: the
    API key the load test calls the server with; ``server_url``: the server's base URL
    when ``readiness.load_test.url`` is not set (the server passes its own); ``save``:
    persist the report and record ``readiness.reported``."""
    from conveyor.durations import parse_duration
    from conveyor.readiness.settings import readiness_of

    started = time.perf_counter()
    spec = readiness_of(project.spec)
    slos = project.spec.slos
    until = now or datetime.now(UTC)
    since = until - parse_duration(spec.window, "readiness.window")
    items = _Items()
    measured: dict[str, Any] = {}
    models = _models(project, spec)
    if not models:
        items.unmeasured(
            "quality",
            "models",
            "no model has a route and readiness.models names none",
            "deploy a model (conveyor route set MODEL ...) or list it in readiness.models",
        )
    for model in models:
        measured[model] = _live(project, spec, slos, model, since, until, items)
    result = None
    if load_test:
        result = _load_test(project, spec, slos, models, token, server_url, items)
    else:
        items.unmeasured(
            "load_test",
            "load_test",
            "the built-in load test was not asked for",
            "run `conveyor readiness --load-test` (role deployer) against the running server",
            slos.throughput_rps,
        )
    _security(project, spec, since, until, items)
    _compliance(project, spec, until, items)
    report = Report(f"project:{project.name}", kind="readiness")
    report.add(*(i.check for i in items.items))
    made = ReadinessReport(
        report=report,
        items=items.items,
        models=models,
        since=since,
        until=until,
        load_test=result,
        seconds=time.perf_counter() - started,
        measured=measured,
    )
    if save:
        _save(project, made, actor)
    return made


def latest_readiness(project: Project) -> Report | None:
    """The newest saved readiness report of the project (what a dashboard shows without
    measuring again), or None when none was made."""
    from conveyor.checks.persist import list_reports

    found = list_reports(
        project.store, subject=f"project:{project.name}", kind="readiness", limit=1
    )
    return found.items[0] if found.items else None


# -- per model: quality, latency, throughput, availability, business --------------------------


def _models(project: Project, spec: ReadinessSpec) -> list[str]:
    if spec.models:
        return list(spec.models)
    from conveyor.serving.route_store import RouteStore

    return [r.model for r in RouteStore(project.store, project.events, project.registry).all()]


def _live(
    project: Project,
    spec: ReadinessSpec,
    slos: SLOs,
    model: str,
    since: datetime,
    until: datetime,
    items: _Items,
) -> dict[str, Any]:
    from conveyor.monitoring.query import MonitorQuery
    from conveyor.monitoring.system_query import system_summary

    monitor = MonitorQuery(project)
    summary = system_summary(monitor, model, since=since, until=until)
    requests = summary["requests"]
    window = f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}"
    few = requests < spec.min_requests
    too_few = (
        f"{requests} requests to {model} in the window ({window}), fewer than "
        f"readiness.min_requests ({spec.min_requests})"
    )
    more = "send production (or shadow) traffic for longer, or widen readiness.window"
    # Latency.
    target = slos.latency_p95_ms
    if target is None:
        items.unmeasured(
            "latency", f"latency.{model}", "slos.latency_p95_ms is not set", "declare it in slos:"
        )
    elif few:
        items.unmeasured("latency", f"latency.{model}", too_few, more, target)
    else:
        p95 = summary["latency_p95_ms"]
        items.check(
            "latency",
            f"latency.{model}",
            p95 <= target,
            round(p95, 3),
            target,
            f"p95 of {summary['requests'] - summary['errors_4xx'] - summary['errors_5xx']} "
            f"answered requests ({window}), from the prediction events (system monitors)",
            "enable batching (serving.batching) or the cache, add workers (serving.workers), "
            "or serve an optimized copy of the model (conveyor optimize MODEL@N)",
        )
    # Throughput: the busiest minute of live traffic.
    rate = slos.throughput_rps
    peak = _peak_rps(monitor, model, since, until)
    if rate is None:
        items.unmeasured(
            "throughput",
            f"throughput.{model}",
            "slos.throughput_rps is not set",
            "declare it in slos:",
        )
    elif few:
        items.unmeasured("throughput", f"throughput.{model}", too_few, more, rate)
    else:
        items.check(
            "throughput",
            f"throughput.{model}",
            peak >= rate,
            round(peak, 3),
            rate,
            f"the busiest minute of live traffic carried {peak:.1f} requests/s (system "
            "monitors); live traffic below the target is no failure of capacity, the load "
            "test measures that",
            "run the load test (--load-test) to see whether the server carries the target rate",
            "warning",
        )
    # Availability.
    floor = slos.availability
    if floor is None:
        items.unmeasured(
            "availability",
            f"availability.{model}",
            "slos.availability is not set",
            "declare it in slos:",
        )
    elif few:
        items.unmeasured("availability", f"availability.{model}", too_few, more, floor)
    else:
        share = summary["availability"]
        items.check(
            "availability",
            f"availability.{model}",
            share >= floor,
            round(share, 6),
            floor,
            f"1 - share of 5xx among {requests} requests ({summary['errors_5xx']} 5xx, "
            f"{summary['shed']} shed; 4xx are the callers' errors), {window}",
            "read the failures (conveyor events tail --kind prediction.failed), add workers or "
            "raise serving.batching.max_queue if requests were shed",
        )
    quality, business = _feedback(project, spec, slos, model, since, until, items)
    return {"system": summary, "peak_rps": peak, "quality": quality, "business": business}


def _peak_rps(monitor: Any, model: str, since: datetime, until: datetime) -> float:
    report = monitor.system(model, since=since, until=until, window=timedelta(minutes=1))
    per_window: dict[str, float] = {}
    for row in report.windows:
        per_window[row["window"]] = per_window.get(row["window"], 0.0) + (
            row.get("requests_per_s") or 0.0
        )
    return max(per_window.values(), default=0.0)


def _feedback(
    project: Project,
    spec: ReadinessSpec,
    slos: SLOs,
    model: str,
    since: datetime,
    until: datetime,
    items: _Items,
) -> tuple[float | None, float | None]:
    from conveyor.monitoring.feedback_join import labelled
    from conveyor.monitoring.quality import quality_metric

    found = labelled(project, model, since=since, until=until)
    n = len(found)
    send = (
        "send ground truth for the model's predictions (POST /v1/feedback, conveyor feedback "
        "load) and wait for it to arrive"
    )
    quality = None
    if slos.quality is None:
        items.unmeasured(
            "quality",
            f"quality.{model}",
            "slos.quality is not set: no floor to hold to",
            "declare slos.quality (metric, floor, direction)",
        )
    elif n < spec.min_labelled:
        items.unmeasured(
            "quality",
            f"quality.{model}",
            f"{n} predictions of {model} have feedback in the window, fewer than "
            f"readiness.min_labelled ({spec.min_labelled}): the hold-out score alone does "
            "not show production quality",
            send,
            slos.quality.floor,
        )
    else:
        metric = slos.quality.metric
        quality = quality_metric(metric)(project, model, since, until)
        if quality is None:
            items.unmeasured(
                "quality",
                f"quality.{model}",
                f"{metric} cannot be computed from the {n} labelled predictions (the model's "
                "outputs do not fit the metric)",
                "pick a metric the model's outputs support, or set "
                "monitoring.quality.models.<model>.output",
                slos.quality.floor,
            )
        else:
            items.check(
                "quality",
                f"quality.{model}",
                slos.quality.met_by(quality),
                round(quality, 6),
                f"{slos.quality.comparator} {slos.quality.floor}",
                f"{metric} over {n} production predictions with feedback (monitoring's "
                "quality code), not the hold-out set" + _holdout(project, model, found, metric),
                "look for drift (conveyor monitor drift), retrain on recent labelled data, "
                "or roll back to the version that met the floor",
            )
    business = None
    target = spec.business
    values = [v for v in found.value if v is not None]
    if target is None:
        items.unmeasured(
            "business",
            f"business.{model}",
            "readiness.business is not set",
            "declare readiness.business (baseline, target) for the feedback value",
        )
    elif len(values) < spec.min_labelled:
        items.unmeasured(
            "business",
            f"business.{model}",
            f"{len(values)} feedback records carry a value, fewer than "
            f"readiness.min_labelled ({spec.min_labelled})",
            "send the outcome's value with feedback (the value field)",
            target.target,
        )
    else:
        business = sum(values) / len(values)
        lift = business - target.baseline
        comparator = ">=" if target.direction == "maximize" else "<="
        items.check(
            "business",
            f"business.{model}",
            target.met_by(business),
            round(business, 6),
            f"{comparator} {target.target}",
            f"mean {target.name} of {len(values)} predictions with feedback: {business:.4g}, "
            f"{lift:+.4g} against the baseline {target.baseline:.4g}",
            "compare versions on the business metric (conveyor experiment start) before "
            "promoting; check that the model's decisions are acted on",
        )
    return quality, business


def _holdout(project: Project, model: str, found: Any, metric: str) -> str:
    """``; hold-out METRIC of @V: X`` for the version that answered most of the labelled
    predictions, when its registry entry holds that metric."""
    import math
    from collections import Counter

    if not found.version:
        return ""
    version = Counter(found.version).most_common(1)[0][0]
    try:
        metrics = project.registry.get(model, int(version)).metrics
    except (ValueError, LookupError):
        return ""
    for key in (f"holdout_{metric}", metric):
        value = metrics.get(key)
        if isinstance(value, int | float) and not math.isnan(value):
            return f"; hold-out {metric} of @{version}: {value:.4g}"
    return ""


# -- the load test ---------------------------------------------------------------------------


def _load_test(
    project: Project,
    spec: ReadinessSpec,
    slos: SLOs,
    models: list[str],
    token: str | None,
    server_url: str | None,
    items: _Items,
) -> dict[str, Any] | None:
    from conveyor.readiness.loadtest import run_load_test

    settings = spec.load_test
    rate = settings.rate_rps or slos.throughput_rps
    model = settings.model or (models[0] if models else None)
    if rate is None or model is None:
        items.unmeasured(
            "load_test",
            "load_test",
            "no target rate (slos.throughput_rps or readiness.load_test.rate_rps)"
            if rate is None
            else "no model to call",
            "declare slos.throughput_rps and deploy a model",
        )
        return None
    records = settings.records or _sampled_input(project, model)
    if not records:
        items.unmeasured(
            "load_test",
            "load_test",
            f"no request body: readiness.load_test.records is not set and no prediction of "
            f"{model} was sampled with its input",
            "set readiness.load_test.records (the rows each request sends), or "
            "serving.payload_sample_rate",
            rate,
        )
        return None
    url = f"{_base_url(project, settings.url or server_url)}/v1/models/{model}/predict"
    result = run_load_test(
        url,
        {"records": records},
        rate_rps=rate,
        duration_s=settings.duration_s,
        concurrency=settings.concurrency,
        timeout_s=settings.timeout_s,
        token=token,
    )
    how = (
        f"{result.sent} requests of {len(records)} rows to {url} at {rate:g}/s for "
        f"{settings.duration_s:g} s (open loop, {settings.concurrency} in flight at most): "
        f"{result.ok} answered 200, {result.achieved_rps:.1f}/s achieved"
    )
    items.check(
        "load_test",
        "load_test.throughput",
        result.achieved_rps >= 0.95 * rate,
        round(result.achieved_rps, 3),
        rate,
        how,
        "add workers (serving.workers), enable batching, or an optimized copy of the model",
    )
    if slos.latency_p95_ms is not None:
        items.check(
            "load_test",
            "load_test.latency_p95",
            result.p95_ms is not None and result.p95_ms <= slos.latency_p95_ms,
            None if result.p95_ms is None else round(result.p95_ms, 3),
            slos.latency_p95_ms,
            f"p95 of the answered requests at the target rate, from when each was due ({how})",
            "the server saturates below the target rate: add workers, batch, or cache",
        )
    floor = slos.availability if slos.availability is not None else 0.999
    share = result.ok / result.sent if result.sent else 0.0
    items.check(
        "load_test",
        "load_test.errors",
        share >= floor,
        round(share, 6),
        floor,
        f"share of requests answered 200 under load; statuses {result.statuses}"
        + (f"; {result.errors[0]}" if result.errors else ""),
        "read the failures (conveyor events tail --kind prediction.failed); 401/403: give "
        "the load test a key with the predictor role (CONVEYOR_API_KEY)",
    )
    return result.to_dict()


def _sampled_input(project: Project, model: str) -> list[dict[str, Any]] | None:
    """The input rows of the newest prediction of ``model`` that was sampled with them."""
    for seen, event in enumerate(
        project.events.iter(kind="prediction", subject=model, descending=True)
    ):
        rows = event.payload.get("input")
        if isinstance(rows, list) and rows:
            return rows
        if seen >= 5000:
            break
    return None


def _base_url(project: Project, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    from conveyor.serving.settings import serving_of

    serving = serving_of(project.spec)
    host = "127.0.0.1" if serving.host in ("0.0.0.0", "::", "") else serving.host
    scheme = "https" if serving.ssl_certfile else "http"
    return f"{scheme}://{host}:{serving.port}"


# -- security and compliance -----------------------------------------------------------------


def _security(
    project: Project, spec: ReadinessSpec, since: datetime, until: datetime, items: _Items
) -> None:
    from conveyor.serving.settings import serving_of

    serving = serving_of(project.spec)
    items.check(
        "security",
        "security.auth",
        serving.auth == "required",
        serving.auth,
        "required",
        "serving.auth: every request needs an API key",
        "set serving.auth: required (disabled is for local development)",
    )
    _keys(project, serving.auth, items)
    _encryption(project, items)
    from conveyor.governance.audit import audit_kinds

    kinds = audit_kinds()
    audited = project.events.count(kind=kinds)
    items.check(
        "security",
        "security.audit",
        audited > 0,
        audited,
        "> 0",
        f"audit events in the log (every kind the catalogue calls audit: {len(kinds)} kinds, "
        "committed before the action returns)",
        "the event log holds no audit event: check backends.events points at the log the "
        "server and the CLI write (conveyor audit)",
    )
    tls = bool(serving.ssl_certfile and serving.ssl_keyfile)
    local = serving.host in ("127.0.0.1", "localhost", "::1")
    if spec.tls_required:
        missing = [
            f
            for f in (serving.ssl_certfile, serving.ssl_keyfile)
            if f and not _path(project, f).is_file()
        ]
        items.check(
            "security",
            "security.tls",
            tls and not missing,
            "configured" if tls and not missing else ("files missing" if tls else "not set"),
            "required",
            "serving.ssl_certfile and ssl_keyfile (readiness.tls_required)"
            + (f"; missing: {', '.join(missing)}" if missing else ""),
            "set serving.ssl_certfile and serving.ssl_keyfile to PEM files, or terminate TLS "
            "in front and set readiness.tls_required: false",
        )
    else:
        items.check(
            "security",
            "security.tls",
            tls or local,
            "configured" if tls else "not set",
            "required off loopback",
            f"TLS not required (readiness.tls_required: false); the server listens on "
            f"{serving.host}",
            "set serving.ssl_certfile/ssl_keyfile, or state that a proxy terminates TLS by "
            "setting readiness.tls_required",
            "warning",
        )


def _keys(project: Project, auth: str, items: _Items) -> None:
    from conveyor.governance.keys import ApiKeys

    now = datetime.now(UTC)
    keys = ApiKeys(project.store, project.events, cache_ttl=0).list(include_revoked=False)
    active = [k for k in keys if not k.expired(now)]
    problems = []
    never = [k.name for k in active if k.role == "admin" and k.expires_at is None]
    if never:
        problems.append(f"admin keys without expiry: {', '.join(sorted(never))}")
    stale = [k.name for k in keys if k.expired(now)]
    if stale:
        problems.append(f"expired keys not revoked: {', '.join(sorted(stale))}")
    default = [k.name for k in keys if k.name.lower() in DEFAULT_KEY_NAMES]
    if default:
        problems.append(f"keys with a default name: {', '.join(sorted(default))}")
    if not active:
        problems.append(
            "no active key: "
            + ("nobody can call the server" if auth == "required" else "the server is open")
        )
    items.check(
        "security",
        "security.keys",
        not problems,
        "; ".join(problems) or f"{len(active)} active keys",
        "no default, expired or unexpiring admin key",
        f"{len(active)} active keys ({sum(k.role == 'admin' for k in active)} admin), "
        f"{len(stale)} expired and unrevoked",
        "create keys per caller with the least role (conveyor keys create NAME --role "
        "predictor --expires 90d), give admin keys an expiry, revoke expired and default ones "
        "(conveyor keys revoke NAME)",
    )


def _encryption(project: Project, items: _Items) -> None:
    from conveyor.data.crypto import Keyring
    from conveyor.data.settings import datasets_of, encryption_of
    from conveyor.errors import ConveyorError

    sensitive = {name: list(d.sensitive) for name, d in datasets_of(project.spec).items()}
    marked = {name: cols for name, cols in sensitive.items() if cols}
    if not marked:
        items.unmeasured(
            "security",
            "security.encryption",
            f"no data set marks a column sensitive ({len(sensitive)} data sets declared)",
            "mark personal columns with datasets.<name>.sensitive so they are encrypted at "
            "rest and masked",
        )
        return
    where = encryption_of(project.spec)
    try:
        keyring = Keyring.from_spec(project.spec)
        problem = None if keyring is not None else "no key configured"
    except ConveyorError as exc:
        keyring, problem = None, str(exc)
    columns = ", ".join(f"{n}.{c}" for n, cols in sorted(marked.items()) for c in cols)
    items.check(
        "security",
        "security.encryption",
        keyring is not None,
        "key available" if keyring is not None else problem,
        "AES-256-GCM key",
        f"sensitive columns {columns}: encrypted at rest with the key from "
        f"${where.key_env}" + (f" or {where.key_file}" if where.key_file else ""),
        f"set ${where.key_env} (conveyor data keygen) or encryption.key_file",
    )


def _compliance(project: Project, spec: ReadinessSpec, until: datetime, items: _Items) -> None:
    from conveyor.data.settings import datasets_of

    forgotten = project.events.latest(1, kind="data.forgotten")
    subjects = [n for n, d in datasets_of(project.spec).items() if d.subject_keys]
    how = (
        "the latest data.forgotten event: "
        + (
            f"{forgotten[0].time.isoformat(timespec='seconds')}, "
            f"{forgotten[0].payload.get('rows_removed')} rows and "
            f"{forgotten[0].payload.get('events_erased')} events removed"
            if forgotten
            else "none"
        )
        + f"; data sets with subject_keys: {', '.join(subjects) or 'none'}"
    )
    items.check(
        "compliance",
        "compliance.deletion",
        bool(forgotten) or not spec.deletion_required,
        len(forgotten),
        ">= 1 executed" if spec.deletion_required else "not required",
        how,
        "run a deletion drill end to end: conveyor data forget --key COLUMN=VALUE (declare "
        "datasets.<name>.subject_keys), and keep its data.forgotten event",
    )
    days = spec.retention_days
    if days is None:
        items.check(
            "compliance",
            "compliance.retention",
            False,
            None,
            "declared",
            "readiness.retention_days is not set: how long predictions, inputs and feedback "
            "are kept is undeclared",
            "declare readiness.retention_days and delete older telemetry on a schedule",
        )
        return
    horizon = until - timedelta(days=days)
    older = project.events.count(kind=list(_TELEMETRY), until=horizon)
    items.check(
        "compliance",
        "compliance.retention",
        older == 0,
        older,
        0,
        f"telemetry events ({', '.join(_TELEMETRY)}) older than {days} days "
        f"(before {horizon.isoformat(timespec='seconds')})",
        f"delete telemetry older than {days} days from the event log (and its columnar "
        "copy), on a schedule",
    )


# -- saving ------------------------------------------------------------------------------------


def _save(project: Project, made: ReadinessReport, actor: str | None) -> None:
    from conveyor.checks.persist import save_report
    from conveyor.readiness.events import READINESS_REPORTED

    report = made.report
    save_report(project.store, report)
    project.events.record(
        READINESS_REPORTED,
        subject=report.subject,
        actor=actor,
        payload={
            "report_id": report.id,
            "verdict": report.verdict,
            "failed": [c.name for c in report.failures],
            "warnings": [c.name for c in report.warnings],
            "load_test": made.load_test is not None,
        },
    )


def _path(project: Project, name: str) -> Any:
    from pathlib import Path

    path = Path(name)
    return path if path.is_absolute() else project.root / path
