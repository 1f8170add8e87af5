"""End-to-end retrieval: ``POST /v1/rag/{collection}/search`` at k=10 on a 200k-chunk
collection, against Haystack doing the same retrieval in process, same data, same run.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_search.py``).

The data: 200,000 chunks, each the text of two real docstring sentences (the 5,000 that
``rag_index.py`` embeds with all-MiniLM-L6-v2 once) with a vector drawn between those two
sentences' real embeddings plus noise shaped like the embeddings' own spread (the same
recipe as ``rag_index.py``, so the index sees real-embedding-like neighbourhoods). Embedding
200k texts would take this 2-core machine most of an hour, so the collection is built by
Conveyor's real build with its embedding cache filled beforehand with those vectors (the
build reads, chunks, indexes and stores everything as usual; it only finds every vector in
the cache). Queries are 1,000 other docstring sentences, embedded at query time by each
side's encoder: Conveyor's ONNX Runtime INT8 encoder in the server, sentence-transformers
on torch in Haystack.

Sides, one query at a time (c=1), distinct queries (no cache hit; the retrieval cache is
off anyway):
- **Conveyor** over HTTP (``python -m conveyor serve``, one worker, a viewer key, a
  keep-alive client in this process: the standard library's ``http.client``, then httpx
  over the same queries; each reported, since the client's CPU on 2 cores is the
  server's): ``dense`` (HNSW, M 32) and ``hybrid`` (HNSW + BM25, convex fusion)
  collections, each a real build over the same rows.
- **Haystack** in process: ``InMemoryEmbeddingRetriever`` (``dense``), plus
  ``InMemoryBM25Retriever`` joined by reciprocal rank fusion (``hybrid``).

Reported: p50/p99 latency and queries/s per side and mode; for Conveyor the median and p99
of each stage the server times (``latency_ms`` in its answers) and the median time outside
them (HTTP, auth, the thread hop, the event, JSON and the client); the build time, and the
overlap of each side's top 10 with exact search on the same vectors (the dense mode's
recall); the ten slowest queries, each with its length and stages (where the tail comes
from). ``--runs N --conveyor-only`` repeats Conveyor's side with a fresh server each time
and reports each run's p50/p99: the spread of the tail from run to run on a shared host.
Results go to ``results/rag_search.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

N_CHUNKS = 200_000
N_QUERIES = 1_000
K = 10
CACHE = Path(os.environ.get("CONVEYOR_BENCH_CACHE", "/tmp")) / "conveyor-rag-search-v1"
#: Haystack scores every document in Python per query (BM25) or over lists (dense): fewer
#: queries there (about a second each at 200k: its per-query latency is what is compared).
HAYSTACK_QUERIES = {"dense": 60, "hybrid": 40}
INDEX_URL = "hnsw://?m=32&ef_construction=200&ef_search=96"
HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


def dataset() -> dict[str, np.ndarray]:
    """texts, vectors (200k), queries (texts), cached."""
    path = CACHE / "data.npz"
    if path.exists():
        return dict(np.load(path))
    import rag_index

    sentences = rag_index._sentences()
    anchors = rag_index._anchors()
    rng = np.random.default_rng(42)
    order = rng.permutation(len(sentences))
    held_out, pool = order[:N_QUERIES], order[N_QUERIES:]
    centred = anchors[pool] - anchors[pool].mean(axis=0)
    _, spread, directions = np.linalg.svd(centred, full_matrices=False)
    root = (directions.T * (spread / np.sqrt(len(pool)))).astype(np.float32)
    first = pool[rng.integers(0, len(pool), size=N_CHUNKS)]
    second = pool[rng.integers(0, len(pool), size=N_CHUNKS)]
    weight = rng.uniform(0.5, 1, size=(N_CHUNKS, 1)).astype(np.float32)
    noise = rng.standard_normal((N_CHUNKS, root.shape[1]), dtype=np.float32) @ root.T
    vectors = weight * anchors[first] + (1 - weight) * anchors[second]
    vectors += np.float32(rag_index.SIGMA) * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # The chunk id makes every text distinct (one vector per text in the cache).
    texts = np.array(
        [
            f"{sentences[a]} {sentences[b]} (chunk {i})"
            for i, (a, b) in enumerate(zip(first, second, strict=True))
        ]
    )
    queries = np.array([sentences[i] for i in held_out])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, texts=texts, vectors=vectors.astype(np.float32), queries=queries)
    return {"texts": texts, "vectors": vectors.astype(np.float32), "queries": queries}


# -- Conveyor --------------------------------------------------------------------------------

SPEC = """
rag:
  cache: {enabled: false}
  collections:
%s
"""
COLLECTION = """    %s:
      sources:
        - {kind: sql, url: "sqlite:///%s", query: "select id, text from chunks",
           id_column: id, text_column: text}
      index: "%s"
      retrieval: {mode: %s}
"""


def build_project(data: dict[str, np.ndarray]) -> tuple[Path, str, dict[str, float]]:
    """The project with the ``dense`` and ``hybrid`` collections built (kept between runs:
    a collection with a live version is not built again); a new viewer key."""
    import sqlite3

    from conveyor.errors import NotFoundError
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project, init_project
    from conveyor.rag.api import build
    from conveyor.rag.collections import Collections, SqlEmbeddingCache
    from conveyor.rag.embed import EmbeddingConfig, open_embedder
    from conveyor.rag.embed.cache import text_hash

    root = CACHE / "project"
    rows = root / "chunks.db"
    if not (root / "conveyor.yaml").exists():
        root.mkdir(parents=True, exist_ok=True)
        rows.unlink(missing_ok=True)
        with sqlite3.connect(rows) as db:
            db.execute("create table chunks (id integer primary key, text text not null)")
            db.executemany("insert into chunks values (?, ?)", enumerate(map(str, data["texts"])))
        collections = "".join(
            COLLECTION % (mode, rows.as_posix(), INDEX_URL, mode) for mode in ("dense", "hybrid")
        )
        spec = init_project(root, name="bench-rag-search")
        with spec.open("a", encoding="utf-8") as f:
            f.write(SPEC % collections.rstrip("\n"))
        with Project.open(root) as project:
            model = open_embedder(EmbeddingConfig()).model
            log(f"conveyor: filling the embedding cache ({model}) with {N_CHUNKS:,} vectors")
            cache = SqlEmbeddingCache(project.store)
            texts, vectors = data["texts"], data["vectors"]
            for at in range(0, N_CHUNKS, 20_000):
                part = zip(texts[at : at + 20_000], vectors[at : at + 20_000], strict=True)
                cache.put_many(model, {text_hash(str(t)): v for t, v in part})
    timings = root / "build_s.json"
    seconds: dict[str, float] = json.loads(timings.read_text()) if timings.exists() else {}
    with Project.open(root) as project:
        for mode in ("dense", "hybrid"):
            try:
                project.service("rag", Collections).version(mode, "live")
                continue
            except NotFoundError:
                pass
            log(f"conveyor: building the {mode} collection")
            started = time.perf_counter()
            result = build(mode, actor="bench", project=project)
            seconds[mode] = time.perf_counter() - started
            counts = result.counts
            log(f"conveyor: {mode}@{result.version.number} {counts} in {seconds[mode]:.0f} s")
            # a few texts are longer than the encoder's window: two chunks, the second encoded
            if counts["documents"] != N_CHUNKS or counts["encoded_texts"] > N_CHUNKS // 100:
                raise RuntimeError(f"unexpected build of {mode}: {counts}")
            timings.write_text(json.dumps(seconds))
        token, _ = ApiKeys(project.store, project.events).create(
            f"bench-{time.time_ns()}", "viewer"
        )
    return root, str(token), seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def conveyor_side(root: Path, key: str, queries: np.ndarray) -> dict[str, Any]:
    """Both collections over HTTP, c=1, from two clients in turn: the standard library's
    ``http.client`` (keep-alive, about 0.1 ms of this process's CPU a call) and httpx
    (about 0.6 ms a call, with its INFO log off): on 2 cores the client's CPU is taken from
    the server's encoder threads, so each is reported."""
    import http.client
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    port = free_port()
    log_file = (CACHE / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "-C", str(root), "--port", str(port)],
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out: dict[str, Any] = {}
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the server did not start: see {CACHE / 'server.log'}")
                time.sleep(0.25)
            plain = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

            def by_http_client(path: str, payload: dict[str, Any]) -> dict[str, Any]:
                plain.request("POST", path, body=json.dumps(payload), headers=headers)
                answer = plain.getresponse()
                data = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{path}: {answer.status} {data[:300]!r}")
                found: dict[str, Any] = json.loads(data)
                return found

            def by_httpx(path: str, payload: dict[str, Any]) -> dict[str, Any]:
                answer = client.post(path, json=payload)
                answer.raise_for_status()
                found: dict[str, Any] = answer.json()
                return found

            for mode in ("dense", "hybrid"):
                path = f"/v1/rag/{mode}/search"
                plain.close()  # the next request reconnects: the server closes a connection
                # left idle past its keep-alive, as this one is while httpx takes its turn
                for q in ("warm up", "loading the version", "and its encoder"):
                    by_httpx(path, {"query": q, "k": K})
                    by_http_client(path, {"query": q, "k": K})
                log(f"conveyor: {len(queries)} queries ({mode}, HTTP, c=1, http.client)")
                out[mode] = _timed(by_http_client, path, queries)
                log(f"conveyor: the same queries ({mode}, HTTP, c=1, httpx)")
                with_httpx = _timed(by_httpx, path, queries)
                out[mode]["httpx"] = {
                    k: with_httpx[k] for k in ("p50_ms", "p99_ms", "outside_server_median_ms")
                }
                log(
                    f"conveyor {mode}: p50 {out[mode]['p50_ms']:.2f} ms, "
                    f"p99 {out[mode]['p99_ms']:.2f} ms (httpx: p50 "
                    f"{with_httpx['p50_ms']:.2f}, p99 {with_httpx['p99_ms']:.2f})"
                )
            plain.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log_file.close()
    return out


def _timed(post: Any, path: str, queries: np.ndarray) -> dict[str, Any]:
    """Each query once, one at a time: latency percentiles, the server's own stage timings
    (``latency_ms`` in its answers) and the time outside them."""
    latencies, ids, stages = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        body = post(path, {"query": str(q), "k": K})
        latencies.append((time.perf_counter() - t0) * 1000)
        if body["cache_hit"]:
            raise RuntimeError("a cache hit: the benchmark measures retrieval")
        ids.append([int(h["doc_id"]) for h in body["hits"]])
        stages.append(body["latency_ms"])
    lat = np.array(latencies)
    outside = lat - np.array([x["total"] for x in stages])
    slowest = np.argsort(-lat)[:10]
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "qps": len(lat) / (lat.sum() / 1000),
        "server_stage_median_ms": {
            s: float(np.median([x.get(s, 0.0) for x in stages])) for s in stages[0]
        },
        "server_stage_p99_ms": {
            s: float(np.percentile([x.get(s, 0.0) for x in stages], 99)) for s in stages[0]
        },
        # what the server's own total leaves out: HTTP, auth, the thread hand-off, the
        # event, JSON both ways and the client
        "outside_server_median_ms": float(np.median(outside)),
        "outside_server_p99_ms": float(np.percentile(outside, 99)),
        # where the tail comes from: a long query's encoding, or a pause outside the stages
        "slowest": [
            {
                "ms": round(float(lat[i]), 3),
                "chars": len(str(queries[i])),
                "outside_ms": round(float(outside[i]), 3),
                **{s: round(float(v), 3) for s, v in stages[i].items()},
            }
            for i in slowest
        ],
        "ids": ids,
    }


# -- the comparison --------------------------------------------------------------------------


def exact_ids(data: dict[str, np.ndarray], queries: np.ndarray) -> np.ndarray:
    """Exact top-10 of each query's reference embedding (sentence-transformers, float32:
    neither side's own encoder) over the chunk vectors."""
    from conveyor.rag.embed import EmbeddingConfig, open_embedder

    reference = open_embedder(EmbeddingConfig(backend="sentence-transformers"))
    embedded = reference.embed([str(q) for q in queries])
    out = []
    for at in range(0, len(embedded), 100):  # 80 MB of scores at a time, not 800
        scores = embedded[at : at + 100] @ data["vectors"].T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1))
    return np.concatenate(out)


def overlap(found: list[list[int]], truth: np.ndarray) -> float:
    pairs = zip(found, truth[: len(found)], strict=True)
    return float(np.mean([len(set(f) & set(t.tolist())) / K for f, t in pairs]))


def run_by_run(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Each run's p50/p99 and the p99s behind them, by mode (``--runs``)."""
    return {
        mode: [
            {
                "p50_ms": round(run[mode]["p50_ms"], 3),
                "p99_ms": round(run[mode]["p99_ms"], 3),
                "server_p99_ms": round(run[mode]["server_stage_p99_ms"]["total"], 3),
                "embed_p99_ms": round(run[mode]["server_stage_p99_ms"]["embed"], 3),
                "outside_p99_ms": round(run[mode]["outside_server_p99_ms"], 3),
            }
            for run in runs
        ]
        for mode in ("dense", "hybrid")
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="rag_search", help="results/<out>.json")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="Conveyor's side this many times, a fresh server each (the tail's spread from "
        "run to run); the first run is the one compared with Haystack",
    )
    parser.add_argument("--conveyor-only", action="store_true", help="skip Haystack")
    args = parser.parse_args(argv)
    data = dataset()
    queries = data["queries"]
    root, key, build_s = build_project(data)
    runs = [conveyor_side(root, key, queries) for _ in range(max(args.runs, 1))]
    # after the timed side: the reference encoder and the exact search's scores (torch's
    # threads, hundreds of MB freed) are not left to the host while a server is timed
    truth = exact_ids(data, queries)
    results: dict[str, Any] = {"conveyor": runs[0]}
    results["haystack"] = {}
    python = None if args.conveyor_only else harness.ensure_venv("haystack", log=log)
    for mode in ("dense", "hybrid") if python else ():
        results["haystack"][mode] = harness.run_side(
            python,
            HERE / "peers" / "rag_search_haystack.py",
            [str(CACHE / "data.npz"), mode, "2", str(HAYSTACK_QUERIES[mode])],
            label="haystack",
            log=log,
        )
    summary: dict[str, Any] = {}
    for side, modes in results.items():
        for mode, figures in modes.items():
            ids = figures.pop("ids")
            figures["overlap_with_exact_at_10"] = overlap(ids, truth)
            summary[f"{side}/{mode}"] = {
                k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()
            }
    for mode in results["haystack"]:
        c, h = results["conveyor"][mode], results["haystack"][mode]
        summary[f"p99_ratio/{mode}"] = round(h["p99_ms"] / c["p99_ms"], 2)
    if len(runs) > 1:
        spread = summary["runs"] = run_by_run(runs)
        summary["runs_p99_under_10_ms"] = {
            mode: sum(r["p99_ms"] < 10 for r in rows) for mode, rows in spread.items()
        }
    for name, row in summary.items():
        log(f"{name}: {row}")
    harness.write_result(
        args.out,
        {
            "benchmark": "rag_search",
            "machine": harness.machine(),
            "timestamp": harness.timestamp(),
            "chunks": N_CHUNKS,
            "queries": N_QUERIES,
            "k": K,
            "index": INDEX_URL,
            "conveyor_build_s": build_s,
            "results": summary,
            "note": "c=1 over HTTP for Conveyor (client in this process, server one worker); "
            "Haystack in process with torch on 2 threads; distinct queries, no cache",
        },
    )


if __name__ == "__main__":
    main()
