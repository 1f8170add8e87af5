"""The MCP gateway's cost per tool call, beside calling the same tool server directly with
the official ``mcp`` client, in one run.

    .venv/bin/python benchmarks/mcp_gateway.py              # ~2 minutes
    .venv/bin/python benchmarks/mcp_gateway.py --calls 500

The tool server is ``conveyor.testing.mcp_tools_server`` (the SDK's MCPServer), its tool
``add(a, b)``. Measured, each with the same client code (one session; at concurrency 1,
calls one after the other; at 32, 32 tasks sharing the session):

- ``direct-stdio``: the client starts the server itself and talks to it on stdio;
- ``direct-http``: the server over streamable HTTP in its own process;
- ``gateway-http``: ``conveyor serve`` with the gateway (the server as a local stdio
  upstream, isolation ``process``), the client over streamable HTTP with an API key: auth,
  the catalogue, schema validation, the secret scan of arguments and result, a budget
  (calls per conversation, in the project's SQLite store), a Python interceptor before and
  after, the ``mcp.call`` event and metrics;
- ``gateway-in-process``: ``McpGateway.call`` in the benchmark's process with the same
  checks, against ``direct-stdio``'s client path: the gateway's own cost without a second
  HTTP hop.

The client and the servers share the machine's 2 cores: the calls/s are the whole system's.
Medians and ratios from one run; results in ``benchmarks/results/mcp_gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import harness

SERVER = [sys.executable, "-m", "conveyor.testing.mcp_tools_server"]
PY = str(harness.ROOT / ".venv" / "bin" / "python")

HOOKS = """
def before(call):
    return None


def after(call):
    return None
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def _series(
    call: Callable[[int], Awaitable[Any]], calls: int, concurrency: int
) -> dict[str, Any]:
    for i in range(20):  # warm-up
        await call(i)
    latencies: list[float] = []

    async def worker(start: int) -> None:
        for i in range(start, calls, concurrency):
            t0 = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "calls": len(latencies),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "calls_per_s": round(len(latencies) / elapsed, 1),
    }


async def _measure(client: Any, calls: int, name: str = "add") -> dict[str, Any]:
    async def call(i: int) -> Any:
        result = await client.call_tool(name, {"a": i, "b": 1})
        assert not result.is_error, result
        return result

    return {
        "c1": await _series(call, calls, 1),
        "c32": await _series(call, calls, 32),
    }


async def direct_stdio(calls: int) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
    async with Client(params) as client:
        return await _measure(client, calls)


async def direct_http(calls: int) -> dict[str, Any]:
    from mcp import Client

    port = _free_port()
    proc = subprocess.Popen([*SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            return await _measure(client, calls)
    finally:
        proc.terminate()
        proc.wait(10)


def _project(tmp: Path) -> Path:
    root = tmp / "project"
    subprocess.run(
        [PY, "-m", "conveyor.cli", "init", str(root), "--name", "mcpbench"],
        check=True,
        capture_output=True,
    )
    (root / "bench_hooks.py").write_text(HOOKS)
    spec = {
        "servers": {"t": {"command": SERVER, "isolation": {"level": "process"}}},
        "naming": "collision",
        "budgets": [{"name": "talk", "scope": "conversation", "max_calls": 10_000_000}],
        "interceptors": [
            {"kind": "python", "target": "bench_hooks:before", "where": "before"},
            {"kind": "python", "target": "bench_hooks:after", "where": "after"},
        ],
    }
    with (root / "conveyor.yaml").open("a") as fh:
        fh.write("\nmcp: " + json.dumps(spec) + "\n")
    return root


async def gateway_http(root: Path, calls: int) -> dict[str, Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = str(root)
    made = subprocess.run(
        [
            PY,
            "-m",
            "conveyor.cli",
            "keys",
            "create",
            "bench",
            "--role",
            "admin",
            "--json",
            "-C",
            str(root),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    token = json.loads(made.stdout)["token"]
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "conveyor.cli", "serve", "--port", str(port), "-C", str(root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        headers = {"authorization": f"Bearer {token}", "x-conveyor-conversation": "bench"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with Client(transport) as client:
                for _ in range(100):  # the upstream connects after the server is up
                    if any(t.name == "add" for t in (await client.list_tools()).tools):
                        break
                    await asyncio.sleep(0.2)
                return await _measure(client, calls)
    finally:
        proc.terminate()
        proc.wait(10)


async def gateway_in_process(root: Path, calls: int) -> dict[str, Any]:
    sys.path.insert(0, str(root))
    from conveyor.agents.gateway import Caller, McpGateway
    from conveyor.agents.settings import ledger_of, mcp_of
    from conveyor.project import Project

    with Project.open(root, env={}) as project:
        spec = mcp_of(project.spec)

        def record(event: dict[str, Any]) -> None:
            project.events.record("mcp.call", subject=event["tool"], payload=event)

        gateway = McpGateway(spec, root, record=record, ledger=ledger_of(project, spec))
        await gateway.start()
        caller = Caller(key="bench", conversation="bench")

        class Shim:
            async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
                return await gateway.call(name, arguments, caller)

        try:
            return await _measure(Shim(), calls)
        finally:
            await gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--output", default="mcp_gateway")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    root = _project(tmp)
    results: dict[str, Any] = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "settings": {"calls": args.calls, "concurrency": [1, 32], "tool": "add"},
    }
    for name, run in (
        ("direct-stdio", lambda: direct_stdio(args.calls)),
        ("direct-http", lambda: direct_http(args.calls)),
        ("gateway-http", lambda: gateway_http(root, args.calls)),
        ("gateway-in-process", lambda: gateway_in_process(root, args.calls)),
    ):
        print(name, flush=True)
        results[name] = asyncio.run(run())
        print("  ", results[name], flush=True)
    direct, http_direct = results["direct-stdio"], results["direct-http"]
    results["summary"] = {
        "gateway_own_added_p50_ms_c1": round(
            results["gateway-in-process"]["c1"]["p50_ms"] - direct["c1"]["p50_ms"], 3
        ),
        "gateway_http_added_p50_ms_c1_over_direct_http": round(
            results["gateway-http"]["c1"]["p50_ms"] - http_direct["c1"]["p50_ms"], 3
        ),
        "gateway_http_added_p50_ms_c1_over_direct_stdio": round(
            results["gateway-http"]["c1"]["p50_ms"] - direct["c1"]["p50_ms"], 3
        ),
    }
    print(json.dumps(results["summary"], indent=1))
    print("wrote", harness.write_result(args.output, results))


if __name__ == "__main__":
    main()
