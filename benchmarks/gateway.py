"""The LLM gateway's overhead beside LiteLLM's proxy, in one run, against one upstream.

    .venv/bin/python benchmarks/gateway.py [--duration 10] [--skip-litellm]

- **Upstream**: nginx answering ``POST /plain/v1/chat/completions`` with a fixed chat
  completion and ``POST /sse/v1/chat/completions`` with a fixed stream of 100 chunks
  (OpenAI's format, a usage chunk, ``[DONE]``): zero delay, no Python, so the gateways
  are what is measured. Its own figures are measured first.
- **Conveyor**: ``conveyor serve`` (one worker) with the gateway routing ``fast`` to
  the plain upstream and ``stream`` to the SSE one, API keys on, events and metrics on.
  Two configurations: ``conveyor`` (auth, the key's rate limit, events, metrics) and
  ``conveyor-full`` (also limits per key, a price and a budget reserved and settled in the
  project's SQLite store per call, the exact-cache lookup; guardrails off), and
  ``conveyor-guardrails`` (the full one plus input and output guardrails: injection,
  PII, secrets) on a 1,000-token prompt.
- **LiteLLM**: its proxy (``litellm[proxy]`` from PyPI in ``.bench-venvs/litellm``), one
  worker, a master key, the same two upstream models.

Measured with wrk (one thread) on the same 2 cores: at one connection, the latency
added over the upstream alone (p50, p99); at 32 connections, requests/s of one worker.
Streams: time to the first chunk and per-chunk cost over 100 chunks, from a Python client
at one connection (median of N). Medians and ratios from one run; results in
``benchmarks/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

from serving import wrk

harness.PEERS["litellm"] = ("litellm[proxy]",)

CHUNKS = 100
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


def _gateway_yaml(upstream: str, mode: str) -> str:
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
    if mode in ("full", "guardrails"):
        spec["prices"] = {
            "plain": {"input": 0.1, "output": 0.1},
            "sse": {"input": 0.1, "output": 0.1},
        }
        spec["budgets"] = [{"name": "bench", "scope": "key", "limit_usd": 1e9}]
        spec["limits"] = {"default": {"rpm": 10_000_000, "tpm": 1_000_000_000}}
        spec["cache"] = {"exact": True}
    if mode == "guardrails":
        spec["guardrails"] = {
            "policies": {
                "p": {
                    "input": [
                        {"detector": "injection", "action": "block"},
                        {"detector": "secrets", "action": "block"},
                        {"detector": "pii", "action": "redact"},
                    ],
                    "output": [{"detector": "pii", "action": "redact"}],
                }
            },
            "default": "p",
        }
    return "gateway: " + json.dumps(spec) + "\n"


def start_conveyor(tmp: Path, upstream: str, mode: str) -> tuple[subprocess.Popen[bytes], int, str]:
    root = tmp / f"conveyor-{mode}"
    py = str(harness.ROOT / ".venv" / "bin" / "python")
    subprocess.run(
        [py, "-m", "conveyor.cli", "init", str(root), "--name", "bench"],
        check=True,
        capture_output=True,
    )
    with (root / "conveyor.yaml").open("a") as fh:
        fh.write(_gateway_yaml(upstream, mode))
    made = subprocess.run(
        [
            py,
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
    )
    token = json.loads(made.stdout)["token"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = subprocess.Popen(
        [
            py,
            "-m",
            "conveyor.cli",
            "serve",
            "--port",
            str(port),
            "-C",
            str(root),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / f"conveyor-{mode}.log", "wb"),  # noqa: SIM115
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
    bin_dir = python.parent
    env = {**os.environ, **harness.PEER_ENV, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [
            str(bin_dir / "litellm"),
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


def _lua(tmp: Path, name: str, token: str | None, model: str, prompt: str) -> Path:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]})
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    path = tmp / f"{name}.lua"
    path.write_text(harness_lua().format(body=json.dumps(body), headers=auth))
    return path


def harness_lua() -> str:
    from serving import LUA

    return LUA


def stream_timing(url: str, token: str | None, model: str, n: int) -> dict[str, float]:
    """Time to the first chunk and per chunk after it, median over n streams (one client)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ttft, per_chunk = [], []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            first = None
            count = 0
            with client.stream("POST", url, json=body, headers=headers) as answer:
                for line in answer.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    count += 1
            done = time.perf_counter()
            assert first is not None and count >= CHUNKS, f"{count} chunks from {url}"
            ttft.append((first - started) * 1000)
            per_chunk.append((done - first) * 1000 / (count - 1))
    return {"ttft_ms": statistics.median(ttft), "per_chunk_ms": statistics.median(per_chunk)}


def _ok(result: dict[str, Any], what: str) -> dict[str, Any]:
    if result["non_2xx"] or result["errors"]:
        raise RuntimeError(f"{what}: {result['non_2xx']} non-2xx, {result['errors']} errors")
    return result


def measure(
    tmp: Path, name: str, base: str, token: str | None, args: argparse.Namespace, prompt: str
) -> dict[str, Any]:
    lua = _lua(tmp, name, token, "fast", prompt)
    url = f"{base}/chat/completions"
    probe = httpx.post(
        url,
        json={"model": "fast", "messages": [{"role": "user", "content": prompt}]},
        headers={"authorization": f"Bearer {token}"} if token else {},
        timeout=30,
    )
    assert probe.status_code == 200, f"{name}: {probe.status_code} {probe.text[:300]}"
    wrk(url, lua, 1, args.warmup)
    one = _ok(wrk(url, lua, 1, args.duration), name)
    wrk(url, lua, 32, args.warmup)
    many = wrk(url, lua, 32, args.duration)
    if name == "conveyor":
        _ok(many, name)
    # with budgets, each call is two SQLite write transactions, which serialize: at 32
    # connections some wait past the server's store timeout (0.5 s) and answer 503;
    # counted in the result (non_2xx), not hidden

    streams = stream_timing(url, token, "stream", args.streams)
    return {"c1": one, "c32": many, **streams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        sys.exit("needs wrk and nginx: scripts/services.sh wrk nginx")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    short = "Say hello."
    long_prompt = (
        "Please summarise the following customer message for the support team. " * 10
        + "My order 12345 arrived damaged and I would like a refund to my card. " * 60
    )
    results: dict[str, Any] = {"machine": harness.machine(), "timestamp": harness.timestamp()}
    try:
        nginx, port = start_nginx(tmp)
        procs.append(nginx)
        upstream = f"http://127.0.0.1:{port}"
        print("upstream alone (nginx)")
        lua = _lua(tmp, "upstream", None, "bench", short)
        url = f"{upstream}/plain/v1/chat/completions"
        wrk(url, lua, 1, args.warmup)
        results["upstream"] = {
            "c1": _ok(wrk(url, lua, 1, args.duration), "upstream"),
            "c32": _ok(wrk(url, lua, 32, args.duration), "upstream"),
            **stream_timing(f"{upstream}/sse/v1/chat/completions", None, "bench", args.streams),
        }
        sides = [
            ("conveyor", "minimal", short),
            ("conveyor-full", "full", short),
            ("conveyor-guardrails", "guardrails", long_prompt),
        ]
        for name, mode, prompt in sides:
            print(name)
            proc, cport, token = start_conveyor(tmp, upstream, mode)
            try:
                results[name] = measure(
                    tmp, name, f"http://127.0.0.1:{cport}/llm/v1", token, args, prompt
                )
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
        if not args.skip_litellm:
            print("litellm")
            proc, lport, key, version = start_litellm(tmp, upstream)
            procs.append(proc)
            try:
                results["litellm"] = {
                    "version": version,
                    **measure(tmp, "litellm", f"http://127.0.0.1:{lport}/v1", key, args, short),
                }
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    up = results["upstream"]
    summary: dict[str, Any] = {}
    for name in ("conveyor", "conveyor-full", "conveyor-guardrails", "litellm"):
        if name not in results:
            continue
        side = results[name]
        summary[name] = {
            "added_p50_ms": round(side["c1"]["p50_ms"] - up["c1"]["p50_ms"], 3),
            "added_p99_ms": round(side["c1"]["p99_ms"] - up["c1"]["p99_ms"], 3),
            "rps_c32": round(side["c32"]["rps"], 1),
            "added_ttft_ms": round(side["ttft_ms"] - up["ttft_ms"], 3),
            "added_per_chunk_ms": round(side["per_chunk_ms"] - up["per_chunk_ms"], 4),
        }
    results["summary"] = summary
    path = harness.write_result("gateway", results)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
