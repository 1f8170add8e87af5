"""The LLM gateway's overhead beside LiteLLM's proxy, in one run, against one upstream.

    .venv/bin/python benchmarks/gateway.py                       # ~5 minutes
    .venv/bin/python benchmarks/gateway.py --duration 5 --skip-litellm
    .venv/bin/python benchmarks/gateway.py --stages limits,cache,budgets --store postgres
    .venv/bin/python benchmarks/gateway.py --ledger redis --skip-litellm --skip-guardrails
    .venv/bin/python benchmarks/gateway.py --ledger redis --lease 0.05 --skip-guardrails

- **Upstream**: nginx answering ``POST /plain/v1/chat/completions`` with a fixed chat
  completion and ``POST /sse/v1/chat/completions`` with a fixed stream of 100 chunks
  (OpenAI's format, a usage chunk, ``[DONE]``): zero delay, no Python, so the gateways
  are what is measured. Its own figures are measured first, with the same clients.
- **Conveyor**: ``conveyor serve`` (one worker, its defaults: uvloop, httptools, the
  event log in the project's SQLite) with the gateway routing ``fast`` to the plain
  upstream and ``stream`` to the SSE one, through an API key with a rate limit (high
  enough never to refuse), every ``llm.call`` recorded in the event log and counted in
  the metrics. Configurations:

  - ``conveyor``: that, no stage;
  - ``conveyor-stages``: plus the stages ``--stages`` names (default: every one in
    :data:`STAGES`: limits per key, the exact-cache lookup, a price and a budget
    reserved and settled in the store), guardrails off; ``--store postgres`` puts the
    project's store (budgets' counters) in a fresh PostgreSQL database, ``--ledger redis``
    counts the budgets in Redis (``gateway.budgets_url``) instead;
  - ``conveyor-long`` and ``conveyor-guardrails``: no stage, then input and output
    guardrails (injection heuristics, secrets, PII redacted), both on a 1,000-token
    prompt: the guardrails' own cost is the difference.
- **LiteLLM**: its proxy (``litellm[proxy]`` from PyPI in ``.bench-venvs/litellm``), one
  worker, a master key, the same two upstream models.

Measured on the same machine (often 2 shared cores): wrk (one thread) at one
connection, the latency each adds over the upstream alone (p50, p99); at 32
connections, requests/s of one worker. Beside each, the CPU seconds the server's
process (its threads and children) spent per request, read from ``/proc``: the
machine's other load moves requests/s, much less the CPU a request costs, and
``1e6 / cpu_us`` is what one core would serve. How the 2 cores were shared (server,
upstream, wrk, and the load average before) is recorded with each measurement.
Streams: a raw-socket client (one keep-alive connection, no client library in the
timing) measures the time to the first chunk and per chunk after it over the 100,
median of ``--streams``. Medians and ratios from one run; results in
``benchmarks/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httptools
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

from serving import LUA, wrk

#: The version that installed when this benchmark was written (the issue measured 1.108).
LITELLM = "litellm[proxy]==1.108.7"
harness.PEERS["litellm"] = (LITELLM,)

CHUNKS = 100
CONNECTIONS = 32
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
SHORT = "Say hello."
#: 940 words, about 1,000 tokens: the issue's guardrail prompt.
LONG = (
    "Please summarise the following customer message for the support team. " * 10
    + "My order 12345 arrived damaged and I would like a refund to my card. " * 60
)


def _limits(spec: dict[str, Any]) -> None:
    spec["limits"] = {"default": {"rpm": 10_000_000, "tpm": 1_000_000_000}}


def _cache(spec: dict[str, Any]) -> None:
    spec["cache"] = {"exact": True}  # the bench's requests sample (no temperature): a lookup


def _budgets(spec: dict[str, Any]) -> None:
    spec["prices"] = {
        "plain": {"input": 0.1, "output": 0.1},
        "sse": {"input": 0.1, "output": 0.1},
    }
    spec["budgets"] = [{"name": "bench", "scope": "key", "limit_usd": 1e9}]


def _guardrails(spec: dict[str, Any]) -> None:
    spec["guardrails"] = {  # the "heuristics + PII" (and secrets), prompts and answers
        "policies": {
            "p": [
                {
                    "detector": "injection",
                    "where": "input",
                    "action": "block",
                    "mode": "heuristics",
                },
                {"detector": "secrets", "action": "block"},
                {"detector": "pii", "action": "redact"},
            ]
        },
        "default": "p",
    }


#: The gateway's stages and how the benchmark turns each on: a stage added to the gateway
#: gets a line here (``--stages`` names them; guardrails have their own configuration).
STAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "limits": _limits,
    "cache": _cache,
    "budgets": _budgets,
}


def _sse() -> str:
    lines = []
    for i in range(CHUNKS):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
        }
        lines.append("data: " + json.dumps(chunk, separators=(",", ":")))
    last = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = {**last, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS}}
    lines += ["data: " + json.dumps(last), "data: " + json.dumps(usage), "data: [DONE]"]
    return "\n\n".join(lines) + "\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    tmp.chmod(0o755)  # nginx's workers run as another user
    (tmp / "answer.json").write_text(json.dumps(ANSWER))
    (tmp / "stream.sse").write_text(_sse())
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = /plain/v1/chat/completions {{
      default_type application/json;
      error_page 405 =200 /answer.json;
      try_files /answer.json =404;
    }}
    location = /sse/v1/chat/completions {{
      default_type text/event-stream;
      error_page 405 =200 /stream.sse;
      try_files /stream.sse =404;
    }}
    location = /answer.json {{ default_type application/json; }}
    location = /stream.sse {{ default_type text/event-stream; }}
    root {tmp};
  }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, port


def _wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


# -- CPU accounting ---------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (every thread), so far."""
    total = 0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(
    url: str, lua: Path, connections: int, seconds: float, server: int, upstream: int | None
) -> dict[str, Any]:
    """One wrk run, with the CPU each party spent in it (server, upstream, wrk)."""
    server_before = cpu_seconds(server)
    upstream_before = cpu_seconds(upstream) if upstream is not None else 0.0
    wrk_before = _children_cpu()
    started = time.perf_counter()
    result = wrk(url, lua, connections, seconds)
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(server) - server_before
    upstream_cpu = (cpu_seconds(upstream) - upstream_before) if upstream is not None else 0.0
    wrk_cpu = _children_cpu() - wrk_before
    answered = max(1, result["requests"])
    result.update(
        cpu_us_per_request=round(server_cpu / answered * 1e6, 1),
        cpu={
            "wall_s": round(wall, 2),
            "server_s": round(server_cpu, 2),
            "upstream_s": round(upstream_cpu, 2),
            "wrk_s": round(wrk_cpu, 2),
            "cores_used": round((server_cpu + upstream_cpu + wrk_cpu) / wall, 2),
        },
    )
    return result


# -- the servers ------------------------------------------------------------------------


def _gateway_yaml(
    upstream: str,
    stages: list[str],
    guardrails: bool,
    budgets_url: str | None = None,
    lease: float = 0.0,
) -> str:
    spec: dict[str, Any] = {
        "providers": {
            "plain": {"kind": "openai", "base_url": f"{upstream}/plain/v1"},
            "sse": {"kind": "openai", "base_url": f"{upstream}/sse/v1"},
        },
        "deployments": {
            "plain": {"provider": "plain", "model": "bench"},
            "sse": {"provider": "sse", "model": "bench"},
        },
        "models": {"fast": ["plain"], "stream": ["sse"]},
    }
    for name in stages:
        STAGES[name](spec)
    if guardrails:
        _guardrails(spec)
    if budgets_url and "budgets" in stages:
        spec["budgets_url"] = budgets_url
    if lease and "budgets" in stages:
        spec["budget_lease"] = lease
    return "gateway: " + json.dumps(spec) + "\n"


def start_conveyor(
    tmp: Path,
    name: str,
    upstream: str,
    stages: list[str],
    *,
    guardrails: bool = False,
    store: str | None = None,
    budgets_url: str | None = None,
    lease: float = 0.0,
) -> tuple[subprocess.Popen[bytes], int, str]:
    root = tmp / name
    py = str(harness.ROOT / ".venv" / "bin" / "python")
    subprocess.run(
        [py, "-m", "conveyor.cli", "init", str(root), "--name", "bench"],
        check=True,
        capture_output=True,
    )
    with (root / "conveyor.yaml").open("a") as fh:
        fh.write(_gateway_yaml(upstream, stages, guardrails, budgets_url, lease))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if store is not None:
        env["CONVEYOR_STORE"] = store
    made = subprocess.run(
        [
            *(py, "-m", "conveyor.cli", "keys", "create", "bench", "--role", "admin"),
            *("--rate", "1000000", "--json", "-C", str(root)),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    token = json.loads(made.stdout)["token"]
    port = free_port()
    proc = subprocess.Popen(
        [py, "-m", "conveyor.cli", "serve", "--port", str(port), "-C", str(root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / f"{name}.log", "wb"),  # noqa: SIM115
    )
    _wait_port(port)
    return proc, port, token


def start_litellm(tmp: Path, upstream: str) -> tuple[subprocess.Popen[bytes], int, str, str]:
    python = harness.ensure_venv("litellm")
    config = tmp / "litellm.yaml"
    config.write_text(
        f"""
model_list:
  - model_name: fast
    litellm_params: {{model: openai/bench, api_base: "{upstream}/plain/v1", api_key: sk-up}}
  - model_name: stream
    litellm_params: {{model: openai/bench, api_base: "{upstream}/sse/v1", api_key: sk-up}}
general_settings:
  master_key: sk-bench-master
litellm_settings:
  telemetry: false
"""
    )
    port = free_port()
    env = {**os.environ, **harness.PEER_ENV, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [
            str(python.parent / "litellm"),
            "--config",
            str(config),
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        stdout=open(tmp / "litellm.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    _wait_port(port, timeout=180)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return proc, port, "sk-bench-master", version


@contextlib.contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the clients ------------------------------------------------------------------------


def _lua(tmp: Path, name: str, token: str | None, model: str, prompt: str) -> Path:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]})
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    path = tmp / f"{name}.lua"
    path.write_text(LUA.format(body=json.dumps(body), headers=auth))
    return path


class _Body:
    """httptools' callbacks: the body, and when its first chunk and ``[DONE]`` came."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.first: float | None = None
        self.last: float | None = None
        self.complete = False

    def on_body(self, piece: bytes) -> None:
        self.body += piece
        if self.first is None and b"data: {" in self.body:
            self.first = time.perf_counter()
        if self.last is None and b"data: [DONE]" in self.body:
            self.last = time.perf_counter()

    def on_message_complete(self) -> None:
        self.complete = True


def stream_timing(port: int, path: str, token: str | None, n: int) -> dict[str, float]:
    """Time to the first chunk and per chunk after it (to ``[DONE]``), median over ``n``
    streams on one keep-alive connection: raw socket, no client library in the timing."""
    body = json.dumps(
        {"model": "stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    if token:
        head += f"authorization: Bearer {token}\r\n"
    request = (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
    ttft, per_chunk = [], []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30)
        for i in range(n + 3):  # 3 to warm up
            answer = _Body()
            parser = httptools.HttpResponseParser(answer)
            started = time.perf_counter()
            sock.sendall(request)
            while not answer.complete:
                data = sock.recv(1 << 16)
                if not data:
                    raise RuntimeError(f"{path}: the connection closed mid-stream")
                parser.feed_data(data)
            if parser.get_status_code() != 200:
                raise RuntimeError(f"{path}: {parser.get_status_code()} {bytes(answer.body)!r}")
            count = answer.body.count(b"data: {")
            assert answer.first and answer.last and count >= CHUNKS, f"{count} chunks"
            if i >= 3:
                ttft.append((answer.first - started) * 1000)
                per_chunk.append((answer.last - answer.first) * 1000 / (count - 1))
    return {"ttft_ms": statistics.median(ttft), "per_chunk_ms": statistics.median(per_chunk)}


def _ok(result: dict[str, Any], what: str) -> dict[str, Any]:
    if result["non_2xx"] or result["errors"]:
        raise RuntimeError(f"{what}: {result['non_2xx']} non-2xx, {result['errors']} errors")
    return result


def measure(
    tmp: Path,
    name: str,
    port: int,
    prefix: str,
    token: str | None,
    args: argparse.Namespace,
    prompt: str,
    *,
    server: int,
    upstream: int,
    strict: bool = True,
) -> dict[str, Any]:
    lua = _lua(tmp, name, token, "fast", prompt)
    url = f"http://127.0.0.1:{port}{prefix}/chat/completions"
    probe = httpx.post(
        url,
        json={"model": "fast", "messages": [{"role": "user", "content": prompt}]},
        headers={"authorization": f"Bearer {token}"} if token else {},
        timeout=30,
    )
    assert probe.status_code == 200, f"{name}: {probe.status_code} {probe.text[:300]}"
    print(f"  {name}: 1 connection", flush=True)
    wrk(url, lua, 1, args.warmup)
    one = _ok(load(url, lua, 1, args.duration, server, upstream), name)
    print(f"  {name}: {CONNECTIONS} connections", flush=True)
    wrk(url, lua, CONNECTIONS, args.warmup)
    many = load(url, lua, CONNECTIONS, args.duration, server, upstream)
    if strict:
        _ok(many, name)
    # with budgets in SQLite, each call is two write transactions, which serialize: at 32
    # connections some wait past the server's store timeout and answer 503; counted in
    # the result (non_2xx), not hidden
    print(f"  {name}: streams", flush=True)
    streams = stream_timing(port, f"{prefix}/chat/completions", token, args.streams)
    return {"c1": one, f"c{CONNECTIONS}": many, **streams}


def _added(side: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    many = f"c{CONNECTIONS}"
    return {
        "added_p50_ms": round(side["c1"]["p50_ms"] - base["c1"]["p50_ms"], 3),
        "added_p99_ms": round(side["c1"]["p99_ms"] - base["c1"]["p99_ms"], 3),
        f"rps_{many}": round(side[many]["rps"], 1),
        f"non_2xx_{many}": side[many]["non_2xx"],
        "cpu_us_per_request_c1": side["c1"].get("cpu_us_per_request"),
        f"cpu_us_per_request_{many}": side[many].get("cpu_us_per_request"),
        "added_ttft_ms": round(side["ttft_ms"] - base["ttft_ms"], 3),
        "added_per_chunk_ms": round(side["per_chunk_ms"] - base["per_chunk_ms"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"stages of conveyor-stages, comma-separated, of {', '.join(STAGES)} ('' none)",
    )
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite", help="conveyor-stages' store"
    )
    parser.add_argument(
        "--ledger",
        choices=("store", "redis"),
        default="store",
        help="where conveyor-stages counts budgets: the project's store, or Redis "
        "(gateway.budgets_url, 127.0.0.1:6379)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=0.0,
        help="conveyor-stages' gateway.budget_lease (a share of the limit a worker spends "
        "in memory; 0: every call reserves and settles in the ledger)",
    )
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-guardrails", action="store_true")
    parser.add_argument("--output", default="gateway", help="results/<output>.json")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        sys.exit(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        sys.exit("needs wrk and nginx: scripts/services.sh wrk nginx")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    results: dict[str, Any] = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "settings": {
            "duration_s": args.duration,
            "connections": [1, CONNECTIONS],
            "streams": args.streams,
            "chunks": CHUNKS,
            "stages": stages,
            "store": args.store,
            "ledger": args.ledger,
            "lease": args.lease,
            "long_prompt_words": len(LONG.split()),
        },
    }
    with contextlib.ExitStack() as stack:
        nginx, port = start_nginx(tmp)
        stack.enter_context(running(nginx))
        upstream = f"http://127.0.0.1:{port}"
        print("upstream alone (nginx)", flush=True)
        lua = _lua(tmp, "upstream", None, "bench", SHORT)
        url = f"{upstream}/plain/v1/chat/completions"
        wrk(url, lua, 1, args.warmup)
        results["upstream"] = {
            "c1": _ok(load(url, lua, 1, args.duration, nginx.pid, None), "upstream"),
            f"c{CONNECTIONS}": _ok(
                load(url, lua, CONNECTIONS, args.duration, nginx.pid, None), "upstream"
            ),
            **stream_timing(port, "/sse/v1/chat/completions", None, args.streams),
        }
        sides: list[tuple[str, list[str], bool, str]] = [
            ("conveyor", [], False, SHORT),
            ("conveyor-stages", stages, False, SHORT),
        ]
        if not args.skip_guardrails:
            sides += [("conveyor-long", [], False, LONG), ("conveyor-guardrails", [], True, LONG)]
        for name, on, guardrails, prompt in sides:
            print(name, flush=True)
            with contextlib.ExitStack() as side:
                store = None
                if name == "conveyor-stages" and args.store == "postgres":
                    store = side.enter_context(harness.postgres_database("gateway"))
                ledger = None
                if name == "conveyor-stages" and args.ledger == "redis":
                    ledger = f"redis://127.0.0.1:6379/0?prefix=bench-{os.getpid()}:"
                proc, cport, token = start_conveyor(
                    tmp,
                    name,
                    upstream,
                    on,
                    guardrails=guardrails,
                    store=store,
                    budgets_url=ledger,
                    lease=args.lease if name == "conveyor-stages" else 0.0,
                )
                side.enter_context(running(proc))
                results[name] = measure(
                    tmp,
                    name,
                    cport,
                    "/llm/v1",
                    token,
                    args,
                    prompt,
                    server=proc.pid,
                    upstream=nginx.pid,
                    strict=name != "conveyor-stages",
                )
        if not args.skip_litellm:
            print("litellm", flush=True)
            proc, lport, key, version = start_litellm(tmp, upstream)
            with running(proc):
                results["litellm"] = {
                    "version": version,
                    **measure(
                        tmp,
                        "litellm",
                        lport,
                        "/v1",
                        key,
                        args,
                        SHORT,
                        server=proc.pid,
                        upstream=nginx.pid,
                    ),
                }
    up = results["upstream"]
    summary: dict[str, Any] = {
        "upstream": {
            "p50_ms": up["c1"]["p50_ms"],
            "rps_c1": round(up["c1"]["rps"], 1),
            f"rps_c{CONNECTIONS}": round(up[f"c{CONNECTIONS}"]["rps"], 1),
            "ttft_ms": round(up["ttft_ms"], 3),
        }
    }
    for name in ("conveyor", "conveyor-stages", "conveyor-guardrails", "litellm"):
        if name in results:
            summary[name] = _added(results[name], up)
    if "conveyor-guardrails" in results:
        summary["guardrails_alone"] = _added(
            results["conveyor-guardrails"], results["conveyor-long"]
        )
    if "litellm" in results:
        summary["litellm"]["version"] = results["litellm"]["version"]
        ours, theirs = summary["conveyor"], summary["litellm"]
        many = f"rps_c{CONNECTIONS}"
        summary["ratios"] = {
            "added_p50_litellm_over_conveyor": round(
                theirs["added_p50_ms"] / max(ours["added_p50_ms"], 1e-3), 1
            ),
            f"{many}_conveyor_over_litellm": round(ours[many] / max(theirs[many], 1e-3), 1),
            "added_ttft_litellm_over_conveyor": round(
                theirs["added_ttft_ms"] / max(ours["added_ttft_ms"], 1e-3), 1
            ),
            "per_chunk_litellm_over_conveyor": round(
                theirs["added_per_chunk_ms"] / max(ours["added_per_chunk_ms"], 1e-4), 1
            ),
        }
    results["summary"] = summary
    path = harness.write_result(args.output, results)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
