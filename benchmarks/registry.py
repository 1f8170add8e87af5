"""Model registry: Conveyor's Registry vs MLflow's model registry, SQLite and PostgreSQL.

    .venv/bin/python benchmarks/registry.py --backends sqlite,postgres --sizes 10000,100000

For each backend and size, each tool gets a fresh database (a file in a temp
dir, or a PostgreSQL database created and dropped for it) filled with N
versions of one model (``peers/registry_workload.py``: version 1 through the
tool's API, the rest by bulk INSERT through the tool's own tables, so that a
100,000-version registry takes seconds, not hours; what matters for lookups
is the number of versions present). Then every measure runs in a fresh
process of the tool's own virtualenv, in the same run for both tools, with a
time budget: calls repeat until their count or the budget is reached, and a
call still running at the budget is abandoned (process killed, its
PostgreSQL sessions terminated), recorded as "timed out after N s" when no
call finished. Registration throughput is measured last, as calls on top of
the N versions. Results: ``results/registry.json``; the table shows medians
and Conveyor's advantage (how many times better; >1 is better).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from peers.registry_workload import MEASURES, SAMPLE, Sizes
from rich.table import Table

PEERS = ("mlflow",)
TOOLS = ("conveyor", "mlflow")
BACKEND_NAMES = {"sqlite": "sqlite", "postgres": "postgresql", "postgresql": "postgresql"}
DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_BUDGET = 30.0
#: Seconds a side may take to start (imports, first connection) before its clock starts.
STARTUP_TIMEOUT = 120.0
FILL_TIMEOUT = 900.0

Log = Callable[[str], None]

# (key, label, unit, measure, statistic)
ROWS = (
    ("register", "register one version per call", "versions/s", "register", "per_s"),
    (
        "register_batch",
        "register in batches of 100 (MLflow: single calls, it has no batch API)",
        "versions/s",
        "register_batch",
        "per_s",
    ),
    ("alias", "alias lookup, median", "ms", "alias", "median_ms"),
    ("alias_p99", "alias lookup, p99", "ms", "alias", "p99_ms"),
    ("first_page", "first page of 100, median", "ms", "first_page", "median_ms"),
    ("tagged_page", "page of 100 filtered by tag, median", "ms", "tagged_page", "median_ms"),
    ("all_versions", "every version, pages of 1,000", "ms", "all_versions", "median_ms"),
)

NOTES = [
    "Fill: version 1 through each tool's API, versions 2..N by bulk INSERT through the tool's "
    "own table definitions (10,000 rows a transaction), copying version 1's row with its own "
    "number, time and tags; then the alias on version N/2. On PostgreSQL, ANALYZE after the "
    "fill on both sides (what autovacuum does to a grown table). Conveyor's bulk rows carry "
    "distinct artifact digests whose bytes are not stored (no measured read loads a model).",
    "Each measure runs in a fresh process after one untimed warm-up call; reads run before "
    "the registrations, on exactly N versions. A measure stops at its call count or its time "
    "budget; a call still running at the budget is abandoned and, if none finished, the "
    "measure is recorded as timed out.",
    "Conveyor's register() pickles a small PythonModel and stores it content-addressed "
    "(sha256) before writing the version row; MLflow's create_model_version records a source "
    "URI and stores no bytes. Both commit every registration on its own (SQLite: WAL with "
    "synchronous=FULL for Conveyor, MLflow's defaults).",
    "register_batch is conveyor.registry.batch.register_many: every artifact, then every row "
    "in one transaction (one commit, one fsync per batch). MLflow has no batch registration "
    "API: its column there repeats its single-call rate.",
    "Conveyor runs without an event log (MLflow writes none); with one, each registration "
    "also emits a durable model.registered event (a batch emits them in one append).",
    "Alias lookups return the whole version (tags, signature, lineage) on both sides.",
]


# -- running one side -----------------------------------------------------------


def _run_side(
    python: Path,
    script: str,
    args: Sequence[str],
    *,
    label: str,
    budget: float | None,
    on_kill: Callable[[], None] = lambda: None,
    log: Log = print,
) -> dict[str, Any]:
    """Run a side; return its samples, its RESULT JSON, and whether it hit the budget.

    ``budget`` counts from the side's ``<label>: ready`` line; None waits for
    the side to end (up to FILL_TIMEOUT).
    """
    import json

    env = {**os.environ, **harness.PEER_ENV}
    ready = threading.Event()
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [str(python), str(harness.PEER_SCRIPTS / script), *args],
            cwd=harness.PEER_SCRIPTS,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )

        def follow() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if line.startswith(f"{label}: ready"):
                    ready.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        killed = False
        started = time.monotonic()
        if budget is None:
            try:
                proc.wait(timeout=FILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                on_kill()
                raise RuntimeError(f"{label}: no result after {FILL_TIMEOUT:.0f} s") from None
        else:
            while not ready.wait(0.05):
                if proc.poll() is not None:
                    break
                if time.monotonic() - started > STARTUP_TIMEOUT:
                    proc.kill()
                    proc.wait()
                    on_kill()
                    raise RuntimeError(f"{label}: not ready after {STARTUP_TIMEOUT:.0f} s")
            try:
                proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed = True
                on_kill()
        reader.join(timeout=10)
        if not killed and proc.returncode != 0:
            tail = "".join(lines[-40:])
            raise RuntimeError(f"{label} side failed (exit {proc.returncode}):\n{tail}")
        out.seek(0)
        samples: list[float] = []
        result: dict[str, Any] = {}
        for line in out:
            if line.startswith(SAMPLE) and line.endswith("\n"):
                samples.append(float(line[len(SAMPLE) :]))
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
    return {"samples": samples, "killed": killed, "result": result}


def _stats(measure: str, run: dict[str, Any], s: Sizes, budget: float) -> dict[str, Any]:
    samples: list[float] = run["samples"]
    if not samples:
        return {"timed_out_after_s": budget, "calls": 0}
    ordered = sorted(samples)
    stats: dict[str, Any] = {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)] * 1e3,
        "calls": len(samples),
        "total_s": sum(samples),
        "stopped_at_budget": run["killed"] or sum(samples) >= budget,
    }
    if measure == "register":
        stats["per_s"] = len(samples) / sum(samples)
    elif measure == "register_batch":
        stats["batch"] = s.batch
        stats["per_s"] = len(samples) * s.batch / sum(samples)
    return stats


@contextmanager
def _databases(backend: str, scratch: Path) -> Iterator[dict[str, str]]:
    if backend == "sqlite":
        yield {tool: f"sqlite:///{scratch / f'{tool}.db'}" for tool in TOOLS}
        return
    with (
        harness.postgres_database("reg_conveyor") as conveyor_url,
        harness.postgres_database("reg_mlflow") as mlflow_url,
    ):
        yield {"conveyor": conveyor_url, "mlflow": mlflow_url}


def _terminate_sessions(url: str) -> Callable[[], None]:
    """After a killed side, end its PostgreSQL sessions: an abandoned query must not run on."""
    if not url.startswith("postgresql"):
        return lambda: None

    def terminate() -> None:
        import psycopg

        from conveyor.backends import BackendURL

        database = BackendURL.parse(url).path.lstrip("/")
        admin = BackendURL.parse(harness.POSTGRES_URL).with_(driver=None)
        with psycopg.connect(admin.render(hide_password=False), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )

    return terminate


# -- the benchmark --------------------------------------------------------------


def _one(
    backend: str, s: Sizes, budget: float, pythons: dict[str, Path], log: Log
) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.perf_counter()
    out: dict[str, Any] = {"fill": {}, "measures": {t: {} for t in TOOLS}, "tool_versions": {}}
    with (
        tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp,
        _databases(backend, Path(tmp)) as urls,
    ):
        workdirs = {t: Path(tmp) / t for t in TOOLS}

        def args(tool: str, *more: str) -> list[str]:
            workdirs[tool].mkdir(exist_ok=True)
            return [
                "--url",
                urls[tool],
                "--workdir",
                str(workdirs[tool]),
                "--sizes",
                s.to_json(),
                *more,
            ]

        for tool in TOOLS:
            log(f"registry: {backend}, {s.versions:,} versions: filling {tool}")
            t0 = time.perf_counter()
            run = _run_side(
                pythons[tool],
                f"{tool}_registry.py",
                args(tool, "--phase", "fill"),
                label=tool,
                budget=None,
                log=log,
            )
            out["fill"][tool] = {"seconds": time.perf_counter() - t0}
            out["tool_versions"][tool] = run["result"].get("version")
        for i, measure in enumerate(MEASURES):
            order = TOOLS if i % 2 == 0 else TOOLS[::-1]
            for tool in order:
                if tool == "mlflow" and measure == "register_batch":
                    continue  # no batch API
                run = _run_side(
                    pythons[tool],
                    f"{tool}_registry.py",
                    args(tool, "--phase", "measure", "--measure", measure, "--budget", str(budget)),
                    label=tool,
                    budget=budget,
                    on_kill=_terminate_sessions(urls[tool]),
                    log=log,
                )
                stats = _stats(measure, run, s, budget)
                out["measures"][tool][measure] = stats
                log(f"registry: {backend}, {s.versions:,}: {tool} {measure}: {_brief(stats)}")
    out["seconds"] = time.perf_counter() - started
    out["loadavg_before"] = load_before
    out["loadavg_after"] = os.getloadavg()
    return out


def _brief(stats: dict[str, Any]) -> str:
    if "timed_out_after_s" in stats:
        return f"timed out after {stats['timed_out_after_s']:.0f} s"
    text = f"median {stats['median_ms']:.3g} ms over {stats['calls']} calls"
    if "per_s" in stats:
        text += f", {stats['per_s']:,.0f}/s"
    return text + (" (stopped at the budget)" if stats["stopped_at_budget"] else "")


def run(
    *,
    quick: bool,
    pythons: dict[str, Path],
    backends: tuple[str, ...] = ("sqlite", "postgresql"),
    sizes: tuple[int, ...] | None = None,
    budget: float = DEFAULT_BUDGET,
    log: Log = print,
    **_: Any,
) -> dict[str, Any]:
    """Measure both tools on every backend and size; write and return ``results/registry.json``."""
    backends = tuple(BACKEND_NAMES[b] for b in backends)
    sizes = sizes or ((300,) if quick else DEFAULT_SIZES)
    interpreters = {**pythons, "conveyor": Path(sys.executable)}
    started = time.perf_counter()
    load_before = os.getloadavg()
    machine = harness.machine()  # the commit measured, before others commit during the run
    configs: list[dict[str, Any]] = []
    shape: Sizes | None = None
    for backend in backends:
        for n in sizes:
            s = Sizes.quick(n) if quick else replace(Sizes(), versions=n)
            shape = shape or s
            configs.append(
                {"backend": backend, "versions": n, **_one(backend, s, budget, interpreters, log)}
            )
    assert shape is not None
    result: dict[str, Any] = {
        "benchmark": "registry",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "backends": list(backends),
        "sizes": list(sizes),
        "budget_s": budget,
        "workload": {k: v for k, v in asdict(shape).items() if k != "versions"},
        "machine": machine,
        "load": {
            "loadavg_1_5_15_before": load_before,
            "loadavg_1_5_15_after": os.getloadavg(),
            "seconds": time.perf_counter() - started,
        },
        "postgresql": harness.postgres_version() if "postgresql" in backends else None,
        "tools": {
            tool: {
                "version": configs[0]["tool_versions"].get(tool),
                "python": harness.python_version(interpreters[tool]),
            }
            for tool in TOOLS
        },
        "comparisons": _comparisons(configs),
        "flatness": _flatness(configs, sizes),
        "notes": NOTES,
        "configs": configs,
    }
    result["path"] = str(harness.write_result("registry", result).relative_to(harness.ROOT))
    return result


def _comparisons(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        for key, label, unit, measure, stat in ROWS:
            c = config["measures"]["conveyor"].get(measure, {})
            # MLflow has no batch API: its batch row is its single-call rate.
            m_measure = "register" if measure == "register_batch" else measure
            m = config["measures"]["mlflow"].get(m_measure, {})
            cv, mv = c.get(stat), m.get(stat)
            higher_is_better = unit.endswith("/s")
            advantage = None
            if cv and mv:
                advantage = cv / mv if higher_is_better else mv / cv
            rows.append(
                {
                    "backend": config["backend"],
                    "versions": config["versions"],
                    "key": key,
                    "measure": label,
                    "unit": unit,
                    "conveyor": cv,
                    "mlflow": mv,
                    "conveyor_timed_out_after_s": c.get("timed_out_after_s"),
                    "mlflow_timed_out_after_s": m.get("timed_out_after_s"),
                    # How many times better Conveyor is (>1 means better).
                    "advantage": advantage,
                }
            )
    return rows


def _flatness(configs: list[dict[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Each tool's median at the largest size over the smallest (1.0 = flat)."""
    if len(sizes) < 2:
        return []
    small, large = min(sizes), max(sizes)
    rows = []
    for backend in dict.fromkeys(c["backend"] for c in configs):
        by_size = {c["versions"]: c for c in configs if c["backend"] == backend}
        for tool in TOOLS:
            for measure in ("alias", "first_page", "tagged_page", "register", "register_batch"):
                a = by_size[small]["measures"][tool].get(measure, {}).get("median_ms")
                b = by_size[large]["measures"][tool].get(measure, {}).get("median_ms")
                rows.append(
                    {
                        "backend": backend,
                        "tool": tool,
                        "measure": measure,
                        f"median_ms_{small}": a,
                        f"median_ms_{large}": b,
                        "ratio": b / a if a and b else None,
                    }
                )
    return [r for r in rows if r[f"median_ms_{small}"] is not None or r["tool"] == "mlflow"]


def _cell(value: float | None, timed_out: float | None) -> str:
    if value is None:
        return f"timed out after {timed_out:.0f} s" if timed_out else "-"
    return f"{value:,.3g}" if value < 100 else f"{value:,.0f}"


def summary(result: dict[str, Any]) -> Table:
    load = result["load"]
    table = Table(
        title=f"registry: Conveyor {result['tools']['conveyor']['version']} vs "
        f"MLflow {result['tools']['mlflow']['version']}; medians, budget "
        f"{result['budget_s']:.0f} s a measure; load average "
        f"{load['loadavg_1_5_15_before'][0]:.1f} -> {load['loadavg_1_5_15_after'][0]:.1f} "
        f"on {result['machine']['nproc']} cores",
        title_justify="left",
    )
    for column in ("backend", "versions", "measure", "unit", "Conveyor", "MLflow", "advantage"):
        table.add_column(column, justify="left" if column in ("backend", "measure") else "right")
    for row in result["comparisons"]:
        adv = row["advantage"]
        table.add_row(
            row["backend"],
            f"{row['versions']:,}",
            row["measure"],
            row["unit"],
            _cell(row["conveyor"], row["conveyor_timed_out_after_s"]),
            _cell(row["mlflow"], row["mlflow_timed_out_after_s"]),
            f"{adv:.1f}x" if adv is not None else "-",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument(
        "--sizes", help="versions, comma-separated (default: 10000,100000; 300 with --quick)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help="seconds per measure and tool (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small workload, for a smoke run")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)

    def log(message: str) -> None:
        console.print(message, highlight=False, markup=False)

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in BACKEND_NAMES]
    if unknown:
        parser.error(f"unknown backend {unknown[0]!r}: use sqlite and/or postgres")
    sizes = tuple(int(n) for n in (args.sizes or "").split(",") if n.strip()) or None
    pythons = {peer: harness.ensure_venv(peer, log=log) for peer in PEERS}
    result = run(
        quick=args.quick,
        pythons=pythons,
        backends=backends,
        sizes=sizes,
        budget=args.budget,
        log=log,
    )
    console.print(summary(result))
    log(f"registry: {result['load']['seconds']:.0f} s, written to {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
