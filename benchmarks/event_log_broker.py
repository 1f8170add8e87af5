"""The event log on a broker: appends through ``nats://``, the caller's cost, and the sink.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/event_log_broker.py
    .venv/bin/python benchmarks/event_log_broker.py --quick

One run, on a nats-server of its own (the machine's binary, a free port, a temporary
store folder: no other stream shares it) and a fresh PostgreSQL database:

- **emit cost**: the time the calling thread spends in ``emit`` of a prediction-shaped
  event on the ``nats://`` log, each call timed with ``perf_counter_ns`` in a tight loop
  while the writer publishes (median, p99, p99.9, mean; target < 10 us);
- **appends per node**: one process emits as fast as it can, then ``flush()``: events/s
  from the first emit until JetStream acknowledged the last (batched, acknowledged
  publishes); the process's CPU per event; and two such processes at once (one per core
  of this machine: the node);
- **the sink**: ``conveyor events sink``'s loop (in process) moving what was appended
  into PostgreSQL and the Parquet copy, acking each batch once both are durable: events/s
  and where the time went;
- **peers** in the same run: the SQL event log writing straight to PostgreSQL (the same
  ``emit`` on ``postgresql://``), and plain nats-py on the same server: core publishes
  with no ack (the wire's limit), JetStream publishes pipelined 500 at a time and awaited
  one by one.

Nothing is asserted; results go to ``results/event_log_broker.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

from conveyor.events import EventLog

PAYLOAD: dict[str, Any] = {
    "model": "fraud",
    "latency_ms": 1.93,
    "input_digest": "9f2c4e1a0b7d3c5e8f6a2b4c9d0e1f3a",
    "output": [0.03, 0.97],
    "route": "champion",
}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TARGET_EVENTS_S = 50_000
TARGET_EMIT_US = 10.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- a broker of our own ------------------------------------------------------------------


class Broker:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-bench-nats-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True
        ).stdout.strip()
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _emit(log_: EventLog, i: int) -> None:
    log_.emit(
        "prediction",
        subject="fraud",
        subject_version="3",
        payload=PAYLOAD,
        request_id=f"req-{i}",
        trace_id=TRACE,
    )


def _q(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


# -- Conveyor's appends ---------------------------------------------------------------------


def emit_cost(url: str, n: int) -> dict[str, Any]:
    """Each ``emit`` timed on its own while the writer works; then the flush."""
    with EventLog.from_url(url) as log_:
        _emit(log_, -1)
        log_.flush()
        times = [0] * n
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for i in range(n):
            t0 = clock()
            _emit(log_, i)
            times[i] = clock() - t0
        log_.flush()
        seconds = time.perf_counter() - start
    times.sort()
    return {
        "calls": n,
        "us_median": round(_q(times, 0.5), 2),
        "us_p99": round(_q(times, 0.99), 2),
        "us_p999": round(_q(times, 0.999), 2),
        "us_mean": round(sum(times) / n / 1000, 2),
        "events_per_s_meanwhile": round(n / seconds),
    }


def append_throughput(url: str, n: int) -> dict[str, Any]:
    """One thread emits ``n`` events as fast as it can, then flushes: committed events/s."""
    with EventLog.from_url(url) as log_:
        _emit(log_, -1)
        log_.flush()
        cpu0, start = time.process_time(), time.perf_counter()
        for i in range(n):
            _emit(log_, i)
        emitted = time.perf_counter() - start
        log_.flush()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds),
        "emit_loop_events_per_s": round(n / emitted),
        "process_cpu_us_per_event": round(cpu / n * 1e6, 2),
    }


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[3])
import event_log_broker as b
print(json.dumps(b.append_throughput(sys.argv[1], int(sys.argv[2]))))
"""


def node_throughput(url: str, n: int, processes: int) -> dict[str, Any]:
    """``processes`` writers at once, each ``n`` events: their combined events/s."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, str(n), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    seconds = time.perf_counter() - start  # includes their start-up: a floor, not a ceiling
    slowest = max(r["seconds"] for r in results)
    return {
        "processes": processes,
        "events": n * processes,
        "events_per_s": round(n * processes / slowest),
        "events_per_s_with_startup": round(n * processes / seconds),
        "each": results,
    }


# -- the sink -------------------------------------------------------------------------------


def sink_throughput(source: str, pg_url: str, n: int, batch_events: int) -> dict[str, Any]:
    """The sink's loop moving the ``n`` events of ``source`` into PostgreSQL and Parquet."""
    from conveyor.monitoring.sink import Sink
    from conveyor.project import Project, init_project

    folder = Path(tempfile.mkdtemp(prefix="conveyor-bench-sink-"))
    try:
        init_project(folder / "proj", name="bench")
        env = {"CONVEYOR_STORE": pg_url, "CONVEYOR_EVENTS": pg_url}
        with Project.open(folder / "proj", env=env) as project:
            project.events.flush()
            stop = threading.Event()

            def cycle(stats: Any) -> None:
                if stats.acked >= n:
                    stop.set()

            with Sink.open(project, source=source, batch_events=batch_events) as sink:
                started = time.perf_counter()
                stats = sink.run(stop, on_cycle=cycle)
                seconds = time.perf_counter() - started
            return {
                "events": n,
                "batch_events": batch_events,
                "seconds": round(seconds, 3),
                "events_per_s": round(stats.acked / seconds),
                "inserted": stats.inserted,
                "batches": stats.batches,
                "parquet_files": stats.compacted_files,
                "seconds_by_step": {k: round(v, 3) for k, v in stats.timings.items()},
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- peers ----------------------------------------------------------------------------------


def nats_py(url: str, n: int, n_sequential: int) -> dict[str, Any]:
    """Plain nats-py on the same server, the same event bytes (with a fresh id header)."""
    import nats
    import orjson

    body = orjson.dumps(
        {
            "id": uuid.uuid4().hex,
            "time_us": 0,
            "kind": "prediction",
            "subject": "fraud",
            "subject_version": "3",
            "request_id": "req-1",
            "trace_id": TRACE,
            "actor": None,
            "payload": PAYLOAD,
        }
    )

    async def run() -> dict[str, Any]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        out: dict[str, Any] = {}
        try:
            await js.add_stream(name="PEER", subjects=["peer.>"])
            start = time.perf_counter()
            for _ in range(n):
                await nc.publish("core.prediction", body)
            await nc.flush()
            out["core_publish_no_ack"] = {
                "events": n,
                "events_per_s": round(n / (time.perf_counter() - start)),
            }

            start = time.perf_counter()
            for first in range(0, n, 500):
                await asyncio.gather(
                    *(
                        js.publish("peer.prediction", body, headers={"Nats-Msg-Id": f"p{i}"})
                        for i in range(first, min(first + 500, n))
                    )
                )
            out["jetstream_publish_pipelined_500"] = {
                "events": n,
                "events_per_s": round(n / (time.perf_counter() - start)),
            }
            start = time.perf_counter()
            for i in range(n_sequential):
                await js.publish("peer.prediction", body, headers={"Nats-Msg-Id": f"s{i}"})
            out["jetstream_publish_awaited_each"] = {
                "events": n_sequential,
                "events_per_s": round(n_sequential / (time.perf_counter() - start)),
            }
        finally:
            await js.delete_stream("PEER")
            await nc.close()
        return out

    return asyncio.run(run())


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs (median)")
    parser.add_argument("--name", help="results/<name>.json (default: event_log_broker)")
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    n_cost = 20_000 if args.quick else 200_000
    repeat = 1 if args.quick else args.repeat

    broker = Broker()
    result: dict[str, Any] = {
        "benchmark": "event_log_broker",
        "timestamp": harness.timestamp(),
        "quick": args.quick,
        "machine": harness.machine(),
        "load_average_at_start": os.getloadavg(),
        "nats_server": broker.version,
        "postgresql": harness.postgres_version(),
        "payload": PAYLOAD,
        "targets": {"events_per_s_per_node": TARGET_EVENTS_S, "emit_us": TARGET_EMIT_US},
    }
    try:
        with harness.postgres_database("event_log_broker") as pg:
            nats_url = f"{broker.url}/BENCH"
            log(f"emit cost on nats:// ({n_cost:,} calls, each timed)")
            cost = emit_cost(f"{broker.url}/COST", n_cost)
            log(f"  {cost}")
            runs = []
            for r in range(repeat):
                log(f"appends through nats://, run {r + 1}/{repeat} ({n:,} events)")
                runs.append(append_throughput(nats_url if r == 0 else f"{broker.url}/R{r}", n))
                log(f"  {runs[-1]}")
            rates = [x["events_per_s"] for x in runs]
            log("two writer processes at once (the node)")
            node = node_throughput(f"{broker.url}/NODE", n // 2, 2)
            log(f"  {node['events_per_s']:,} events/s")

            log("peer: the SQL event log straight to PostgreSQL")
            sql_cost = emit_cost(pg, min(n_cost, 50_000))
            sql_runs = [append_throughput(pg, n // 2) for _ in range(repeat)]
            log(f"  {sql_cost}; {[x['events_per_s'] for x in sql_runs]}")

            log("peer: plain nats-py on the same server")
            peer = nats_py(broker.url, n // 2, 5_000 if args.quick else 20_000)
            log(f"  {peer}")

        with harness.postgres_database("event_log_sink") as sink_pg:
            log(f"the sink: the {n:,} events of run 1 into PostgreSQL and Parquet")
            sink = sink_throughput(nats_url, sink_pg, n, 20_000)
            log(f"  {sink}")
    finally:
        broker.close()

    median = statistics.median(rates)
    result["load_average_at_end"] = os.getloadavg()
    result["results"] = {
        "nats_emit_cost": cost,
        "nats_appends": {"runs": runs, "events_per_s_median": round(median)},
        "nats_appends_node_2_processes": node,
        "sink_postgresql_parquet": sink,
        "peer_sql_log_postgresql": {
            "emit_cost": sql_cost,
            "runs": sql_runs,
            "events_per_s_median": round(statistics.median(x["events_per_s"] for x in sql_runs)),
        },
        "peer_nats_py": peer,
    }
    best_node = max(median, node["events_per_s"])
    result["summary"] = {
        "emit_us_median": cost["us_median"],
        "emit_us_p99": cost["us_p99"],
        "emit_target_met_median": cost["us_median"] < TARGET_EMIT_US,
        "emit_target_met_p99": cost["us_p99"] < TARGET_EMIT_US,
        "appends_events_per_s_one_process": round(median),
        "appends_events_per_s_node": node["events_per_s"],
        "appends_target_met": best_node >= TARGET_EVENTS_S,
        "sink_events_per_s": sink["events_per_s"],
        "sql_log_postgresql_events_per_s": result["results"]["peer_sql_log_postgresql"][
            "events_per_s_median"
        ],
        "nats_py_pipelined_events_per_s": peer["jetstream_publish_pipelined_500"]["events_per_s"],
        "nats_py_awaited_each_events_per_s": peer["jetstream_publish_awaited_each"]["events_per_s"],
        "nats_py_core_no_ack_events_per_s": peer["core_publish_no_ack"]["events_per_s"],
        "appends_vs_nats_py_pipelined": round(
            median / peer["jetstream_publish_pipelined_500"]["events_per_s"], 2
        ),
        "appends_vs_sql_log": round(
            median / result["results"]["peer_sql_log_postgresql"]["events_per_s_median"], 2
        ),
    }
    name = args.name or ("event_log_broker-quick" if args.quick else "event_log_broker")
    result["path"] = str(harness.write_result(name, result).relative_to(harness.ROOT))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
