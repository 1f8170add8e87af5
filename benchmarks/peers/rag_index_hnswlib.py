"""hnswlib's side of ``benchmarks/rag_index.py``, run in ``.bench-venvs/hnswlib``.

Reads the cached data set (``.npz``: base, queries, ground truth), builds one HNSW graph with
the given M and ef_construction on every core (or loads the one a previous run saved in
``cache``), prints ``READY`` and its build figures as one JSON line, then answers requests on
stdin, one ef per line, with one JSON line each: recall@10, wall and CPU seconds of a
single-thread search of all the queries. So the parent can interleave hnswlib's measurements
with the other libraries' (the machine is shared: measured side by side, not minutes apart).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time

import hnswlib
import numpy as np


def main() -> None:
    path, cache, m, ef_construction = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = np.load(path)
    base, queries, truth = data["base"], data["queries"], data["truth"]
    k = truth.shape[1]
    index = hnswlib.Index(space="ip", dim=base.shape[1])
    info_path = cache + ".json"
    if os.path.exists(cache) and os.path.exists(info_path):
        index.load_index(cache, max_elements=len(base))
        with open(info_path) as f:
            info = json.load(f)
    else:
        index.init_index(
            max_elements=len(base), M=m, ef_construction=ef_construction, random_seed=1
        )
        index.set_num_threads(os.cpu_count() or 1)
        print(f"hnswlib: building M={m} ef_construction={ef_construction}", file=sys.stderr)
        started = time.perf_counter()
        index.add_items(base, np.arange(len(base)))
        build = time.perf_counter() - started
        index.save_index(cache)
        info = {
            "build_s": build,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "index_bytes": os.path.getsize(cache),
        }
        with open(info_path, "w") as f:
            json.dump(info, f)
    index.set_num_threads(1)
    version = importlib.metadata.version("hnswlib")
    info |= {"library": "hnswlib", "version": version, "m": m, "ef_construction": ef_construction}
    print("READY " + json.dumps(info), flush=True)
    truth_sets = [set(row.tolist()) for row in truth]
    for line in sys.stdin:
        ef = int(line)
        index.set_ef(max(ef, k))
        index.knn_query(queries[:50], k=k)  # warm
        wall, cpu = time.perf_counter(), time.process_time()
        labels, _ = index.knn_query(queries, k=k)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        hits = sum(len(set(labels[i].tolist()) & truth_sets[i]) for i in range(len(truth)))
        print(json.dumps({"recall": hits / truth.size, "wall": wall, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
