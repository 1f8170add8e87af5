"""Serving benchmark: Conveyor's server against a bare Starlette endpoint, MLServer and BentoML.

    .venv/bin/python benchmarks/serving.py               # ~12 minutes, 2 rounds
    .venv/bin/python benchmarks/serving.py --rounds 3    # ~18 minutes
    .venv/bin/python benchmarks/serving.py --quick       # 1 round, 3 s measurements
    .venv/bin/python benchmarks/serving.py --profile     # also py-spy on Conveyor at c=64
    .venv/bin/python benchmarks/serving.py --baseline 9fba084 --only conveyor,conveyor-before,bare
                                # Conveyor as of a commit, beside today's, in the same run

Every server runs as its own process (1 worker, uvloop + httptools where
the server lets you choose) and the load comes from ``wrk`` in another
process on loopback, with a Lua script that POSTs one JSON row per request
and prints latency percentiles as JSON. Each measurement is a 2 s warm-up
then 10 s of load; every number is the median over rounds (each round's
value is kept in the JSON). Servers start in a rotated order each round.

Workloads: (a) LogisticRegression on 20 float features at concurrency 1, 8
and 64; (b) RandomForest of 100 trees at concurrency 1 and 64, batched on
Conveyor (64 rows, 2 ms) and BentoML (adaptive batching), unbatched
elsewhere, and the LogisticRegression once more at concurrency 1 from a plain
blocking socket in this process (``lr_c1_blocking``: a second view of the c=1
tail, see ``blocking_client``); (c) start-up: seconds from spawning the process to the first 200
from its readiness endpoint.

Before any load, every server answers the same row once, and its prediction
must equal the model's own (``model.predict`` in-process): a server that
answers something else is reported as an error and not measured.

Writes ``benchmarks/results/serving.json``. The machine is whatever runs
this (often 2 shared cores, with wrk taking part of them): the JSON records
nproc and the load average around each measurement.
"""

from __future__ import annotations

import argparse
import contextlib
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
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import harness
from peers import serving_workload as wl

#: Each peer's virtualenv (added to the harness's list: ``ensure_venv`` installs them).
SERVING_PEERS: dict[str, tuple[str, ...]] = {
    # MLServer 1.7 does not start with uvloop 0.22.
    "mlserver": ("mlserver", "mlserver-sklearn", "uvloop<0.22", "scikit-learn"),
    "bentoml": ("bentoml", "scikit-learn"),
}
harness.PEERS.update(SERVING_PEERS)

CONCURRENCY = {"lr": (1, 8, 64), "rf": (1, 64)}
CONVEYOR = ("conveyor", "conveyor-acked", "bare", "bare-thread", "mlserver", "bentoml")
LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,'
    .. '"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
end
"""

Log = Callable[[str], None]


@dataclass
class Server:
    """How to start one server for one model, and how to talk to it."""

    name: str
    argv: list[str]
    ready_path: str
    predict_path: str
    body: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = harness.PEER_SCRIPTS
    batched: bool = False
    port: int = 0
    #: Called with the chosen port before the process starts (MLServer reads it from a file).
    on_port: Callable[[int], None] | None = None
    #: Headers every request sends (Conveyor's API key: it runs with auth on).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    server: Server
    proc: subprocess.Popen[bytes]
    startup_s: float
    log_path: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def _post(url: str, body: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start(
    server: Server, logdir: Path, timeout_s: float = 120.0, cpus: set[int] | None = None
) -> Running:
    """Spawn the server in its own session; time until its readiness endpoint answers 200.

    ``cpus``: the CPUs the server (and every process it starts) may run on.
    """
    server.port = free_port()
    if server.on_port is not None:
        server.on_port(server.port)
    argv = [a.replace("{port}", str(server.port)) for a in server.argv]
    env = {**os.environ, **harness.PEER_ENV, **server.env}
    log_path = logdir / f"{server.name}-{server.port}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=server.cwd,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
    url = f"http://127.0.0.1:{server.port}{server.ready_path}"
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited {proc.returncode}: {_tail(log_path)}")
        if _get(url, timeout=1.0) == 200:
            return Running(server, proc, time.perf_counter() - started, log_path)
        time.sleep(0.02)
    stop_proc(proc)
    raise RuntimeError(f"{server.name} not ready after {timeout_s:.0f} s: {_tail(log_path)}")


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it and the workers it spawned), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers a server spawned may outlive it for a moment: give the group time to go.
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wrk(url: str, lua: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run (1 thread: the machine is small) and its summary in ms and requests/s."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    load_before = os.getloadavg()[0]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "rps": (raw["requests"] - raw["status"]) / seconds_run,
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["status"],
        "timeouts": raw["timeout"],
        **{
            k.replace("_us", "_ms"): raw[k] / 1000
            for k in raw
            if k.endswith("_us") and k != "duration_us"
        },
        "loadavg_1m_before": round(load_before, 2),
    }


def measure(run: Running, concurrency: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server = run.server
    lua = tmp / f"{server.name}.lua"
    lua.write_text(_lua(server))
    url = f"http://127.0.0.1:{server.port}{server.predict_path}"
    wrk(url, lua, concurrency, args.warmup)
    return wrk(url, lua, concurrency, args.duration)


def blocking_client(run: Running, seconds: float) -> dict[str, Any]:
    """Concurrency 1 from a plain blocking socket (this process, TCP_NODELAY): send the
    request, read the whole response, repeat. A second view of the c=1 tail beside wrk's:
    wrk turns each answer around in microseconds, so the server never idles between
    requests and every background step it runs lands on a request; a slower client
    leaves gaps, as most real callers do. Percentiles from every request's own time."""
    import socket

    server = run.server
    body = server.body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())
    request = (
        f"POST {server.predict_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            started = time.perf_counter()
            sock.sendall(request)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                data += chunk
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    continue
                at = data.lower().find(b"content-length:")
                length = int(data[at + 15 : data.find(b"\r\n", at)])
                if len(data) >= end + 4 + length:
                    break
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{server.name} answered {data[:60]!r}")
            latencies.append(time.perf_counter() - started)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[int(p * (len(latencies) - 1))] * 1000, 3)

    return {
        "rps": len(latencies) / seconds,
        "requests": len(latencies),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3),
        "errors": 0,
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }


def _lua(server: Server) -> str:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in server.headers.items())
    return LUA.format(body="[==[" + server.body + "]==]", headers=headers)


def check_answer(run: Running, expected: float) -> str:
    """One request by hand before any load: a 200, and the model's own prediction."""
    url = f"http://127.0.0.1:{run.server.port}{run.server.predict_path}"
    status, text = _post(url, run.server.body, run.server.headers)
    if status != 200:
        raise RuntimeError(f"{run.server.name}: {status} {text[:500]}")
    got = prediction_of(text)
    if got != expected:
        raise RuntimeError(
            f"{run.server.name} predicted {got!r} for the request row; the model says "
            f"{expected!r}: its numbers would not be comparable ({text[:300]})"
        )
    return text[:200]


def prediction_of(text: str) -> float:
    """The one prediction in any server's answer: native, v2 outputs, or a bare list."""
    body = json.loads(text)
    if isinstance(body, dict) and "predictions" in body:
        body = body["predictions"]
    elif isinstance(body, dict) and "outputs" in body:
        body = body["outputs"][0]["data"]
    while isinstance(body, list):
        body = body[0]
    return float(body)


# -- the servers --------------------------------------------------------------


def servers(
    kind: str, tmp: Path, venvs: dict[str, Path], only: set[str], baseline: Path | None = None
) -> list[Server]:
    """Every server for one model kind (``lr`` or ``rf``)."""
    conveyor_py = Path(sys.executable)
    model = f"bench_{kind}"
    out: list[Server] = []

    def conveyor(name: str, project: str, env: dict[str, str], entry: str = "conveyor") -> Server:
        # `python -m conveyor` is the `conveyor` command (collector off during start-up);
        # an earlier commit may predate it: `python -m conveyor.cli`
        return Server(
            name=name,
            argv=[
                *(str(conveyor_py), "-m", entry, "serve", "--project", str(tmp / project)),
                *("--host", "127.0.0.1", "--port", "{port}", "--workers", "1"),
            ],
            ready_path="/v2/health/ready",
            predict_path=f"/v1/models/{model}/predict",
            body=wl.records_body(),
            env=env,
            batched=kind == "rf",
            headers={"x-api-key": (tmp / project / "bench.key").read_text().strip()},
        )

    if baseline is not None:
        # Conveyor as of an earlier commit: same venv, its own code first on the path.
        out.append(
            conveyor(
                "conveyor-before",
                f"conveyor-before-{kind}",
                {"PYTHONPATH": str(baseline)},
                entry="conveyor.cli",
            )
        )
    # The bare endpoints run in Conveyor's venv: same Python, Starlette, uvicorn, scikit-learn.
    for mode in ("direct", "thread"):
        out.append(
            Server(
                name="bare" if mode == "direct" else "bare-thread",
                argv=[
                    str(conveyor_py),
                    "bare_serving.py",
                    str(tmp / "models-conveyor" / f"{kind}.joblib"),
                    "{port}",
                    mode,
                ],
                ready_path="/v2/health/ready",
                predict_path="/predict",
                body=wl.records_body(),
            )
        )
    out.append(conveyor("conveyor", f"conveyor-{kind}", {}))
    # The same server with events.durability: acknowledged (each answer waits for its
    # event's group commit): the price of losing nothing to a kill -9.
    out.append(
        conveyor(
            "conveyor-acked", f"conveyor-{kind}", {"CONVEYOR_EVENTS__DURABILITY": "acknowledged"}
        )
    )
    if "mlserver" in venvs:
        folder = tmp / f"mlserver-{kind}"

        def write_settings(port: int, folder: Path = folder) -> None:
            settings = {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "debug": False,
            }
            (folder / "settings.json").write_text(json.dumps(settings))

        out.append(
            Server(
                name="mlserver",
                argv=[str(venvs["mlserver"].parent / "mlserver"), "start", str(folder)],
                ready_path=f"/v2/models/{model}/ready",
                predict_path=f"/v2/models/{model}/infer",
                body=wl.v2_body(),
                on_port=write_settings,
            )
        )
    if "bentoml" in venvs:
        service = "Batched" if kind == "rf" else "Plain"
        out.append(
            Server(
                name="bentoml",
                argv=[
                    str(venvs["bentoml"].parent / "bentoml"),
                    "serve",
                    f"bentoml_serving:{service}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                ],
                ready_path="/readyz",
                predict_path="/predict",
                body=wl.bentoml_body(),
                env={
                    "BENCH_MODEL": str(tmp / "models-bentoml" / f"{kind}.joblib"),
                    "BENTOML_HOME": str(tmp / "bentoml-home"),
                },
                batched=kind == "rf",
            )
        )
    return [s for s in out if not only or s.name in only]


def prepare(
    tmp: Path, venvs: dict[str, Path], log: Log, baseline: Path | None = None
) -> dict[str, Any]:
    """Fit the models in each venv, build Conveyor's projects and MLServer's folders."""
    versions: dict[str, Any] = {}
    # Conveyor's own modules byte-compiled, like the peers' (pip compiles what it
    # installs); with PYTHONDONTWRITEBYTECODE set, an editable checkout would otherwise
    # compile them at every start-up
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)
    if baseline is not None:
        for kind in ("lr", "rf"):  # the earlier code builds its own project
            subprocess.run(
                [sys.executable, "conveyor_serving.py", str(tmp / f"conveyor-before-{kind}"), kind],
                cwd=harness.PEER_SCRIPTS,
                env={**os.environ, "PYTHONPATH": str(baseline)},
                capture_output=True,
                text=True,
                check=True,
            )
    for peer, python in [("conveyor", Path(sys.executable)), *venvs.items()]:
        out = subprocess.run(
            [str(python), "serving_fit.py", str(tmp / f"models-{peer}")],
            cwd=harness.PEER_SCRIPTS,
            capture_output=True,
            text=True,
            check=True,
        )
        versions[f"{peer}_sklearn"] = json.loads(out.stdout)["sklearn"]
    for kind in ("lr", "rf"):
        out = subprocess.run(
            [sys.executable, "conveyor_serving.py", str(tmp / f"conveyor-{kind}"), kind],
            cwd=harness.PEER_SCRIPTS,
            capture_output=True,
            text=True,
            check=True,
        )
        versions["conveyor"] = json.loads(out.stdout)["conveyor"]
        if "mlserver" in venvs:
            folder = tmp / f"mlserver-{kind}"
            folder.mkdir()
            model_settings = {
                "name": f"bench_{kind}",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": str(tmp / "models-mlserver" / f"{kind}.joblib")},
            }
            (folder / "model-settings.json").write_text(json.dumps(model_settings))
    for peer, python in venvs.items():
        code = f"import importlib.metadata as m; print(m.version({peer!r}))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
        versions[peer] = out.stdout.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    versions["wrk"] = wrk_v[1] if len(wrk_v) > 1 else "unknown"
    expected = subprocess.run(
        [sys.executable, "-c", _EXPECTED],
        cwd=harness.PEER_SCRIPTS,
        capture_output=True,
        text=True,
        check=True,
    )
    versions["expected_predictions"] = json.loads(expected.stdout)
    log(f"versions: {versions}")
    return versions


#: The model's own prediction for the request row, in-process: what every server must answer.
_EXPECTED = """
import json
import serving_workload as wl
print(json.dumps({k: float(wl.fit(k).predict([wl.request_row()])[0]) for k in ("lr", "rf")}))
"""


# -- the run ------------------------------------------------------------------


def profile_conveyor(run: Running, args: argparse.Namespace, tmp: Path, log: Log) -> dict[str, Any]:
    """py-spy (its own venv) on Conveyor's worker while wrk drives it at concurrency 64."""
    harness.PEERS.setdefault("pyspy", ("py-spy",))
    spy = harness.ensure_venv("pyspy", log).parent / "py-spy"
    raw = tmp / "conveyor.collapsed"
    lua = tmp / "profile.lua"
    lua.write_text(_lua(run.server))
    url = f"http://127.0.0.1:{run.server.port}{run.server.predict_path}"
    seconds = max(3, int(args.duration))
    spy_proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(run.proc.pid),
            "-d",
            str(seconds),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    wrk(url, lua, 64, seconds)
    spy_proc.wait(timeout=60)
    total = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        count = int(count_s)
        total += count
        frames = stack.split(";")
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def top(d: dict[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:25]
        return [{"frame": k, "share": round(v / total, 4)} for k, v in ranked]

    return {"samples": total, "self": top(own), "inclusive": top(inclusive)}


def run(args: argparse.Namespace, log: Log = print) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    only = set(args.only.split(",")) if args.only else set()
    # --pin: the server on CPU 0, this process and so wrk (its child) on CPU 1
    server_cpus = {0} if args.pin else None
    if args.pin:
        os.sched_setaffinity(0, {1})
    venvs: dict[str, Path] = {}
    for peer in SERVING_PEERS:
        if only and peer not in only:
            continue
        try:
            venvs[peer] = harness.ensure_venv(peer, log)
        except subprocess.CalledProcessError as exc:
            log(f"{peer}: install failed ({exc}); left out")
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-serving-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "serving",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "settings": {
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "load_generator": "wrk -t1 (1 thread), separate process, loopback, one JSON row "
            "per request (Lua script); lr_c1_blocking: one blocking socket from the "
            "benchmark's process, same request",
            "workers": 1,
            "pinned": "server on CPU 0, wrk and the blocking client on CPU 1"
            if args.pin
            else "no: the server's threads and wrk share both CPUs",
            "conveyor": "conveyor serve, auth required (wrk sends a predictor key), cache off, "
            "routing + metrics + event log on; lr: default batching (32 rows, 2 ms), "
            "served from the formula recorded at registration (serving.closed_form, the "
            "default: the model is not unpickled, scikit-learn not imported); "
            "rf: max_batch_size 64, max_wait_ms 2",
            "mlserver": "mlserver start, defaults (parallel_workers default), sklearn runtime",
            "bentoml": "bentoml serve, workers=1; rf: batchable=True, max_batch_size 64",
            "bare": "Starlette + uvicorn (uvloop, httptools), model.predict in the handler",
            "bare-thread": "the same with run_in_threadpool",
            "conveyor-acked": "conveyor with events.durability: acknowledged (an answer "
            "waits for its event's group commit)",
            "startup_s": "time from the process's start to its first 200 on its readiness "
            f"path, linear model: one sample a round, plus {args.startups} starts alone "
            "(the order rotated each time); Conveyor's source compiled to bytecode first, "
            "as pip install leaves a wheel (PYTHONDONTWRITEBYTECODE is set here)",
        },
        "errors": {},
    }
    try:
        baseline = harness.baseline_src(args.baseline, tmp) if args.baseline else None
        if baseline is not None:
            result["settings"]["conveyor-before"] = f"conveyor serve at commit {args.baseline}"
        # Conveyor's source as a wheel install leaves it: compiled (peers are wheels)
        harness.compile_bytecode(
            *([baseline] if baseline is not None else []), harness.ROOT / "src"
        )
        result["versions"] = prepare(tmp, venvs, log, baseline)
        expected = result["versions"]["expected_predictions"]
        per_round: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        startup: dict[str, list[float]] = {}
        for rnd in range(args.rounds):
            for kind in ("lr", "rf"):
                group = servers(kind, tmp, venvs, only, baseline)
                shift = rnd % len(group) if group else 0
                for server in group[shift:] + group[:shift]:
                    label = f"round {rnd + 1} {kind} {server.name}"
                    try:
                        running = start(server, logdir, cpus=server_cpus)
                    except RuntimeError as exc:
                        log(f"{label}: failed to start: {exc}")
                        result["errors"][f"{kind}/{server.name}"] = str(exc)[-2000:]
                        continue
                    try:
                        if kind == "lr":
                            startup.setdefault(server.name, []).append(running.startup_s)
                        answer = check_answer(running, expected[kind])
                        log(f"{label}: ready in {running.startup_s:.2f} s; answer {answer[:80]}")
                        for c in CONCURRENCY[kind]:
                            m = measure(running, c, args, tmp)
                            per_round.setdefault(kind, {}).setdefault(server.name, {}).setdefault(
                                str(c), []
                            ).append(m)
                            log(
                                f"  c={c:<3} {m['rps']:8.0f} rps  p50 {m['p50_ms']:7.2f} ms  "
                                f"p95 {m['p95_ms']:7.2f}  p99 {m['p99_ms']:7.2f}  "
                                f"errors {m['errors']}  load {m['loadavg_1m_before']}"
                            )
                        if kind == "lr":
                            blocking_client(running, args.warmup)
                            m = blocking_client(running, args.duration)
                            per_round.setdefault("lr_c1_blocking", {}).setdefault(
                                server.name, {}
                            ).setdefault("1", []).append(m)
                            log(
                                f"  c=1 blocking client {m['rps']:6.0f} rps  p50 "
                                f"{m['p50_ms']:.2f} ms  p95 {m['p95_ms']:.2f}  "
                                f"p99 {m['p99_ms']:.2f}  p99.9 {m['p999_ms']:.2f}"
                            )
                        if args.profile and kind == "lr" and server.name == "conveyor" and rnd == 0:
                            log("  profiling Conveyor at c=64 with py-spy")
                            result["conveyor_profile_lr_c64"] = profile_conveyor(
                                running, args, tmp, log
                            )
                    except (RuntimeError, subprocess.CalledProcessError, StopIteration) as exc:
                        log(f"{label}: failed: {exc}")
                        result["errors"][f"{kind}/{server.name}"] = str(exc)[-2000:]
                    finally:
                        stop_proc(running.proc)
        for extra in range(args.startups):  # start-up alone: more samples, the order rotated
            group = servers("lr", tmp, venvs, only, baseline)
            shift = extra % len(group) if group else 0
            for server in group[shift:] + group[:shift]:
                try:
                    running = start(server, logdir, cpus=server_cpus)
                except RuntimeError as exc:
                    log(f"start {extra + 1} {server.name}: failed to start: {exc}")
                    continue
                stop_proc(running.proc)
                startup.setdefault(server.name, []).append(running.startup_s)
        if args.startups:
            log("starts: " + ", ".join(f"{k} {sorted(v)}" for k, v in startup.items()))
        result["startup_s"] = {
            name: {"median": statistics.median(v), "rounds": v} for name, v in startup.items()
        }
        for kind, by_server in per_round.items():
            result[kind] = {
                name: {c: _median(ms) for c, ms in by_c.items()} for name, by_c in by_server.items()
            }
        result["ratio_to_bare"] = ratios(result)
    finally:
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Each server's requests/s over the bare endpoint's, per model and concurrency."""
    out: dict[str, Any] = {}
    for kind in ("lr", "rf"):
        bare = result.get(kind, {}).get("bare")
        if not bare:
            continue
        out[kind] = {
            name: {
                c: round(m["rps"] / bare[c]["rps"], 3)
                for c, m in by_c.items()
                if c in bare and bare[c]["rps"]
            }
            for name, by_c in result[kind].items()
            if name != "bare"
        }
    return out


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys}
    out["errors"] = sum(r["errors"] for r in rounds)
    out["rounds"] = rounds
    return out


def print_table(result: dict[str, Any], log: Log = print) -> None:
    for kind, title in (
        ("lr", "LogisticRegression, 20 features"),
        ("rf", "RandomForest, 100 trees"),
        ("lr_c1_blocking", "LogisticRegression, one blocking client"),
    ):
        if kind not in result:
            continue
        log(f"\n{title}: requests/s and p50/p95/p99 ms (median of {result['settings']['rounds']})")
        for name, by_c in result[kind].items():
            cells = [
                f"c={c}: {m['rps']:.0f} rps {m['p50_ms']:.1f}/{m['p95_ms']:.1f}/{m['p99_ms']:.1f}"
                for c, m in by_c.items()
            ]
            log(f"  {name:<12} " + " | ".join(cells))
    if "startup_s" in result:
        log(
            "\nstart-up to ready (s): "
            + ", ".join(f"{k} {v['median']:.2f}" for k, v in result["startup_s"].items())
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each")
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 3 s measurements, 1 s warm-up"
    )
    parser.add_argument("--only", default="", help="comma-separated servers (names as in the JSON)")
    parser.add_argument("--profile", action="store_true", help="py-spy on Conveyor (lr, c=64)")
    parser.add_argument(
        "--startups",
        type=int,
        default=0,
        help="after the rounds, start each linear-model server this many times more (start-up "
        "to ready only: its median then counts rounds + startups samples)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (server logs)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run each server on CPU 0 and wrk on CPU 1 (the load generator then takes no "
        "CPU from the server, nor the server's threads from it)",
    )
    parser.add_argument("--output", default="serving", help="results/<output>.json")
    parser.add_argument(
        "--baseline", default="", help="also serve Conveyor as of this git commit (conveyor-before)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0

    def log(msg: str) -> None:
        print(msg, flush=True)

    result = run(args, log)
    print_table(result, log)
    path = harness.write_result(args.output, result)
    log(f"\nwrote {path}")


if __name__ == "__main__":
    main()
