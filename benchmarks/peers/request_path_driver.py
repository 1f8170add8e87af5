"""Drive one Conveyor app in-process through ASGI: N native predicts one after another.

    python request_path_driver.py PROJECT lr N [--profile] [--off auth,events,...]

Prints JSON: microseconds per request (wall and process CPU), the status and
answer of the last request. Runs with whatever ``conveyor`` is first on the
path (today's, or an earlier commit's through PYTHONPATH), so one harness
measures both. No socket, no HTTP parser: what is left is Conveyor's request
path (routing, auth, limits, decoding, batching hand-off, the model, events,
metrics) plus the model's predict in its thread.

``--off`` switches layers off by replacing them in this process only, to
measure what each costs (``benchmarks/request_path.py --layers``):

- ``auth``: the key check (every caller is anonymous);
- ``events``: the prediction event (nothing recorded);
- ``metrics``: the request and prediction series (no counter, no histogram);
- ``tracing``: the request's span;
- ``handoff``: the batcher's thread (the model is called on the event loop).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import serving_workload as wl

from conveyor.project import Project
from conveyor.serving.app import create_app


class _Nothing:
    def inc(self, *args: Any) -> None:
        pass

    def observe(self, *args: Any) -> None:
        pass


def switch_off(layers: set[str]) -> None:
    """Replace the named layers with nothing (see the module docstring)."""
    if "auth" in layers:
        from conveyor.governance.access import Access, Caller

        anonymous = Caller(None, "anonymous")

        async def authorize(self: Any, token: Any, action: Any, **kw: Any) -> Any:
            return anonymous

        Access.authorize_async = authorize  # type: ignore[method-assign]
    if "events" in layers:
        from conveyor.serving.app import Server

        Server._record = lambda self, *a, **k: None  # type: ignore[method-assign]
    if "metrics" in layers:
        from conveyor.serving.metrics import ServerMetrics
        from conveyor.web.metrics import WebMetrics

        nothing = (_Nothing(), _Nothing())
        ServerMetrics.answered = lambda self, *a: nothing  # type: ignore[method-assign]
        WebMetrics.answered = lambda self, *a: None  # type: ignore[method-assign]
    if "tracing" in layers:
        from conveyor.web.pipeline import Observe

        Observe.start = lambda self: None  # type: ignore[method-assign]
    if "handoff" in layers:
        from conveyor.serving.batcher import Batcher

        async def inline(self: Any, table: Any, **kw: Any) -> Any:
            return self._predict(table)

        Batcher.submit = inline  # type: ignore[method-assign]


async def _drive(root: str, kind: str, n: int, profile: bool) -> dict[str, Any]:
    body = wl.records_body().encode()
    path = f"/v1/models/bench_{kind}/predict"
    project = Project.open(root)
    app = create_app(project)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    life = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"start-up failed: {started}")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *_key_header(root),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }

    async def call() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({**scope, "state": {}}, receive, send)
        return sent

    deadline = time.monotonic() + 60
    while (last := await call())[0]["status"] != 200:  # until the route is loaded
        if time.monotonic() > deadline:
            raise SystemExit(f"never ready: {last}")
        await asyncio.sleep(0.1)
    for _ in range(min(n, 500)):
        await call()
    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        last = await call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    await inbox.put({"type": "lifespan.shutdown"})
    await life
    project.close()
    return {
        "us_per_request_wall": wall / n * 1e6,
        "us_per_request_cpu": cpu / n * 1e6,
        "status": last[0]["status"],
        "answer": json.loads(last[1]["body"])["predictions"],
    }


def _key_header(root: str) -> list[tuple[bytes, bytes]]:
    """The project's benchmark key (auth is on, as in production), when it has one."""
    from pathlib import Path

    key = Path(root) / "bench.key"
    return [(b"x-api-key", key.read_text().strip().encode())] if key.exists() else []


if __name__ == "__main__":
    root, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if "--off" in sys.argv:
        switch_off(set(sys.argv[sys.argv.index("--off") + 1].split(",")) - {""})
    print(json.dumps(asyncio.run(_drive(root, kind, n, "--profile" in sys.argv))))
