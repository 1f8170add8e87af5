"""``conveyor serve --workers 2`` killed with SIGKILL leaves no worker behind: each worker
asked the kernel for a SIGTERM when its supervisor dies (``die_with_supervisor``), so it
drains and exits instead of living on as an orphan that holds the port."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psutil
from serving_support import conveyor_serve, linear_project

from conveyor.testing.wait import wait_until


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    linear_project(tmp_path, name="orphans", serving="{auth: disabled}").close()
    process, port = conveyor_serve(tmp_path, "--workers", "2", "-C", str(tmp_path))
    children: list[psutil.Process] = []
    try:

        def two_workers() -> list[psutil.Process] | None:
            assert process.poll() is None, "conveyor serve exited"
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
            except httpx.TransportError:
                return None
            children = psutil.Process(process.pid).children(recursive=True)
            workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
            # every child goes: the two workers and multiprocessing's resource tracker
            return children if live.status_code == 200 and len(workers) == 2 else None

        children = wait_until(two_workers, message="two workers serving", timeout=90)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_until(
            lambda: not any(_alive(c) for c in children),
            message="the workers exit once their supervisor is gone",
            timeout=30,
        )
    finally:
        for child in children:  # none left when the test passes
            if _alive(child):
                child.kill()
        if process.poll() is None:
            process.kill()
            process.wait()
