"""What the sink tests share: a nats-server of their own (another port, its own store
folder, killed and started again at will), a project whose event log is PostgreSQL, and
the two stores read back to count."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conveyor.project import Project
from conveyor.testing.ports import worker_port

#: The binary scripts/services.sh starts (Debian's nats-server).
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
ROOT = Path(__file__).resolve().parents[2]
#: The ``conveyor`` command of this interpreter's environment.
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


class NatsServer:
    """A JetStream server on a free port with its own store folder; ``kill`` is SIGKILL,
    ``start`` brings it back on the same port and folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = worker_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                NATS_SERVER,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.folder / "store"),
                "-l",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"nats-server exited: {self.log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def sink_process(
    project: Project, env: dict[str, str], *args: str, log: Path
) -> subprocess.Popen[bytes]:
    """``conveyor events sink ARGS`` in a process of its own, output to ``log``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [CONVEYOR, "events", "sink", "-C", str(project.root), *args],
            env={**clean, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def sql_ids(project: Project) -> Counter[str]:
    """Every event id of the SQL log, with how many times it is there."""
    rows = project.events.scan(after=0)  # type: ignore[attr-defined]
    return Counter(str(r[1]) for r in rows)


def parquet_ids(project: Project) -> Counter[str]:
    """Every event id of the files the Parquet copy lists, with how many times."""
    import duckdb
    import sqlalchemy as sa

    from conveyor.monitoring.tables import CompactedFileRecord as F

    with project.store.read() as session:
        paths = list(session.execute(sa.select(F.path)).scalars())
    if not paths:
        return Counter()
    root = Path(project.artifacts.root)
    files = ", ".join(f"'{root / p}'" for p in paths)
    with duckdb.connect() as con:
        return Counter(
            str(r[0]) for r in con.sql(f"SELECT id FROM read_parquet([{files}])").fetchall()
        )


def files_on_disk(project: Project) -> set[str]:
    root = Path(project.artifacts.root)
    folder = root / "events"
    return (
        {str(p.relative_to(root)) for p in folder.rglob("*") if p.is_file()}
        if folder.is_dir()
        else set()
    )


def listed_files(project: Project) -> set[str]:
    import sqlalchemy as sa

    from conveyor.monitoring.tables import CompactedFileRecord as F

    with project.store.read() as session:
        return set(session.execute(sa.select(F.path)).scalars())


def wait_until(check: Any, timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
