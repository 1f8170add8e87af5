"""Stream scoring benchmark: Conveyor's stream scorer on NATS JetStream against a plain
nats-py loop calling ``model.predict`` (the limit), in the same run.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/stream_scoring.py
    .venv/bin/python benchmarks/stream_scoring.py --quick      # 10k events, 1 round

Model: the serving benchmark's LogisticRegression (20 float features,
``peers/serving_workload.fit("lr", frame=True)``), registered in a fresh project.

1. **Throughput (events/s end to end)**: ``--events`` JSON rows are published to an input
   stream first; then 1 (and 2) consumer processes drain it: each fetches a batch,
   scores it, publishes one result per event to an output stream (``Nats-Msg-Id``, publish
   acks awaited) and acks the batch. The rate is events / (time the last result was stored
   - time the first consumer process started), read off the output stream's own message
   timestamps, so it covers publish-acked input -> scored -> sink ack. Conveyor runs
   ``score_stream`` (signature checks, routes, dead letters, the same code as
   production); the peer runs the bare loop: ``json.loads``, one ``numpy`` array,
   ``model.predict``, publish, ack.
2. **Latency at half the peak rate**: one consumer running, events published at half of
   Conveyor's one-consumer rate for ``--seconds``, each carrying the time it was sent;
   end-to-end latency = the output message's stored time - the send time; p50/p99.

Every figure is the median over ``--rounds`` (3; the cases rotate their order each round),
each round's value kept in the JSON. Writes ``benchmarks/results/stream_scoring.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import harness
from peers import serving_workload as wl

NATS = os.environ.get("CONVEYOR_BENCH_NATS", "nats://127.0.0.1:4222")
BATCH = 256


# -- the consumers (run as their own processes) ------------------------------------------


def consume_conveyor(root: str, stream: str, output: str, idle: float) -> None:
    from conveyor.project import Project
    from conveyor.scoring.stream import StreamScorer

    with Project.open(root) as project:
        scorer = StreamScorer(
            project,
            "lr@1",
            f"{NATS}/{stream}?durable=bench&ack_wait=30",
            output=output,
            dead_letter=f"{output}.dlq",
            time_field="sent",
            batch=BATCH,
        )
        scorer.start()
        print("ready", flush=True)  # connected, model loaded and warmed up
        sys.stdin.readline()  # go
        result = scorer.run(idle_timeout=idle)
    print(json.dumps(result.to_dict()), flush=True)


def consume_plain(root: str, stream: str, output: str, idle: float) -> None:
    """The limit: a bare nats-py loop, the model called directly (no checks, no routes)."""
    import nats
    import numpy as np
    import orjson

    from conveyor.project import Project

    with Project.open(root) as project:
        model = project.registry.load("lr@1").model
    features = wl.FEATURES

    async def run() -> int:
        nc = await nats.connect(NATS)
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind("bench", stream)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # go
        done = 0
        last = time.monotonic()
        while time.monotonic() - last < idle:
            try:
                msgs = await sub.fetch(BATCH, timeout=1)
            except TimeoutError:  # nats-py's, or asyncio's from inside its pull
                continue
            last = time.monotonic()
            rows = [orjson.loads(m.data) for m in msgs]
            x = np.array([[r[f] for f in features] for r in rows], dtype=np.float64)
            import pandas as pd

            answers = model.predict(pd.DataFrame(x, columns=features))
            acks = [
                js.publish(
                    output,
                    orjson.dumps({"id": m.reply, "prediction": int(a), "time": r["sent"]}),
                    headers={"Nats-Msg-Id": f"{stream}:{m.metadata.sequence.stream}"},
                )
                for m, r, a in zip(msgs, rows, answers, strict=True)
            ]
            await asyncio.gather(*acks)
            for m in msgs:
                await m.ack()
            await nc.flush()
            done += len(msgs)
        await nc.close()
        return done

    print(json.dumps({"scored": asyncio.run(run())}), flush=True)


# -- the coordinator -----------------------------------------------------------------------


async def _js() -> Any:
    import nats

    nc = await nats.connect(NATS)
    return nc, nc.jetstream()


def make_streams(token: str) -> tuple[str, str, str]:
    """An input stream (and its durable) and an output stream of this run's own."""
    from nats.js import api

    stream, subject, output = f"bench_in_{token}", f"bench.{token}.in", f"bench.{token}.out"

    async def go() -> None:
        nc, js = await _js()
        await js.add_stream(name=stream, subjects=[f"{subject}.>"])
        await js.add_stream(name=f"bench_out_{token}", subjects=[output], duplicate_window=600)
        await js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name="bench",
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30,
                max_ack_pending=20_000,
            ),
        )
        await nc.close()

    asyncio.run(go())
    return stream, subject, output


def drop_streams(token: str) -> None:
    async def go() -> None:
        nc, js = await _js()
        for name in (f"bench_in_{token}", f"bench_out_{token}", f"bench_{token}_out_dlq"):
            with contextlib.suppress(Exception):  # never made
                await js.delete_stream(name)
        await nc.close()

    asyncio.run(go())


def rows(n: int, sent: float | None = None) -> list[bytes]:
    import orjson

    base = [dict(zip(wl.FEATURES, wl.request_row(), strict=True)) for _ in range(64)]
    return [orjson.dumps({**base[i % 64], "sent": sent or 0.0, "n": i}) for i in range(n)]


def preload(subject: str, n: int) -> None:
    async def go() -> None:
        nc, js = await _js()
        bodies = rows(n)
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(js.publish(f"{subject}.x", b) for b in bodies[start : start + 1000])
            )
        await nc.close()

    asyncio.run(go())


def paced(subject: str, rate: float, seconds: float) -> int:
    """Publish at ``rate`` events/s for ``seconds`` (1 ms ticks), each with its send time."""
    import orjson

    row = dict(zip(wl.FEATURES, wl.request_row(), strict=True))

    async def go() -> int:
        nc, _ = await _js()
        sent = 0
        start = time.time()
        while (now := time.time()) - start < seconds:
            due = int((now - start) * rate) - sent
            for _ in range(due):
                await nc.publish(
                    f"{subject}.x", orjson.dumps({**row, "sent": time.time(), "n": sent})
                )
                sent += 1
            await nc.flush()
            await asyncio.sleep(0.001)
        await nc.close()
        return sent

    return asyncio.run(go())


def output_times(token: str, expected: int, timeout: float) -> list[tuple[float, float]]:
    """(stored time, event send time) of every output message, once ``expected`` are there."""
    import orjson

    async def go() -> list[tuple[float, float]]:
        nc, js = await _js()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await js.stream_info(f"bench_out_{token}")
            if info.state.messages >= expected:
                break
            await asyncio.sleep(0.2)
        sub = await js.pull_subscribe(f"bench.{token}.out", stream=f"bench_out_{token}")
        out = []
        while True:
            try:
                msgs = await sub.fetch(2000, timeout=1)
            except Exception:
                break
            for m in msgs:
                out.append((m.metadata.timestamp.timestamp(), orjson.loads(m.data)["time"]))
                await m.ack()
        await nc.close()
        return out

    return asyncio.run(go())


def start(kind: str, root: str, stream: str, output: str, idle: float) -> subprocess.Popen[str]:
    """A consumer process, returned once it is connected with its model loaded; it starts
    consuming at :func:`go`."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--consume", kind, root, stream, output, str(idle)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"the {kind} consumer did not start: {line!r}")
    return proc


def go(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def throughput(kind: str, consumers: int, root: str, n: int, log: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:8]
    stream, subject, output = make_streams(token)
    try:
        procs = [start(kind, root, stream, output, idle=3) for _ in range(consumers)]
        preload(subject, n)
        go(procs)
        times = output_times(token, n, timeout=600)
        results = [json.loads(p.communicate(timeout=120)[0].splitlines()[-1]) for p in procs]
        stored = sorted(t for t, _ in times)
        # Every consumer was connected, its model loaded, before the go: from the first
        # result stored to the last is the drain rate of the backlog.
        seconds = stored[-1] - stored[0]
        rate = (len(stored) - 1) / seconds if seconds > 0 else float("nan")
        shares = [r.get("scored") for r in results]
        log(
            f"{kind} x{consumers}: {len(stored)} of {n} in {seconds:.2f} s = "
            f"{rate:,.0f} events/s {shares}"
        )
        return {
            "engine": kind,
            "consumers": consumers,
            "events": n,
            "results": len(stored),
            "seconds": round(seconds, 3),
            "events_per_s": round(rate, 1),
            "per_consumer": shares,
        }
    finally:
        drop_streams(token)


def latency(kind: str, root: str, rate: float, seconds: float, log: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:8]
    stream, subject, output = make_streams(token)
    try:
        proc = start(kind, root, stream, output, idle=3)
        go([proc])
        sent = paced(subject, rate, seconds)
        times = output_times(token, sent, timeout=120)
        proc.communicate(timeout=120)
        lat = sorted((stored - event) * 1000 for stored, event in times)
        q = statistics.quantiles(lat, n=100)
        result = {
            "engine": kind,
            "rate": round(rate, 1),
            "sent": sent,
            "received": len(lat),
            "p50_ms": round(q[49], 2),
            "p99_ms": round(q[98], 2),
            "max_ms": round(lat[-1], 2),
        }
        log(f"{kind} at {rate:,.0f}/s: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
        return result
    finally:
        drop_streams(token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="medians over rounds")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--consume", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        kind, root, stream, output, idle = args.consume
        (consume_conveyor if kind == "conveyor" else consume_plain)(
            root, stream, output, float(idle)
        )
        return
    if args.quick:
        args.events, args.seconds, args.rounds = 10_000, 5.0, 1
    from conveyor.project import Project, init_project

    log = print
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "proj")
        init_project(Path(root))
        with Project.open(root) as project:
            import pandas as pd

            x = pd.DataFrame([wl.request_row() for _ in range(8)], columns=wl.FEATURES)
            project.registry.register("lr", wl.fit("lr", frame=True), signature_from=x)
        cases = [(kind, consumers) for kind in ("conveyor", "plain") for consumers in (1, 2)]
        rounds: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in cases}
        for i in range(args.rounds):
            for kind, consumers in cases[i % len(cases) :] + cases[: i % len(cases)]:
                rounds[(kind, consumers)].append(
                    throughput(kind, consumers, root, args.events, log)
                )
        runs = []
        for (kind, consumers), each in rounds.items():
            rates = [r["events_per_s"] for r in each]
            runs.append(
                {
                    "engine": kind,
                    "consumers": consumers,
                    "events": args.events,
                    "events_per_s": round(statistics.median(rates), 1),
                    "rounds": each,
                }
            )
        peak = next(
            r["events_per_s"] for r in runs if r["engine"] == "conveyor" and r["consumers"] == 1
        )
        lat = []
        for kind in ("conveyor", "plain"):
            each = [latency(kind, root, peak / 2, args.seconds, log) for _ in range(args.rounds)]
            lat.append(
                {
                    "engine": kind,
                    "rate": round(peak / 2, 1),
                    "p50_ms": round(statistics.median(r["p50_ms"] for r in each), 2),
                    "p99_ms": round(statistics.median(r["p99_ms"] for r in each), 2),
                    "rounds": each,
                }
            )
    by = {(r["engine"], r["consumers"]): r["events_per_s"] for r in runs}
    result = {
        "benchmark": "stream_scoring",
        "when": harness.timestamp(),
        "machine": harness.machine(),
        "model": "LogisticRegression, 20 float features (benchmarks/serving.py's)",
        "broker": NATS,
        "batch": BATCH,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "throughput": runs,
        "latency_at_half_peak": lat,
        "ratios": {
            "conveyor_vs_plain_1": round(by[("conveyor", 1)] / by[("plain", 1)], 3),
            "conveyor_vs_plain_2": round(by[("conveyor", 2)] / by[("plain", 2)], 3),
            "conveyor_2_vs_1": round(by[("conveyor", 2)] / by[("conveyor", 1)], 3),
        },
    }
    path = harness.write_result("stream_scoring", result)
    print(json.dumps(result["ratios"]), "->", path)


if __name__ == "__main__":
    main()
