"""Tracking: Conveyor's metadata store, event log and artifact store vs MLflow's tracking store.

The same workload (``peers/workload.py``) runs for both tools, each in its
own virtualenv and a fresh process (``peers/conveyor_tracking.py`` and
``peers/mlflow_tracking.py``), on SQLite (a file in a temp dir) and on the
real PostgreSQL (a fresh database per tool and run, dropped afterwards).
Results go to ``results/tracking.json``; the table shows Conveyor / MLflow.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
from peers.workload import Sizes
from rich.table import Table

PEERS = ("mlflow",)
BACKENDS = ("sqlite", "postgresql")
TOOLS = ("mlflow", "conveyor")

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Measure:
    """One line of the table: a number each tool reports for the same work."""

    key: str
    """Unique id, ``<workload>.<what>``, as written to the JSON."""
    label: str
    unit: str
    conveyor: str
    """Dotted path into Conveyor's results."""
    mlflow: str | None
    """Dotted path into MLflow's results; None when MLflow has no counterpart."""

    @property
    def workload(self) -> str:
        return self.key.partition(".")[0]

    @property
    def higher_is_better(self) -> bool:
        return self.unit != "ms"


def _m(key: str, label: str, unit: str, conveyor: str, mlflow: str | None = "") -> Measure:
    """A measure; MLflow's path defaults to Conveyor's (same workload, same key)."""
    return Measure(key, label, unit, conveyor, conveyor if mlflow == "" else mlflow)


_COMMITTED, _BACKGROUND, _BATCH = "points_committed", "points_background", "points_batch"
# fmt: off
MEASURES = (
    _m("runs.rate", "create runs: 10 params, 10 metrics, end", "runs/s", "runs.per_s"),
    _m("runs.median", "  per run, median", "ms", "runs.per_run.median_ms"),
    _m("runs.p99", "  per run, p99", "ms", "runs.per_run.p99_ms"),
    _m("runs.rate_4_calls", "  Conveyor in 4 calls (params apart)", "runs/s",
       "runs_4_calls.per_s", "runs.per_s"),
    _m("reading.first_page", "list runs: first page of 100", "ms", "list.first_page_ms"),
    _m("reading.all_pages", "list runs: every page", "ms", "list.all_pages_ms"),
    _m("points.defaults", "defaults: emit()+close() vs log_metric()", "points/s",
       f"{_BACKGROUND}.per_s", f"{_COMMITTED}.per_s"),
    _m("points.committed", "one call each, committed on return", "points/s",
       f"{_COMMITTED}.per_s"),
    _m("points.committed_median", "  per call, median", "ms", f"{_COMMITTED}.call.median_ms"),
    _m("points.committed_p99", "  per call, p99", "ms", f"{_COMMITTED}.call.p99_ms"),
    _m("points.background", "one call each, background writer", "points/s",
       f"{_BACKGROUND}.per_s"),
    _m("points.background_median", "  per call, median", "ms", f"{_BACKGROUND}.call.median_ms"),
    _m("points.background_p99", "  per call, p99", "ms", f"{_BACKGROUND}.call.p99_ms"),
    _m("points.background_buffered", "  vs MLflow with 1 s buffering", "points/s",
       f"{_BACKGROUND}.per_s", "points_background_buffered.per_s"),
    _m("points.batch", "batches of 1,000, committed", "points/s", f"{_BATCH}.per_s"),
    _m("points.batch_median", "  per batch, median", "ms", f"{_BATCH}.call.median_ms"),
    _m("artifacts.big_write", "20 MiB file: write", "MiB/s", "artifacts.big_write.per_s"),
    _m("artifacts.big_read", "20 MiB file: read to a file", "MiB/s", "artifacts.big_read.per_s"),
    _m("artifacts.big_get", "20 MiB file: get() to memory", "MiB/s",
       "artifacts.big_get.per_s", None),
    _m("artifacts.small_write", "10 KiB files: write", "files/s", "artifacts.small_write.per_s"),
    _m("artifacts.small_write_attach", "10 KiB files: write, attach to run", "files/s",
       "artifacts.small_write_recorded.per_s", "artifacts.small_write.per_s"),
    _m("artifacts.small_read", "10 KiB files: read to files", "files/s",
       "artifacts.small_read.per_s"),
    _m("artifacts.small_get", "10 KiB files: get() to memory", "files/s",
       "artifacts.small_get.per_s", None),
)
# fmt: on

# MLflow-only numbers: shown under the table, no Conveyor counterpart.
MLFLOW_ONLY = (
    ("10 KiB files: log_artifacts(folder), one call", "files/s", "artifacts.small_dir_write.per_s"),
    (
        "10 KiB files: download_artifacts(folder), one call",
        "files/s",
        "artifacts.small_dir_read.per_s",
    ),
)

NOTES = [
    "Medians of repeated measurements where repetition is cheap; ratios are Conveyor / MLflow.",
    "'committed on return': MLflow log_metric (synchronous, its default) vs Conveyor "
    "emit(durable=True); MLflow logs 10,000 points this way, Conveyor 1,000 (durable_points).",
    "'background writer': MLflow log_metric(synchronous=False) + flush_async_logging vs "
    "Conveyor emit() + close(), both timed until every point is committed.",
    "'defaults': each tool's default per-point call, timed until committed.",
    "'with 1 s buffering': MLflow's async queue with MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1, "
    "which merges queued points into batches (by default it writes each point on its own).",
    "Conveyor's download() fsyncs the file before renaming it into place; MLflow's "
    "download_artifacts copies without fsync. Reads come from the page cache for both.",
    "MLflow's log_artifact attaches the file to the run by folder; Conveyor's put() only "
    "stores bytes, so 'write and attach' adds runs.add_artifact (a metadata transaction).",
]


# -- running both sides -------------------------------------------------------


@contextmanager
def _database(backend: str, tool: str, scratch: Path) -> Iterator[tuple[str, str]]:
    """(store URL, events URL) for one tool and run, on a fresh database."""
    if backend == "sqlite":
        # The layout of `conveyor init`: metadata and events in two files.
        yield f"sqlite:///{scratch / f'{tool}.db'}", f"sqlite:///{scratch / f'{tool}-events.db'}"
        return
    with harness.postgres_database(tool) as url:
        yield url, url


def _run_tool(tool: str, backend: str, sizes: Sizes, python: Path, log: Log) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as tmp,
        _database(backend, tool, Path(tmp)) as (store_url, events_url),
    ):
        common = ["--workdir", tmp, "--sizes", sizes.to_json()]
        if tool == "mlflow":
            script = harness.PEER_SCRIPTS / "mlflow_tracking.py"
            args = ["--tracking-uri", store_url, *common]
        else:
            script = harness.PEER_SCRIPTS / "conveyor_tracking.py"
            args = ["--store-url", store_url, "--events-url", events_url, *common]
        return harness.run_side(python, script, args, label=tool, log=log)


# One round: {backend: {tool: what its side printed}}.
Round = dict[str, dict[str, Any]]


def run(
    *,
    quick: bool,
    pythons: dict[str, Path],
    backends: tuple[str, ...] = BACKENDS,
    rounds: int | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure both tools on every backend; write and return ``results/tracking.json``.

    Each round runs every side once, and the tools swap order from round to
    round: on a shared machine a burst of someone else's work then lands on
    both tools alike. Every number reported is the median over rounds.
    """
    sizes = Sizes.quick() if quick else Sizes()
    rounds = rounds or (1 if quick else 3)
    interpreters = {**pythons, "conveyor": Path(sys.executable)}
    raw: list[Round] = []
    for r in range(rounds):
        order = TOOLS if r % 2 == 0 else TOOLS[::-1]
        raw.append({})
        for backend in backends:
            raw[r][backend] = {}
            for tool in order:
                log(f"tracking: round {r + 1}/{rounds}, {tool} on {backend}")
                raw[r][backend][tool] = _run_tool(tool, backend, sizes, interpreters[tool], log)
    result = _report(raw, sizes, quick, interpreters)
    result["path"] = str(harness.write_result("tracking", result).relative_to(harness.ROOT))
    return result


def _report(
    raw: list[Round], sizes: Sizes, quick: bool, pythons: dict[str, Path]
) -> dict[str, Any]:
    first = next(iter(raw[0].values()))
    backends = list(raw[0])
    return {
        "benchmark": "tracking",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "rounds": len(raw),
        "backends": backends,
        "machine": harness.machine(),
        "postgresql": harness.postgres_version() if "postgresql" in backends else None,
        "sizes": asdict(sizes),
        "tools": {
            tool: {
                "version": first[tool]["version"],
                "python": harness.python_version(pythons[tool]),
                "api": _apis(first[tool]["results"]),
            }
            for tool in TOOLS
        },
        "comparisons": _comparisons(raw),
        "mlflow_only": _mlflow_only(raw),
        "notes": NOTES,
        "rounds_results": [
            {b: {t: rnd[b][t]["results"] for t in TOOLS} for b in rnd} for rnd in raw
        ],
    }


def _apis(results: dict[str, Any]) -> dict[str, str]:
    """Every ``api*`` string a side reported, keyed by workload."""
    out = {}
    for name, section in results.items():
        for key, value in section.items():
            if key.startswith("api"):
                out[name + key[3:]] = value
    return out


def _lookup(results: dict[str, Any], path: str | None) -> float | None:
    if path is None:
        return None
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node)


def _samples(raw: list[Round], backend: str, tool: str, path: str | None) -> list[float]:
    """The value at ``path`` in every round (empty when the tool has no such number)."""
    values = [_lookup(rnd[backend][tool]["results"], path) for rnd in raw]
    return [v for v in values if v is not None]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _comparisons(raw: list[Round]) -> list[dict[str, Any]]:
    rows = []
    for backend in raw[0]:
        for m in MEASURES:
            conveyor = _samples(raw, backend, "conveyor", m.conveyor)
            mlflow = _samples(raw, backend, "mlflow", m.mlflow)
            c, f = _median(conveyor), _median(mlflow)
            rows.append(
                {
                    "key": m.key,
                    "workload": m.workload,
                    "measure": m.label.strip(),
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "backend": backend,
                    "conveyor": c,
                    "mlflow": f,
                    "ratio": c / f if c is not None and f else None,
                    "conveyor_rounds": conveyor,
                    "mlflow_rounds": mlflow,
                }
            )
    return rows


def _mlflow_only(raw: list[Round]) -> list[dict[str, Any]]:
    return [
        {
            "measure": label,
            "unit": unit,
            "backend": backend,
            "mlflow": _median(_samples(raw, backend, "mlflow", path)),
        }
        for backend in raw[0]
        for label, unit, path in MLFLOW_ONLY
    ]


# -- the table ----------------------------------------------------------------


def summary(result: dict[str, Any]) -> Table:
    """One line per measure, one column group per backend."""
    backends = result["backends"]
    tools = result["tools"]
    title = (
        f"Tracking: Conveyor {tools['conveyor']['version']} vs MLflow {tools['mlflow']['version']}"
        f" ({result['machine']['nproc']} cores, Python {result['machine']['python']}"
        f", median of {result['rounds']} round(s){', quick sizes' if result['quick'] else ''})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("unit")
    for backend in backends:
        table.add_column(f"{backend}\nConveyor", justify="right")
        table.add_column(f"{backend}\nMLflow", justify="right")
        table.add_column(f"{backend}\nratio", justify="right")
    cells = {(r["backend"], r["key"]): r for r in result["comparisons"]}
    previous = None
    for m in MEASURES:
        if previous is not None and m.workload != previous:
            table.add_section()
        previous = m.workload
        row = [m.label, m.unit + (" ↑" if m.higher_is_better else " ↓")]
        for backend in backends:
            r = cells[(backend, m.key)]
            row += [_fmt(r["conveyor"]), _fmt(r["mlflow"]), _ratio(r["ratio"], m.higher_is_better)]
        table.add_row(*row)
    table.add_section()
    for label, unit, _ in MLFLOW_ONLY:
        row = [f"MLflow only: {label}", unit + " ↑"]
        for backend in backends:
            value = next(
                x["mlflow"]
                for x in result["mlflow_only"]
                if x["backend"] == backend and x["measure"] == label
            )
            row += ["", _fmt(value), ""]
        table.add_row(*row)
    table.caption = (
        "ratio = Conveyor / MLflow; ↑ higher is better, ↓ lower is better. " + result["path"]
    )
    table.caption_justify = "left"
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _ratio(ratio: float | None, higher_is_better: bool) -> str:
    if ratio is None:
        return "—"
    better = ratio > 1 if higher_is_better else ratio < 1
    text = f"{ratio:.2g}x" if ratio < 1 else f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"
    return f"[green]{text}[/]" if better else f"[red]{text}[/]"
