"""Loading a 200k-chunk RAG version in a server, and what it costs every full garbage
collection afterwards: the collector as it was (on during the load, the version walked by
every full collection) against ``conveyor._gc`` (off during the load, the version frozen
after it), in fresh processes, alternated.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_load.py``);
the collection is ``rag_search.py``'s ``dense`` one (built there first if missing). No
peer: both sides are Conveyor, the variable is the collector. Each process: open the
project, freeze what start-up loaded (as the server's start-up does), load the version
through ``RagService.loaded`` and time it (and the resident memory it added), then time
three full collections. Results go to ``results/rag_load.json``.

``--baseline COMMIT`` compares two versions of the code instead, both loading as a server
does: Conveyor at ``COMMIT`` (``before``) against the working tree (``now``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
import rag_search

_CHILD = """
import gc, json, sys, time
from conveyor import _gc
from conveyor.project import Project
from conveyor.rag.api import RagService

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

project = Project.open(sys.argv[1])
service = RagService(project)
gc.collect()
rss_before = rss_mb()
if sys.argv[2] == "frozen":
    _gc.serving()                       # what the server's start-up now does
else:
    gc.freeze()                         # what it did before: freeze start-up, nothing later
    import contextlib
    import conveyor.rag.api as api
    api.long_lived = contextlib.nullcontext  # and the load with the collector on
started = time.perf_counter()
loaded = service.loaded("dense")
load_s = time.perf_counter() - started
rss_after = rss_mb()
full = []
for _ in range(3):
    t = time.perf_counter()
    gc.collect()
    full.append((time.perf_counter() - t) * 1000)
print("RESULT " + json.dumps({
    "load_s": load_s, "full_collection_ms": full, "chunks": len(loaded.chunks),
    "rss_growth_mb": rss_after - rss_before,
    # the chunks' own columns (a ChunkTable); None before it, when they were a dict
    "chunk_table_mb": (
        loaded.chunks.nbytes / 2**20 if hasattr(loaded.chunks, "nbytes") else None
    ),
    "tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count(),
}))
service.close()
project.close()
"""


def _rounded(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def one(root: str, mode: str, src: Path | None = None) -> dict[str, Any]:
    """One process loading the version; ``src``: Conveyor's code from there instead."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, root, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    found: dict[str, Any] = json.loads(out.rpartition("RESULT ")[2])
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per side, alternated")
    parser.add_argument("--out", default="rag_load", help="results/<out>.json")
    parser.add_argument(
        "--baseline",
        help="compare Conveyor as of this git commit (before) with the working tree (now), "
        "both as a server loads (frozen), instead of the collector's two modes",
    )
    args = parser.parse_args(argv)
    root, _, _ = rag_search.build_project(rag_search.dataset())
    sides: dict[str, tuple[str, Path | None]] = {
        "collected": ("collected", None),
        "frozen": ("frozen", None),
    }
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-rag-load-"))
    if args.baseline:
        sides = {
            "before": ("frozen", harness.baseline_src(args.baseline, tmp)),
            "now": ("frozen", None),
        }
    names = list(sides)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            mode, src = sides[name]
            runs[name].append(one(str(root), mode, src))
            last = runs[name][-1]
            rag_search.log(
                f"{name}: load {last['load_s']:.2f} s, RSS +{last['rss_growth_mb']:.0f} MB, "
                f"full collection {statistics.median(last['full_collection_ms']):.1f} ms"
            )
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        mode: {
            "load_s_median": round(statistics.median(r["load_s"] for r in rows), 3),
            "load_s": [round(r["load_s"], 3) for r in rows],
            "full_collection_ms_median": round(
                statistics.median(ms for r in rows for ms in r["full_collection_ms"]), 2
            ),
            "rss_growth_mb_median": round(statistics.median(r["rss_growth_mb"] for r in rows), 1),
            "tracked_objects": rows[0]["tracked"],
            "frozen_objects": rows[0]["frozen"],
            "chunks": rows[0]["chunks"],
            "chunk_table_mb": _rounded(rows[0].get("chunk_table_mb")),
        }
        for mode, rows in runs.items()
    }
    first, second = names
    summary["load_ratio"] = round(
        summary[second]["load_s_median"] / summary[first]["load_s_median"], 3
    )
    summary["rss_ratio"] = round(
        summary[second]["rss_growth_mb_median"] / summary[first]["rss_growth_mb_median"], 3
    )
    rag_search.log(json.dumps(summary, indent=1))
    harness.write_result(
        args.out,
        {
            "benchmark": "rag_load",
            "machine": harness.machine(),
            "timestamp": harness.timestamp(),
            "results": summary,
            "baseline": args.baseline,
            "note": (
                f"before: Conveyor at {args.baseline}, now: the working tree, both loading "
                "as a server does (frozen); rss_growth_mb: resident memory the load added"
                if args.baseline
                else "collected: the collector on during the load, nothing frozen after "
                "it; frozen: conveyor._gc (off during the load, frozen after it, as in a "
                "server); rss_growth_mb: resident memory the load added"
            ),
        },
    )


if __name__ == "__main__":
    main()
