"""The dashboard's pages: each reads through a capability's public service and renders HTML.

Every function here is synchronous (the routes run it in a thread) and returns the page's
body as :class:`~conveyor.dashboard.html.Markup`. Traffic numbers come from the
monitoring columnar path (:meth:`MonitorQuery.system`: the Parquet copy plus the log's
tail), never from a scan of the row store; the other pages read small tables (registry,
routes, rollouts, incidents, experiments, saved reports) by key or newest-first with a
limit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.dashboard.html import (
    Markup,
    chart,
    form_button,
    form_inputs,
    join,
    kv,
    link,
    report_table,
    status_badge,
    table,
    tag,
)

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = [
    "alerts_page",
    "drift_page",
    "experiment_page",
    "experiments_page",
    "flag_page",
    "flags_page",
    "model_page",
    "models_page",
    "monitor_page",
    "readiness_page",
    "rollout_page",
    "rollouts_page",
    "routes_page",
]


def _route_store(project: Project) -> Any:
    from conveyor.serving.route_store import RouteStore

    return RouteStore(project.store, project.events, project.registry, verify=False)


def _when(text: Any) -> Any:
    """An ISO time shortened to the second, UTC."""
    if isinstance(text, datetime):
        text = text.isoformat()
    return None if text is None else str(text)[:19].replace("T", " ")


# -- registry ---------------------------------------------------------------------------------


def models_page(project: Project) -> Markup:
    registry = project.registry
    rows = []
    for m in registry.models():
        aliases = registry.aliases(m["name"])
        rows.append(
            (
                link(f"/ui/models/{m['name']}", m["name"]),
                m["latest_version"],
                ", ".join(f"{a}→{n}" for a, n in sorted(aliases.items())) or None,
                m["description"],
                _when(m["updated_at"]),
            )
        )
    return table(
        ("model", "latest version", "aliases", "description", "updated"), rows, id="models"
    )


def model_page(project: Project, model: str) -> Markup:
    from conveyor.errors import NotFoundError

    registry = project.registry
    versions = registry.list(model, limit=50).items
    if not versions and model not in {m["name"] for m in registry.models()}:
        raise NotFoundError(f"no model {model!r}", model=model)
    aliases = registry.aliases(model)
    by_number = defaultdict(list)
    for alias, number in aliases.items():
        by_number[number].append(alias)
    version_rows = [
        (
            v.number,
            ", ".join(sorted(by_number.get(v.number, []))) or None,
            v.flavor,
            v.status,
            ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())) or None,
            _when(v.created_at),
        )
        for v in versions
    ]
    moves = registry.alias_history(model, limit=50)
    numbers = {v.id: v.number for v in versions}
    move_rows = [
        (
            m.alias,
            _version_of(numbers, m.from_version_id),
            _version_of(numbers, m.to_version_id),
            m.actor,
            m.reason,
            _when(m.at),
        )
        for m in moves
    ]
    lineage_rows = [
        (
            v.number,
            v.run_id,
            (v.parent_id or "")[:12] or None,
            (v.git_commit or "")[:12] or None,
            ", ".join(d[:12] for d in v.dataset_version_ids) or None,
            ", ".join(f"{i.get('kind')}:{i.get('name')}" for i in v.inputs) or None,
            v.artifact_digest[:16],
        )
        for v in versions
    ]
    return join(
        [
            tag("h2", "Versions"),
            table(
                ("version", "aliases", "flavor", "status", "metrics", "created"),
                version_rows,
                id="versions",
            ),
            tag("h2", "Alias history"),
            table(("alias", "from", "to", "actor", "reason", "at"), move_rows, id="alias-history"),
            tag("h2", "Lineage"),
            table(
                ("version", "run", "parent", "git commit", "data sets", "inputs", "artifact"),
                lineage_rows,
                id="lineage",
            ),
        ]
    )


def _version_of(numbers: dict[str, int], version_id: str | None) -> Any:
    if version_id is None:
        return None
    number = numbers.get(version_id)
    return f"v{number}" if number is not None else version_id[:12]


# -- serving ----------------------------------------------------------------------------------


def routes_page(project: Project, csrf: str) -> Markup:
    store = _route_store(project)
    rows = []
    for state in store.all():
        policy = state.policy
        arms = ", ".join(
            f"v{a.version}" + (f" ({a.arm})" if a.arm else "") + f" {a.weight:g}"
            for a in policy.versions
        )
        rows.append(
            (
                link(f"/ui/monitor?model={state.model}", state.model),
                policy.mode,
                arms,
                ", ".join(f"v{v}" for v in policy.shadow) or None,
                state.revision,
                state.actor,
                state.reason,
                _when(state.updated_at),
                form_button(f"/ui/routes/{state.model}/rollback", "Roll back", csrf, danger=True),
            )
        )
    return table(
        (
            "model",
            "mode",
            "arms (version, weight)",
            "shadow",
            "revision",
            "by",
            "reason",
            "updated",
            "actions",
        ),
        rows,
        id="routes",
    )


# -- rollouts ---------------------------------------------------------------------------------


def _rollout_actions(r: Any, csrf: str) -> Markup:
    if r.status == "running":
        names = ("pause", "abort")
    elif r.status == "paused":
        names = ("resume", "abort")
    else:
        return Markup("")
    return join(
        form_button(f"/ui/rollouts/{r.id}/{n}", n.capitalize(), csrf, danger=n == "abort")
        for n in names
    )


def rollouts_page(project: Project, csrf: str) -> Markup:
    found = project.rollouts.list()
    rows = [
        (
            link(f"/ui/rollouts/{r.id}", r.id[:12]),
            r.model,
            f"v{r.candidate}",
            f"v{r.stable}",
            status_badge(r.status),
            f"{r.step_index + 1}/{len(r.steps)} ({r.step.label()})",
            r.reason,
            _when(r.updated_at),
            _rollout_actions(r, csrf) or None,  # a finished rollout: nothing left to do
        )
        for r in found[:100]
    ]
    return table(
        (
            "rollout",
            "model",
            "candidate",
            "stable",
            "status",
            "step",
            "reason",
            "updated",
            "actions",
        ),
        rows,
        id="rollouts",
    )


def rollout_page(project: Project, ref: str, csrf: str) -> Markup:
    from conveyor.checks.persist import get_report

    r = project.rollouts.get(ref)
    data = r.to_dict()
    parts: list[Any] = [
        kv(
            {
                "model": r.model,
                "candidate": f"v{r.candidate}",
                "stable": f"v{r.stable}",
                "status": status_badge(r.status),
                "step": f"{r.step_index + 1} of {len(r.steps)}: {', '.join(data['steps'])}",
                "reason": r.reason,
                "forced": data["forced"],
            }
        ),
        _rollout_actions(r, csrf),
        tag("h2", "Step analysis"),
    ]
    reports = data["reports"]
    if not reports:
        parts.append(tag("p", "no step judged yet", class_="empty"))
    for n, report_id in enumerate(reports, 1):
        report = get_report(project.store, report_id)
        verdict = "pass" if report.passed else "fail"
        parts.append(tag("h3", join([f"Step judgement {n} ", status_badge(verdict)])))
        parts.append(report_table(report, id=f"step-{n}"))
    history = [
        (_when(h.get("at")), h.get("step", 0) + 1, h.get("what"), h.get("detail"))
        for h in data["history"]
    ]
    parts += [tag("h2", "History"), table(("at", "step", "what", "detail"), history, id="history")]
    return join(parts)


# -- monitoring -------------------------------------------------------------------------------


def monitor_page(
    project: Project,
    model: str | None,
    since: timedelta,
    window: timedelta,
    until: datetime | None = None,
    exact: bool = False,
) -> Markup:
    """Throughput, p95 latency and error rate per window (all versions), and per version,
    over ``since`` before ``until`` (default now). Windows of whole minutes read the
    per-minute rollups of the compacted hours (p95 within 1 %); ``exact`` reads every
    event."""
    end = until or datetime.now(UTC)
    report = project.monitoring.system(
        model, since=end - since, until=end, window=window, exact=exact
    )
    rolled = any(note.startswith("p50/p95/p99 from per-minute rollups") for note in report.notes)
    per_window: dict[str, dict[str, float]] = defaultdict(
        lambda: {"requests": 0.0, "errors": 0.0, "p95": 0.0}
    )
    per_version: dict[tuple[str, Any], dict[str, float]] = defaultdict(
        lambda: {"requests": 0.0, "errors": 0.0, "p95": 0.0}
    )
    for row in report.windows:
        requests = float(row.get("requests") or 0)
        errors = float(row.get("errors_4xx") or 0) + float(row.get("errors_5xx") or 0)
        for bucket in (per_window[row["window"]], per_version[(row["model"], row["version"])]):
            bucket["requests"] += requests
            bucket["errors"] += errors
            bucket["p95"] = max(bucket["p95"], float(row.get("p95_ms") or 0))
    # every window of the range, empty ones at zero: the charts span the range asked for
    step = window.total_seconds()
    first = int(report.since.timestamp() // step * step)
    xs = [float(t) for t in range(first, int(report.until.timestamp()) + 1, int(step))]
    by_time = {datetime.fromisoformat(t).timestamp(): b for t, b in per_window.items()}
    empty = {"requests": 0.0, "errors": 0.0, "p95": 0.0}
    buckets = [by_time.get(x, empty) for x in xs]
    rates = [b["requests"] / step for b in buckets]
    p95 = [b["p95"] if b["requests"] else None for b in buckets]
    error_rate = [b["errors"] / b["requests"] if b["requests"] else None for b in buckets]
    total = sum(b["requests"] for b in per_window.values())
    errors = sum(b["errors"] for b in per_window.values())
    version_rows = [
        (
            m,
            v,
            int(b["requests"]),
            int(b["errors"]),
            f"{b['errors'] / b['requests']:.2%}" if b["requests"] else None,
            round(b["p95"], 2),
        )
        for (m, v), b in sorted(per_version.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
    ]
    return join(
        [
            kv(
                {
                    "model": model or "every model",
                    "since": _when(report.since),
                    "requests": tag("span", int(total), id="total-requests"),
                    "errors": tag("span", int(errors), id="total-errors"),
                    "query": f"{report.seconds * 1000:.0f} ms (columnar copy + tail)",
                    "p95": tag(
                        "span",
                        (
                            "from per-minute rollups, within 1% of exact"
                            if rolled
                            else "exact, from every event"
                        ),
                        id="quantiles",
                    ),
                }
            ),
            chart("throughput", "Throughput (requests/s)", xs, {"requests/s": rates}, unit="req/s"),
            chart("latency", "Latency p95 (ms, worst version)", xs, {"p95": p95}, unit="ms"),
            chart("errors", "Error rate (4xx + 5xx)", xs, {"error rate": error_rate}),
            tag("h2", "Per version"),
            table(
                ("model", "version", "requests", "errors", "error rate", "p95 ms (worst window)"),
                version_rows,
                id="per-version",
            ),
        ]
    )


def drift_page(project: Project, model: str | None) -> Markup:
    """The latest recorded drift check per model: every feature's judgment, the CBPE
    estimate beside the realized metrics; with ``model`` named, each numeric feature's
    histogram of the reference window against the current one."""
    from conveyor.checks.persist import get_report
    from conveyor.monitoring.drift_live import DRIFT_CHECKED

    models = [model] if model else [m["name"] for m in project.registry.models()]
    parts: list[Any] = []
    for name in models:
        found = project.events.query(
            kind=DRIFT_CHECKED.name, subject=name, limit=1, descending=True
        )
        parts.append(tag("h2", link(f"/ui/drift?model={name}", name)))
        if not found.items:
            parts.append(
                tag("p", "no drift check recorded (conveyor monitor drift)", class_="empty")
            )
            continue
        event = found.items[0]
        payload = dict(event.payload)
        compared = payload.get("compared") or {}
        report = get_report(project.store, str(payload["report_id"]))
        metrics = payload.get("metrics") or {}
        parts.append(
            kv(
                {
                    "checked": _when(event.time),
                    "version": event.subject_version,
                    "verdict": status_badge(
                        "fail" if payload.get("verdict") == "failed" else "pass"
                    ),
                    "drifted features": ", ".join(payload.get("drifted") or []) or None,
                    "share of drifted features": payload.get("share"),
                    "reference": (compared.get("reference") or {}).get("description"),
                    "current": (compared.get("current") or {}).get("description"),
                }
            )
        )
        parts.append(report_table(report, id=f"drift-{name}"))
        if metrics:
            parts += [tag("h3", "Quality: CBPE estimate beside realized"), _quality(metrics, name)]
        if model:
            parts.append(_histograms(project, name, event.subject_version, compared))
    if model:
        parts.append(_quality_over_time(project, model))
    return join(parts)


def _quality_over_time(project: Project, model: str, limit: int = 100) -> Markup:
    """CBPE's estimated accuracy (the newest ``limit`` drift checks) beside the realized
    metric with its interval (the newest ``limit`` concept-drift judgments, from feedback),
    over time."""
    from conveyor.checks.persist import list_reports
    from conveyor.monitoring.drift_live import DRIFT_CHECKED

    estimated: dict[float, float] = {}
    checks = project.events.query(
        kind=DRIFT_CHECKED.name, subject=model, limit=limit, descending=True
    )
    for event in checks.items:
        value = (event.payload.get("metrics") or {}).get("cbpe.accuracy")
        if value is not None:
            estimated[event.time.timestamp()] = float(value)
    realized: dict[float, tuple[float, Any, Any]] = {}
    metric = "realized"
    judged = list_reports(
        project.store, subject=f"model:{model}", kind="concept_drift", limit=limit
    )
    for report in judged.items:
        for check in report.checks:
            observed = check.observed if isinstance(check.observed, dict) else {}
            if observed.get("current") is None:
                continue
            low, high = [*list(observed.get("interval") or []), None, None][:2]
            metric = check.name.removeprefix("concept_drift.")
            realized[report.created_at.timestamp()] = (float(observed["current"]), low, high)
    heading = tag("h3", "Quality over time: CBPE estimate beside realized")
    if not estimated and not realized:
        return join(
            [
                heading,
                tag(
                    "p",
                    "no CBPE estimate and no realized quality recorded yet "
                    "(drift checks of a classifier; conveyor monitor quality "
                    "--record)",
                    class_="empty",
                    id=f"quality-time-{model}",
                ),
            ]
        )
    xs = sorted({*estimated, *realized})
    rows = [
        (
            _when(datetime.fromtimestamp(x, UTC)),
            estimated.get(x),
            realized[x][0] if x in realized else None,
            _interval(realized[x][1:]) if x in realized else None,
        )
        for x in reversed(xs)
    ]
    return join(
        [
            heading,
            chart(
                f"quality-{model}",
                f"CBPE estimated accuracy and realized {metric}",
                xs,
                {
                    "CBPE accuracy (estimated)": [estimated.get(x) for x in xs],
                    f"{metric} (realized)": [realized[x][0] if x in realized else None for x in xs],
                    "realized low": [realized[x][1] if x in realized else None for x in xs],
                    "realized high": [realized[x][2] if x in realized else None for x in xs],
                },
            ),
            table(
                ("at", "CBPE accuracy", f"{metric} (realized)", "interval"),
                rows,
                id=f"quality-time-{model}",
            ),
        ]
    )


def _quality(metrics: dict[str, Any], model: str) -> Markup:
    rows = sorted(metrics.items())
    return table(("metric", "value"), rows, id=f"quality-{model}")


def _histograms(project: Project, model: str, version: Any, compared: dict[str, Any]) -> Markup:
    """Reference against current, per numeric input (shares of rows in 20 common bins),
    from the sampled inputs of the two windows the check compared."""
    import numpy as np

    from conveyor.monitoring.drift_live import _signature, live_rows

    reference, current = compared.get("reference") or {}, compared.get("current") or {}
    if reference.get("kind") != "window" or not current.get("since"):
        return tag(
            "p",
            "histograms: the check's reference is not a window of traffic "
            f"({reference.get('description')}); see the table above",
            class_="empty",
        )
    columns, _ = _signature(project.registry.get(model, int(version)))

    def rows(side: dict[str, Any]) -> Any:
        return live_rows(
            project,
            model,
            since=datetime.fromisoformat(side["since"]),
            until=datetime.fromisoformat(side["until"]),
            columns=columns,
            ordered=False,
        )

    ref_rows, cur_rows = rows(reference), rows(current)
    charts: list[Any] = [tag("h3", "Reference against current")]
    for name, _kind in columns:
        if name not in ref_rows.column_names or name not in cur_rows.column_names:
            continue
        try:
            a = np.asarray(ref_rows.column(name).to_numpy(zero_copy_only=False), dtype=float)
            b = np.asarray(cur_rows.column(name).to_numpy(zero_copy_only=False), dtype=float)
        except (TypeError, ValueError):
            continue  # not numeric
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if not a.size or not b.size:
            continue
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
        ref_share = np.histogram(a, edges)[0] / a.size
        cur_share = np.histogram(b, edges)[0] / b.size
        centers = ((edges[:-1] + edges[1:]) / 2).round(6).tolist()
        charts.append(
            chart(
                f"hist-{model}-{name}",
                f"{name}: reference ({a.size} rows) against current ({b.size} rows)",
                centers,
                {
                    "reference": ref_share.round(6).tolist(),
                    "current": cur_share.round(6).tolist(),
                },
                kind="bars",
                unit="share of rows",
            )
        )
    return join(charts)


# -- alerts -----------------------------------------------------------------------------------


def alerts_page(project: Project, csrf: str) -> Markup:
    from conveyor.monitoring.alerts.store import SqlStore

    rows = []
    for incident in SqlStore(project.store).incidents(limit=100):
        ack: Any = incident.acked_by
        if ack is None and incident.state in ("pending", "firing"):
            ack = form_button(f"/ui/alerts/{incident.id}/ack", "Acknowledge", csrf)
        rows.append(
            (
                incident.rule,
                incident.model,
                status_badge(incident.state),
                incident.severity,
                incident.value,
                f"{incident.op} {incident.threshold:g}",
                _when(incident.started_at),
                ack,
            )
        )
    return table(
        ("rule", "model", "state", "severity", "value", "threshold", "since", "acknowledged"),
        rows,
        id="alerts",
    )


# -- experiments ------------------------------------------------------------------------------


def experiments_page(project: Project) -> Markup:
    rows = [
        (
            link(f"/ui/experiments/{e.name}", e.name),
            e.model,
            ", ".join(e.labels),
            status_badge(e.status),
            _when(e.started_at),
        )
        for e in project.experiments.list()
    ]
    return table(("experiment", "model", "arms", "status", "started"), rows, id="experiments")


def experiment_page(project: Project, name: str) -> Markup:
    judged = project.experiments.analyze(name)
    primary = judged["primary"]
    parts: list[Any] = [
        kv(
            {
                "recommendation": status_badge(judged["recommendation"]),
                "why": judged["reason"],
                "planned per arm": judged["planned_n_per_arm"],
                "smallest arm": judged["smallest_arm_n"],
                "sample ratio": status_badge("fail" if judged["srm"].get("mismatch") else "pass"),
            }
        ),
        tag("h2", f"Primary metric: {primary['name']}"),
        _metric_table(primary, "primary"),
    ]
    for n, guard in enumerate(judged["guardrails"]):
        parts += [tag("h2", f"Guardrail: {guard['name']}"), _metric_table(guard, f"guard-{n}")]
    return join(parts)


def _metric_table(metric: dict[str, Any], id: str) -> Markup:
    rows = []
    for side in ("control", "treatment"):
        arm = metric.get(side) or {}
        ci = arm.get("ci") or [None, None]
        rows.append((side, arm.get("n"), arm.get("mean"), _interval(ci)))
    for test in ("fixed_horizon", "sequential"):
        got = metric.get(test) or {}
        low = got.get("ci_low", (got.get("ci") or [None, None])[0])
        high = got.get("ci_high", (got.get("ci") or [None, None])[1])
        rows.append(
            (
                f"difference ({test.replace('_', ' ')})",
                None,
                got.get("diff"),
                _interval([low, high]),
            )
        )
    return table(("", "n", "mean / difference", "interval"), rows, id=id)


def _interval(ci: Any) -> Any:
    low, high = [*list(ci), None, None][:2]
    if low is None or high is None:
        return None
    return f"[{low:.4g}, {high:.4g}]"


# -- feature flags ----------------------------------------------------------------------------


def _targets(match: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(match.items())) or "every request"


def _variant_traffic(
    project: Project, models: list[str], since: timedelta, until: datetime | None
) -> tuple[dict[tuple[str, str, Any], dict[str, float]], dict[str, float], Any]:
    """Requests and worst hourly p95 per (model, arm, version) of the models' answered
    predictions over ``since`` before ``until`` (a flag's are arm ``flag:NAME``), each
    model's total, and the report (None without a model)."""
    per: dict[tuple[str, str, Any], dict[str, float]] = defaultdict(
        lambda: {"requests": 0.0, "p95": 0.0}
    )
    totals: dict[str, float] = defaultdict(float)
    if not models:
        return per, totals, None
    end = until or datetime.now(UTC)
    report = project.monitoring.latency(since=end - since, until=end, window=timedelta(hours=1))
    for row in report.windows:
        if row["model"] not in models:
            continue
        bucket = per[(row["model"], row["arm"] or "-", row["version"])]
        bucket["requests"] += row["requests"]
        bucket["p95"] = max(bucket["p95"], float(row["p95_ms"] or 0.0))
        totals[row["model"]] += row["requests"]
    return per, totals, report


def flags_page(
    project: Project, csrf: str, since: timedelta, until: datetime | None = None
) -> Markup:
    """Every feature flag: its state, targets and rollout percentage, the traffic it sent
    to its version over ``since`` (from the prediction events: arm ``flag:NAME``), and the
    forms that ramp, target, kill and delete it (role of ``flags.manage``), and create one."""
    flags = project.flags.list()
    models = sorted({f["model"] for f in flags})
    per, totals, report = _variant_traffic(project, models, since, until)
    rows = []
    for f in flags:
        base = f"/ui/flags/{f['model']}/{f['name']}"
        via = per.get((f["model"], f"flag:{f['name']}", str(f["version"])), {}).get("requests", 0)
        share = via / totals[f["model"]] if totals.get(f["model"]) else None
        ramp = form_inputs(
            f"{base}/ramp",
            "Ramp" if f["state"] == "on" else "Turn on",
            csrf,
            [("percent", "number", f"{f['percent']:g}")],
        )
        target = form_inputs(f"{base}/target", "Target", csrf, [("match", "text", "")])
        actions: list[Any] = [ramp, target]
        if f["state"] == "on":
            actions.append(form_button(f"{base}/kill", "Kill", csrf, danger=True))
        actions.append(form_button(f"{base}/delete", "Delete", csrf, danger=True))
        rows.append(
            (
                f["model"],
                link(base, f["name"]),
                f"v{f['version']}",
                status_badge(f["state"]),
                _targets(f["match"]),
                f"{f['percent']:g}%",
                int(via),
                f"{share:.1%}" if share is not None else None,
                f["revision"],
                f["actor"],
                _when(f["updated_at"]),
                join(actions),
            )
        )
    variant_rows = [
        (
            model,
            arm,
            f"v{version}" if version is not None else None,
            int(b["requests"]),
            f"{b['requests'] / totals[model]:.1%}" if totals.get(model) else None,
            round(b["p95"], 2) if b["requests"] else None,
        )
        for (model, arm, version), b in sorted(per.items(), key=lambda kv: str(kv[0]))
    ]
    window = f"{_when(report.since)} to {_when(report.until)} UTC" if report is not None else None
    return join(
        [
            tag(
                "p",
                "A flag sends the requests that match its targets, and its rollout percentage "
                "of their sticky keys, to its version; killing it takes its rule off the "
                "live route in one revision.",
                class_="empty",
            ),
            table(
                (
                    "model",
                    "flag",
                    "version",
                    "state",
                    "targets",
                    "rollout",
                    "requests via the flag",
                    "share of the model's",
                    "revision",
                    "by",
                    "updated",
                    "",
                ),
                rows,
                id="flags",
            ),
            tag("h2", "Traffic per variant"),
            kv({"window": window, "read from": "prediction events (columnar copy + tail)"}),
            table(
                ("model", "arm", "version", "requests", "share", "p95 ms (worst hour)"),
                variant_rows,
                id="flag-traffic",
            ),
            tag("h2", "New flag"),
            form_inputs(
                "/ui/flags",
                "Create",
                csrf,
                [
                    ("model", "text", ""),
                    ("name", "text", ""),
                    ("version", "text", ""),
                    ("match", "text", ""),
                    ("percent", "number", "0"),
                ],
                id="create-flag",
            ),
        ]
    )


def flag_page(project: Project, model: str, name: str, csrf: str) -> Markup:
    """One flag and its history (every change, who and why, the route revision it made)."""
    f = project.flags.show(model, name)
    history = [
        (
            h["revision"],
            h["action"],
            _targets(h["flag"].get("match") or {}),
            f"{h['flag'].get('percent', 0):g}%",
            h["flag"].get("state"),
            h["route_revision"],
            h["actor"],
            h["reason"],
            _when(h["at"]),
        )
        for h in f["history"]
    ]
    return join(
        [
            kv(
                {
                    "model": link(f"/ui/routes#{model}", model),
                    "version": f"v{f['version']}",
                    "state": status_badge(f["state"]),
                    "targets": _targets(f["match"]),
                    "rollout": f"{f['percent']:g}%",
                    "revision": f["revision"],
                    "description": f["description"],
                    "created": _when(f["created_at"]),
                }
            ),
            tag("h2", "History"),
            table(
                (
                    "revision",
                    "change",
                    "targets",
                    "rollout",
                    "state",
                    "route revision",
                    "by",
                    "reason",
                    "at",
                ),
                history,
                id="flag-history",
            ),
        ]
    )


# -- readiness --------------------------------------------------------------------------------


def readiness_page(project: Project) -> Markup:
    from conveyor.readiness.report import latest_readiness

    report = latest_readiness(project)
    if report is None:
        return tag("p", "no readiness report yet (conveyor readiness)", class_="empty")
    verdict = "pass" if report.passed else "fail"
    return join(
        [
            kv({"made": _when(report.created_at), "verdict": status_badge(verdict)}),
            report_table(report, id="readiness"),
        ]
    )
