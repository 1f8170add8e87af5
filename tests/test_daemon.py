"""conveyor._daemon.DaemonWorker: one long-lived daemon thread for background reads."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest

from conveyor._daemon import DaemonWorker


def test_calls_run_in_order_on_one_thread_that_is_not_the_callers() -> None:
    worker = DaemonWorker("test-worker")
    seen: list[tuple[int, threading.Thread]] = []
    done = threading.Event()
    for i in range(5):
        worker.submit(lambda i=i: seen.append((i, threading.current_thread())))
    worker.submit(done.set)
    assert done.wait(30)
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    threads = {t for _, t in seen}
    assert len(threads) == 1
    (thread,) = threads
    assert thread is not threading.current_thread()
    assert thread.daemon and thread.name == "test-worker"


def test_a_call_that_raises_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = DaemonWorker("test-worker-raises")
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("the store is down")

    worker.submit(fail)
    worker.submit(done.set)
    assert done.wait(30)
    (record,) = [r for r in caplog.records if "a background call failed" in r.getMessage()]
    assert record.levelno == logging.ERROR and "test-worker-raises" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert str(record.exc_info[1]) == "the store is down"


def test_a_hung_call_does_not_hold_the_process_at_exit() -> None:
    code = (
        "import threading\n"
        "from conveyor._daemon import DaemonWorker\n"
        "w = DaemonWorker('hung')\n"
        "started = threading.Event()\n"
        "w.submit(lambda: (started.set(), threading.Event().wait()))\n"
        "assert started.wait(30)\n"
        "print('exiting')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"


def test_route_polls_run_on_the_watchers_one_thread_and_deliver_to_the_loop() -> None:
    import asyncio

    from conveyor.serving.watcher import in_daemon_thread

    worker = DaemonWorker("test-route-poll")

    def fail() -> None:
        raise ConnectionError("the store hung up")

    async def polls() -> list[threading.Thread]:
        loop = asyncio.get_running_loop()
        threads = [await in_daemon_thread(loop, threading.current_thread, worker) for _ in range(3)]
        with pytest.raises(ConnectionError, match="hung up"):
            await in_daemon_thread(loop, fail, worker)
        threads.append(await in_daemon_thread(loop, threading.current_thread, worker))
        return threads

    threads = asyncio.run(polls())
    assert len({id(t) for t in threads}) == 1
    assert threads[0].name == "test-route-poll"


def test_a_closed_worker_runs_what_was_queued_then_its_thread_ends() -> None:
    from conveyor.testing.wait import wait_until

    worker = DaemonWorker("test-worker-closed")
    ran: list[int] = []
    worker.submit(lambda: ran.append(1))
    worker.submit(lambda: ran.append(2))
    thread = worker._thread
    assert thread is not None
    worker.close()
    wait_until(lambda: not thread.is_alive(), message="the worker's thread to end", timeout=30)
    assert ran == [1, 2]


def test_closing_a_worker_whose_call_hangs_does_not_wait_for_it() -> None:
    worker = DaemonWorker("test-worker-hung-close")
    started, release = threading.Event(), threading.Event()
    worker.submit(lambda: (started.set(), release.wait(30)))
    assert started.wait(30)
    worker.close()  # returns at once: nothing joins the hung call
    assert not release.is_set()
    release.set()


def test_a_call_submitted_after_close_runs_though_the_old_thread_still_hangs() -> None:
    worker = DaemonWorker("test-worker-reopened")
    started, release, ran = threading.Event(), threading.Event(), threading.Event()
    worker.submit(lambda: (started.set(), release.wait(30)))
    assert started.wait(30)
    worker.close()
    worker.submit(ran.set)  # a new thread with its own queue, not behind the hung call
    try:
        assert ran.wait(30)
    finally:
        release.set()
