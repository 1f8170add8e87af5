"""Loading a 200k-chunk RAG version in a server, and what it costs every full garbage
collection afterwards: the collector as it was (on during the load, the version walked by
every full collection) against ``conveyor._gc`` (off during the load, the version frozen
after it), in fresh processes, alternated.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_load.py``);
the collection is ``rag_search.py``'s ``dense`` one (built there first if missing). No
peer: both sides are Conveyor, the variable is the collector. Each process: open the
project, freeze what start-up loaded (as the server's start-up does), load the version
through ``RagService.loaded`` and time it, then time three full collections. Results go to
``results/rag_load.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

import harness
import rag_search

_CHILD = """
import gc, json, sys, time
from conveyor import _gc
from conveyor.project import Project
from conveyor.rag.api import RagService

project = Project.open(sys.argv[1])
service = RagService(project)
gc.collect()
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
full = []
for _ in range(3):
    t = time.perf_counter()
    gc.collect()
    full.append((time.perf_counter() - t) * 1000)
print("RESULT " + json.dumps({
    "load_s": load_s, "full_collection_ms": full, "chunks": len(loaded.chunks),
    "tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count(),
}))
service.close()
project.close()
"""


def one(root: str, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, root, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, Any] = json.loads(out.rpartition("RESULT ")[2])
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per side, alternated")
    parser.add_argument("--out", default="rag_load", help="results/<out>.json")
    args = parser.parse_args(argv)
    root, _, _ = rag_search.build_project(rag_search.dataset())
    runs: dict[str, list[dict[str, Any]]] = {"collected": [], "frozen": []}
    for i in range(args.rounds):
        for mode in ("collected", "frozen") if i % 2 == 0 else ("frozen", "collected"):
            runs[mode].append(one(str(root), mode))
            last = runs[mode][-1]
            rag_search.log(
                f"{mode}: load {last['load_s']:.2f} s, full collection "
                f"{statistics.median(last['full_collection_ms']):.1f} ms"
            )
    summary = {
        mode: {
            "load_s_median": round(statistics.median(r["load_s"] for r in rows), 3),
            "load_s": [round(r["load_s"], 3) for r in rows],
            "full_collection_ms_median": round(
                statistics.median(ms for r in rows for ms in r["full_collection_ms"]), 2
            ),
            "tracked_objects": rows[0]["tracked"],
            "frozen_objects": rows[0]["frozen"],
            "chunks": rows[0]["chunks"],
        }
        for mode, rows in runs.items()
    }
    summary["load_ratio"] = round(
        summary["frozen"]["load_s_median"] / summary["collected"]["load_s_median"], 3
    )
    rag_search.log(json.dumps(summary, indent=1))
    harness.write_result(
        args.out,
        {
            "benchmark": "rag_load",
            "machine": harness.machine(),
            "timestamp": harness.timestamp(),
            "results": summary,
            "note": "collected: the collector on during the load, nothing frozen after it; "
            "frozen: conveyor._gc (off during the load, frozen after it, as in a server)",
        },
    )


if __name__ == "__main__":
    main()
