"""Online feature store against Feast 0.67: reads of one entity's 30 features, and materialization.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/features_online.py
    ... features_online.py --quick              # small sizes, fewer reads
    ... features_online.py --only read          # or: --only materialize

**Reads** (``results/features_online.json``). Ten views of three features each (a float,
an int, a str; TTL 7 days), one row per entity, the same seeded Parquet files loaded by
both sides; then one random entity's 30 features read one call after another, in-process:

- Conveyor's ``online_features(project, [{"customer_id": i}], "bench")`` (the function
  behind ``POST /v1/features/get`` and the model server's enricher), and the store's
  ``OnlineStore.read`` under it;
- the same keys read raw with redis-py, the floor: one ``MGET`` (what Conveyor sends),
  with orjson decoding, and a pipeline of 10 ``GET``;
- Feast's ``get_online_features(features=<service>, entity_rows=[...]).to_dict()`` in its
  own venv (``peers/feast_features_online.py``; Redis online store, loaded with
  ``write_to_online_store``), and a raw pipelined ``HGETALL`` of Feast's hash for the
  entity (Feast keeps one hash per entity), Feast's floor;
- over HTTP: ``conveyor serve`` (real uvicorn, one worker, auth on: a viewer key) in its
  own process; ``POST /v1/features/get`` for one entity, and ``GET /v2/health/live`` (the
  server's cheapest route), sent one at a time on one keep-alive connection by a raw
  socket client in this process. The load generator shares the machine's cores with the
  server and Redis.

Each measure is taken at N entities, then again after loading 10x as many (the first
N stay): a read should not notice. Calls of one process are interleaved (rotating which
goes first) so a busy machine slows all of them alike. Median, p90, p99, p99.9 in µs.
Conveyor's keys live under a fresh prefix of Redis database 15, Feast's in database 13
under a fresh project name; both are removed afterwards.

**Materialization** (``results/features_materialize.json``). The same ten views with
history: 1M rows each (10M rows), 200,000 customers, event times over the last six days,
in one Parquet file per view. Each side runs as a whole process, timed from here with its
peak RSS from ``wait4``: ``conveyor features materialize`` (the latest row per entity and
view into Redis) and ``feast materialize START END`` (Feast's duckdb offline store and its
Redis online store). Rows per second are source rows over wall seconds; both sides' keys
are counted afterwards to check what was written.

Nothing is asserted about speed; every figure is from this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.table import Table

PEERS: tuple[str, ...] = ("feast",)
Log = Callable[[str], None]
REDIS_URL = os.environ.get("CONVEYOR_BENCH_REDIS", "redis://127.0.0.1:6379/15")
FEAST_DB = int(os.environ.get("CONVEYOR_BENCH_FEAST_DB", "13"))
VIEWS = [f"view_{i}" for i in range(10)]
FEATURES = ("amount", "count", "segment")
TTL = timedelta(days=7)
SEED = 20240612

READ_SIZES = {"full": (10_000, 100_000), "quick": (1_000, 10_000)}
MATERIALIZE = {
    "full": {"rows_per_view": 1_000_000, "customers": 200_000},
    "quick": {"rows_per_view": 20_000, "customers": 4_000},
}


# -- data and the Conveyor project --------------------------------------------------------


def _write_view(path: Path, view: int, ids: Any, now_s: int, span_s: int, seed: Any) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n = len(ids)
    name = VIEWS[view]
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array(ids, pa.int64()),
                "ts": pa.array((now_s - rng.integers(0, span_s, n)) * 1_000_000, pa.int64()).cast(
                    pa.timestamp("us", "UTC")
                ),
                f"{name}_amount": pa.array(rng.random(n) * 100, pa.float64()),
                f"{name}_count": pa.array(rng.integers(0, 1000, n), pa.int64()),
                f"{name}_segment": pa.array(
                    np.array(["gold", "silver", "bronze"])[rng.integers(0, 3, n)]
                ),
            }
        ),
        path,
    )


def _read_stages(folder: Path, sizes: tuple[int, ...]) -> list[Path]:
    """One folder per size: the entities added at that size, one row each, in every view."""
    import numpy as np

    now_s = int(time.time())
    stages, done = [], 0
    for size in sizes:
        stage = folder / f"stage-{size}"
        stage.mkdir(parents=True)
        for v in range(len(VIEWS)):
            _write_view(
                stage / f"{VIEWS[v]}.parquet",
                v,
                np.arange(done, size),
                now_s,
                86_400,
                [SEED, v, done],
            )
        stages.append(stage)
        done = size
    return stages


def _project(root: Path, sources: Path, online_url: str) -> dict[str, str]:
    """A Conveyor project at ``root`` with the ten views (sources in ``sources``) and the
    service ``bench``; returns the environment that points its online store at Redis."""
    from conveyor.project import init_project

    init_project(root, name="bench-features")
    lines = ["features:", "  entities:", "    customer: {join_keys: [customer_id]}", "  views:"]
    for name in VIEWS:
        lines += [
            f"    {name}:",
            "      entities: [customer]",
            f"      source: {{path: {sources / (name + '.parquet')}}}",
            "      event_time: ts",
            "      ttl: 7d",
            "      features:",
            f"        - {{name: {name}_amount, type: double}}",
            f"        - {{name: {name}_count, type: int64}}",
            f"        - {{name: {name}_segment, type: string}}",
        ]
    lines += ["  services:", f"    bench: {{features: [{', '.join(v + ':*' for v in VIEWS)}]}}"]
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write("\n" + "\n".join(lines) + "\n")
    return {"CONVEYOR_ONLINE": online_url}


def _redis_url(prefix: str) -> str:
    from conveyor.backends import BackendURL

    base = BackendURL.parse(REDIS_URL)
    return base.with_(query={**base.query, "prefix": prefix}).render(hide_password=False)


def _raw_redis(db: int | None = None) -> Any:
    import redis

    from conveyor.backends import BackendURL

    base = BackendURL.parse(REDIS_URL)
    if db is not None:
        base = base.with_(path=f"/{db}")
    return redis.Redis.from_url(base.with_(query={}).render(hide_password=False))


# -- timing -----------------------------------------------------------------------------


def _time(
    calls: dict[str, Callable[[int], Any]], n: int, entities: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Time every call on the same random entities, interleaved (rotating which goes first),
    so that a machine busy with something else slows all of them alike."""
    rng = random.Random(1)
    picks = [rng.randrange(entities) for _ in range(n + warmup)]
    names = list(calls)
    took: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for k, i in enumerate(picks):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            t0 = clock()
            calls[name](i)
            if k >= warmup:
                took[name].append((clock() - t0) / 1000)
    return {name: _stats(sorted(values)) for name, values in took.items()}


def _stats(took: list[float]) -> dict[str, float]:
    def pct(p: float) -> float:
        return took[min(len(took) - 1, int(p * len(took)))]

    return {
        "reads": len(took),
        "median_us": statistics.median(took),
        "mean_us": statistics.fmean(took),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": took[-1],
    }


class _Http:
    """One keep-alive HTTP/1.1 connection; a request is timed from the first byte sent to
    the last byte of the body received (a raw socket: the client costs next to nothing)."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.token = token

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return int(header.split(b" ", 2)[1]), rest

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(root: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``conveyor serve`` of the project in its own process group; waits until it answers."""
    port = _free_port()
    conveyor = Path(sys.executable).with_name("conveyor")
    argv = [str(conveyor), "serve", "--project", str(root), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1"]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"conveyor serve exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            client = _Http(port, "")
            try:
                if client.request("GET", "/v2/health/live")[0] == 200:
                    return proc, port
            finally:
                client.close()
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError("conveyor serve did not answer within 120 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


# -- reads --------------------------------------------------------------------------------


def _conveyor_reads(
    stages: list[Path], sizes: tuple[int, ...], work: Path, reads: int, log: Log
) -> dict[str, Any]:
    import orjson
    import pyarrow.parquet as pq

    from conveyor.features.online import FeatureRef, OnlineStore, entity_key
    from conveyor.features.serving_read import online_features
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project

    prefix = f"bench-online-{uuid.uuid4().hex[:8]}:"
    root = work / "conveyor"
    env = _project(root, stages[0], _redis_url(prefix))
    project = Project.open(root, env=env)
    raw = _raw_redis()
    server: subprocess.Popen[bytes] | None = None
    out: dict[str, Any] = {"stages": []}
    try:
        kv = project.backend("online")
        store = OnlineStore(kv)
        token, _ = ApiKeys(project.store, project.events).create("bench", "viewer")
        refs = [FeatureRef(v, f"{v}_{f}", ("customer_id",), TTL) for v in VIEWS for f in FEATURES]
        for size, stage in zip(sizes, stages, strict=True):
            started, rows = time.perf_counter(), 0
            for v in VIEWS:
                table = pq.read_table(stage / f"{v}.parquet")
                store.write(
                    v,
                    table,
                    join_keys=["customer_id"],
                    event_time="ts",
                    features=[f"{v}_{f}" for f in FEATURES],
                    ttl=TTL,
                    types={f"{v}_amount": "double", f"{v}_count": "int64"},
                )
                rows += table.num_rows
            write_s = time.perf_counter() - started
            log(f"features_online: conveyor wrote {rows} rows ({size} entities) in {write_s:.1f} s")
            keys_of = [
                [kv.prefix + entity_key(v, ["customer_id"], {"customer_id": i}) for v in VIEWS]
                for i in range(size)
            ]

            def served(i: int) -> Any:
                (got,) = online_features(project, [{"customer_id": i}], "bench")
                assert got["status"]["view_0_amount"] == "present", got
                return got

            def store_read(i: int) -> Any:
                return store.read([{"customer_id": i}], refs)

            def mget(i: int, keys_of: list[list[str]] = keys_of) -> Any:
                return raw.mget(keys_of[i])

            def mget_orjson(i: int, keys_of: list[list[str]] = keys_of) -> Any:
                return [orjson.loads(v) for v in raw.mget(keys_of[i])]

            def pipeline_10_get(i: int, keys_of: list[list[str]] = keys_of) -> Any:
                pipe = raw.pipeline(transaction=False)
                for key in keys_of[i]:
                    pipe.get(key)
                return pipe.execute()

            measured = _time(
                {
                    "conveyor_online_features": served,
                    "conveyor_store_read": store_read,
                    "redis_py_mget": mget,
                    "redis_py_mget_orjson": mget_orjson,
                    "redis_py_pipeline_10_get": pipeline_10_get,
                },
                reads,
                size,
                warmup=500,
            )
            if server is None:
                server, port = _serve(root, env, work / "serve.log")
            http = _Http(port, token)
            try:

                def http_get(i: int, http: _Http = http) -> Any:
                    body = b'{"service":"bench","entities":[{"customer_id":%d}]}' % i
                    status, answer = http.request("POST", "/v1/features/get", body)
                    assert status == 200 and b'"present"' in answer, answer[:300]
                    return answer

                def http_live(i: int, http: _Http = http) -> Any:
                    status, answer = http.request("GET", "/v2/health/live")
                    assert status == 200, answer
                    return answer

                measured |= _time(
                    {"http_features_get": http_get, "http_health_live": http_live},
                    max(reads // 2, 1000),
                    size,
                    warmup=300,
                )
            finally:
                http.close()
            for name, m in measured.items():
                log(
                    f"features_online: {size} entities, {name}: median {m['median_us']:.0f} µs, "
                    f"p99 {m['p99_us']:.0f} µs"
                )
            out["stages"].append(
                {
                    "entities": size,
                    "online_keys": size * len(VIEWS),
                    "redis_db_keys": raw.dbsize(),
                    "write_rows_per_s": rows / write_s,
                    **measured,
                }
            )
    finally:
        if server is not None:
            _stop(server)
        with contextlib.suppress(Exception):
            project.backend("online").clear()
        project.close()
        raw.close()
    import importlib.util

    import redis

    out["hiredis"] = importlib.util.find_spec("hiredis") is not None

    out["redis_py"] = redis.__version__
    return out


def _feast_reads(
    python: Path, stages: list[Path], work: Path, reads: int, log: Log
) -> dict[str, Any]:
    repo = work / "feast"
    project = f"bench_{uuid.uuid4().hex[:8]}"
    script = harness.PEER_SCRIPTS / "feast_features_online.py"
    args = [str(repo), "--data", str(stages[0]), "--project", project, "--db", str(FEAST_DB)]
    harness.run_side(python, script, ["setup", *args], label="feast", log=log)
    try:
        stage_args = [a for s in stages for a in ("--stage", str(s))]
        return harness.run_side(
            python,
            script,
            ["read", str(repo), *stage_args, "--reads", str(reads)],
            label="feast",
            log=log,
        )
    finally:
        harness.run_side(python, script, ["clean", str(repo)], label="feast", log=log)


def run_reads(*, quick: bool, reads: int, log: Log, label: str = "") -> dict[str, Any]:
    python = harness.ensure_venv("feast", log)
    sizes = READ_SIZES["quick" if quick else "full"]
    with tempfile.TemporaryDirectory(prefix="bench-features-online-") as tmp:
        work = Path(tmp)
        stages = _read_stages(work / "data", sizes)
        log(f"features_online: feast side, {sizes} entities")
        feast = _feast_reads(python, stages, work, reads, log)
        log(f"features_online: conveyor side, {sizes} entities")
        conveyor = _conveyor_reads(stages, sizes, work, reads, log)
    raw = _raw_redis()
    redis_version = raw.info("server").get("redis_version")
    raw.close()
    result = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "redis_version": redis_version,
        "read": "1 entity, 10 views x 3 features = 30 values, one call at a time",
        "sizes_entities": list(sizes),
        "reads_per_measure": reads,
        "http_client": "raw keep-alive HTTP/1.1 socket in the benchmark process, one request "
        "at a time, on the same 2 cores as the server (uvicorn, 1 worker) and Redis",
        "target_p99_us": {"in_process": 300, "http": 1500},
        "conveyor": conveyor,
        "feast": feast,
    }
    name = ("features_online-quick" if quick else "features_online") + label
    result["path"] = str(harness.write_result(name, result))
    return result


# -- materialization ----------------------------------------------------------------------


def _measure(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> dict[str, Any]:
    """A whole process: wall and CPU seconds and peak RSS (``wait4``), its output to a log."""
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv[:3]} exited {code}: {log_path.read_text()[-3000:]}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def _conveyor_keys(raw: Any, prefix: str) -> int:
    from conveyor.kv.redis import SCORE_SUFFIX

    score = SCORE_SUFFIX.encode()
    return sum(1 for k in raw.scan_iter(match=prefix + "*", count=5000) if not k.endswith(score))


def run_materialize(*, quick: bool, log: Log) -> dict[str, Any]:
    import numpy as np

    python = harness.ensure_venv("feast", log)
    size = MATERIALIZE["quick" if quick else "full"]
    n, customers = size["rows_per_view"], size["customers"]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-features-materialize-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        now_s = int(time.time())
        per_view = []
        for v in range(len(VIEWS)):
            ids = np.random.default_rng([SEED, 100 + v]).integers(0, customers, n)
            _write_view(data / f"{VIEWS[v]}.parquet", v, ids, now_s, 6 * 86_400, [SEED, 200 + v])
            per_view.append(np.unique(ids))
        expected = {
            "entity_view_keys_expected": sum(len(u) for u in per_view),
            "entities_expected": len(np.unique(np.concatenate(per_view))),
        }
        del per_view
        log(f"features_materialize: {len(VIEWS)} views x {n} rows written to {data}")

        # Conveyor: `conveyor features materialize`, the CLI as a user runs it.
        prefix = f"bench-materialize-{uuid.uuid4().hex[:8]}:"
        root = work / "conveyor"
        env = _project(root, data, _redis_url(prefix))
        conveyor = Path(sys.executable).with_name("conveyor")
        raw = _raw_redis()
        try:
            log("features_materialize: conveyor features materialize ...")
            out["conveyor"] = _measure(
                [str(conveyor), "features", "materialize", "-C", str(root)],
                env,
                root,
                work / "conveyor-materialize.log",
            )
            out["conveyor"]["keys_written"] = _conveyor_keys(raw, prefix)
            out["conveyor"]["log_tail"] = (work / "conveyor-materialize.log").read_text()[-600:]
        finally:
            from conveyor.backends import CACHE

            with CACHE.open(_redis_url(prefix)) as kv:
                kv.clear()
            raw.close()
        log(f"features_materialize: conveyor {out['conveyor']['wall_seconds']:.1f} s")

        # Feast: `feast materialize START END` over the same files.
        repo = work / "feast"
        script = harness.PEER_SCRIPTS / "feast_features_online.py"
        project = f"bench_{uuid.uuid4().hex[:8]}"
        args = ["setup", str(repo), "--data", str(data), "--project", project]
        harness.run_side(python, script, [*args, "--db", str(FEAST_DB)], label="feast", log=log)
        start = datetime.fromtimestamp(now_s - 7 * 86_400, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        end = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            log("features_materialize: feast materialize ...")
            out["feast"] = _measure(
                [str(python.with_name("feast")), "materialize", start, end],
                harness.PEER_ENV,
                repo,
                work / "feast-materialize.log",
            )
            counted = harness.run_side(python, script, ["count", str(repo)], label="feast", log=log)
            out["feast"] |= counted
        finally:
            harness.run_side(python, script, ["clean", str(repo)], label="feast", log=log)
        log(f"features_materialize: feast {out['feast']['wall_seconds']:.1f} s")
        shutil.rmtree(data, ignore_errors=True)
    rows = n * len(VIEWS)
    for side in ("conveyor", "feast"):
        out[side]["rows_per_s"] = rows / out[side]["wall_seconds"]
        out[side]["peak_rss_gib"] = out[side]["peak_rss_bytes"] / (1 << 30)
    result = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "source_rows": rows,
        "views": len(VIEWS),
        "rows_per_view": n,
        "customers": customers,
        **expected,
        "what": "whole process each: conveyor features materialize (Redis online store) vs "
        "feast materialize (duckdb offline store, Redis online store); rows/s = source rows "
        "over wall seconds; peak RSS from wait4",
        "results": out,
    }
    name = "features_materialize-quick" if quick else "features_materialize"
    result["path"] = str(harness.write_result(name, result))
    return result


# -- report -------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"Online read of 30 features over 10 views (µs, {result['reads_per_measure']} reads)"
    )
    for column in ("side", "entities", "what", "median", "p90", "p99", "p99.9"):
        table.add_column(column, justify="left" if column in ("side", "what") else "right")
    for side in ("conveyor", "feast"):
        for stage in result[side]["stages"]:
            for what, m in stage.items():
                if isinstance(m, dict):
                    table.add_row(
                        side,
                        str(stage["entities"]),
                        what,
                        f"{m['median_us']:.0f}",
                        f"{m['p90_us']:.0f}",
                        f"{m['p99_us']:.0f}",
                        f"{m['p999_us']:.0f}",
                    )
    return table


def materialize_summary(result: dict[str, Any]) -> Table:
    table = Table(title=f"Materialization of {result['source_rows']:,} rows into Redis")
    for column in ("side", "wall s", "rows/s", "peak RSS GiB", "cpu s"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for side, m in result["results"].items():
        table.add_row(
            side,
            f"{m['wall_seconds']:.1f}",
            f"{m['rows_per_s']:,.0f}",
            f"{m['peak_rss_gib']:.2f}",
            f"{m['cpu_seconds']:.1f}",
        )
    return table


def run(*, quick: bool = False, log: Log = print, **_: Any) -> dict[str, Any]:
    """Both parts (``benchmarks/run.py`` calls this)."""
    reads = 2_000 if quick else 20_000
    return {
        "read": run_reads(quick=quick, reads=reads, log=log),
        "materialize": run_materialize(quick=quick, log=log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reads", type=int)
    parser.add_argument("--only", choices=("read", "materialize"))
    parser.add_argument("--label", default="", help="Suffix of the reads' result file.")
    args = parser.parse_args()
    from rich.console import Console

    reads = args.reads or (2_000 if args.quick else 20_000)
    if args.only in (None, "read"):
        result = run_reads(quick=args.quick, reads=reads, log=print, label=args.label)
        Console().print(summary(result))
        print(f"written to {result['path']}")
    if args.only in (None, "materialize"):
        result = run_materialize(quick=args.quick, log=print)
        Console().print(materialize_summary(result))
        print(f"written to {result['path']}")


if __name__ == "__main__":
    main()
