"""Model registry: Conveyor's Registry vs MLflow's model registry, on SQLite (and PostgreSQL).

Both sides run the workload of ``peers/registry_workload.py`` in a fresh
process of their own virtualenv (``peers/conveyor_registry.py`` and
``peers/mlflow_registry.py``): register N versions of one model with two
tags each, point an alias at the middle one, then time alias lookups, the
first page of 100 versions, a tag-filtered page, and reading every version
in pages of 1,000. Results go to ``results/registry.json``; the table shows
medians over rounds and the ratio Conveyor / MLflow (higher is better for
rates, lower for times).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import harness
from peers.registry_workload import Sizes
from rich.table import Table

PEERS = ("mlflow",)
BACKENDS = ("sqlite", "postgresql")
TOOLS = ("mlflow", "conveyor")

Log = Callable[[str], None]

# (key, label, unit, path into a side's results)
MEASURES = (
    ("register", "register a version", "versions/s", "register.per_s"),
    ("alias", "alias lookup, median", "ms", "alias.median_ms"),
    ("alias_p99", "alias lookup, p99", "ms", "alias.p99_ms"),
    ("first_page", "first page of 100, median", "ms", "first_page.median_ms"),
    ("tagged_page", "page of 100 filtered by tag, median", "ms", "tagged_page.median_ms"),
    ("all_versions", "every version, pages of 1,000", "ms", "all_versions.median_ms"),
    ("process", "whole process (import, register, reads)", "s", "process_s"),
    ("rss", "peak RSS of the process", "MiB", "peak_rss_mib"),
)

NOTES = [
    "Conveyor's register() pickles a small PythonModel and stores it content-addressed "
    "(sha256) before writing the version row; MLflow's create_model_version records a "
    "source URI and stores no bytes.",
    "Conveyor runs without an event log here (MLflow writes none); with one, each "
    "registration also emits a durable model.registered event.",
    "Both commit every registration on its own (SQLite: WAL with synchronous=FULL for "
    "Conveyor, MLflow's defaults): registration rates are bound by fsync on this disk.",
    "Alias lookups return the whole version (tags, signature, lineage) on both sides.",
]


@contextmanager
def _database(backend: str, tool: str, scratch: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{scratch / f'{tool}.db'}"
        return
    with harness.postgres_database(f"reg_{tool}") as url:
        yield url


def _run_tool(tool: str, backend: str, sizes: Sizes, python: Path, log: Log) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-registry-{tool}-") as tmp,
        _database(backend, tool, Path(tmp)) as url,
    ):
        common = ["--workdir", tmp, "--sizes", sizes.to_json()]
        if tool == "mlflow":
            script = harness.PEER_SCRIPTS / "mlflow_registry.py"
            args = ["--uri", url, *common]
        else:
            script = harness.PEER_SCRIPTS / "conveyor_registry.py"
            args = ["--store-url", url, *common]
        start = time.perf_counter()
        side = harness.run_side(python, script, args, label=tool, log=log)
        side["results"]["process_s"] = time.perf_counter() - start
        return side


def run(
    *,
    quick: bool,
    pythons: dict[str, Path],
    backends: tuple[str, ...] = ("sqlite",),
    rounds: int | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure both tools; write and return ``results/registry.json``.

    SQLite by default (``--backend postgresql`` adds the real PostgreSQL).
    Tools alternate order from round to round; numbers are medians over rounds.
    """
    sizes = Sizes.quick() if quick else Sizes()
    rounds = rounds or 1
    interpreters = {**pythons, "conveyor": Path(sys.executable)}
    raw: list[dict[str, dict[str, Any]]] = []
    for r in range(rounds):
        order = TOOLS if r % 2 == 0 else TOOLS[::-1]
        raw.append({})
        for backend in backends:
            raw[r][backend] = {}
            for tool in order:
                log(f"registry: round {r + 1}/{rounds}, {tool} on {backend}, {sizes.versions:,}")
                raw[r][backend][tool] = _run_tool(tool, backend, sizes, interpreters[tool], log)
    first = next(iter(raw[0].values()))
    result: dict[str, Any] = {
        "benchmark": "registry",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "rounds": rounds,
        "backends": list(backends),
        "machine": harness.machine(),
        "postgresql": harness.postgres_version() if "postgresql" in backends else None,
        "sizes": asdict(sizes),
        "tools": {
            tool: {
                "version": first[tool]["version"],
                "python": harness.python_version(interpreters[tool]),
                "api": {
                    k: v["api"]
                    for k, v in first[tool]["results"].items()
                    if isinstance(v, dict) and "api" in v
                },
            }
            for tool in TOOLS
        },
        "comparisons": _comparisons(raw, backends),
        "notes": NOTES,
        "rounds_results": [
            {b: {t: rnd[b][t]["results"] for t in TOOLS} for b in rnd} for rnd in raw
        ],
    }
    result["path"] = str(harness.write_result("registry", result).relative_to(harness.ROOT))
    return result


def _lookup(results: dict[str, Any], path: str) -> float:
    node: Any = results
    for part in path.split("."):
        node = node[part]
    return float(node)


def _comparisons(
    raw: list[dict[str, dict[str, Any]]], backends: tuple[str, ...]
) -> list[dict[str, Any]]:
    rows = []
    for backend in backends:
        for key, label, unit, path in MEASURES:
            c = statistics.median(_lookup(r[backend]["conveyor"]["results"], path) for r in raw)
            m = statistics.median(_lookup(r[backend]["mlflow"]["results"], path) for r in raw)
            higher_is_better = unit.endswith("/s")
            rows.append(
                {
                    "backend": backend,
                    "key": key,
                    "measure": label,
                    "unit": unit,
                    "conveyor": c,
                    "mlflow": m,
                    # How many times better Conveyor is (>1 means better).
                    "advantage": (c / m if higher_is_better else m / c) if c and m else None,
                }
            )
    return rows


def summary(result: dict[str, Any]) -> Table:
    versions = result["sizes"]["versions"]
    table = Table(
        title=f"registry: {versions:,} versions of one model "
        f"(Conveyor {result['tools']['conveyor']['version']}, "
        f"MLflow {result['tools']['mlflow']['version']})",
        title_justify="left",
    )
    for column in ("backend", "measure", "unit", "Conveyor", "MLflow", "advantage"):
        table.add_column(column, justify="left" if column in ("backend", "measure") else "right")
    for row in result["comparisons"]:
        adv = row["advantage"]
        table.add_row(
            row["backend"],
            row["measure"],
            row["unit"],
            f"{row['conveyor']:,.3g}" if row["conveyor"] < 100 else f"{row['conveyor']:,.0f}",
            f"{row['mlflow']:,.3g}" if row["mlflow"] < 100 else f"{row['mlflow']:,.0f}",
            f"{adv:.1f}x" if adv is not None else "-",
        )
    return table
