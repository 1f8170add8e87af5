"""Delivery: every sink on its own worker thread and queue, so a sink that is down or
hangs delays no other sink, and never the evaluator or the server.

::

    dispatcher = Dispatcher(sinks, settings.delivery, on_result=record)
    dispatcher.submit(notification)     # returns at once
    dispatcher.drain(timeout=30)        # tests, shutdown: wait for the queues

Each attempt is bounded by ``timeout_s``. A failed attempt is retried ``retries`` times
after ``backoff_s``, doubled each time (up to ``max_backoff_s``, with jitter). Every
sink has a :class:`~conveyor.breaker.CircuitBreaker`: ``breaker_failures`` failed
deliveries in a row open it, and the sink is *failing* (``conveyor alerts list`` says
so) until a trial delivery after ``breaker_reset_s`` succeeds. While it is open, a
notification is not attempted; it is recorded as failed at once (``breaker open``)
rather than queued behind a dead sink. ``on_result`` hears of every delivery, ok or not.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.breaker import CircuitBreaker

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.engine import Notification
    from conveyor.monitoring.alerts.settings import DeliverySpec
    from conveyor.monitoring.alerts.sinks import Sink

__all__ = ["Delivery", "Dispatcher", "SinkStatus"]

log = logging.getLogger("conveyor.alerts.delivery")


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one notification went to one sink."""

    sink: str
    kind: str
    group: str
    alert_ids: tuple[str, ...]
    ok: bool
    attempts: int
    error: str | None
    seconds: float


@dataclass(slots=True)
class SinkStatus:
    """A sink's health as the dispatcher sees it."""

    name: str
    kind: str
    state: str = "ok"  # ok | failing
    delivered: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None
    last_failure_at: float | None = None
    queued: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass
class _Worker:
    sink: Sink
    breaker: CircuitBreaker
    status: SinkStatus
    queue: queue.Queue[Notification | None] = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None


class Dispatcher:
    """Queues notifications per sink and delivers them from one daemon thread each."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        settings: DeliverySpec,
        *,
        on_result: Callable[[Delivery, SinkStatus], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.on_result = on_result
        self._sleep = sleep
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._workers: dict[str, _Worker] = {}
        for sink in sinks:
            self._workers[sink.name] = _Worker(
                sink,
                CircuitBreaker(
                    f"alerts.sink.{sink.name}",
                    failures=settings.breaker_failures,
                    reset_s=settings.breaker_reset_s,
                    max_reset_s=max(settings.breaker_reset_s, 3600.0),
                ),
                SinkStatus(sink.name, sink.kind),
            )

    def start(self) -> Dispatcher:
        for name, worker in self._workers.items():
            if worker.thread is None:
                worker.thread = threading.Thread(
                    target=self._run, args=(worker,), name=f"alerts-sink-{name}", daemon=True
                )
                worker.thread.start()
        return self

    def submit(self, notification: Notification) -> None:
        """Queue ``notification`` for every sink that takes its severity; never blocks."""
        self.start()
        for worker in self._workers.values():
            if worker.sink.accepts(notification):
                worker.status.queued += 1
                worker.queue.put(notification)

    def statuses(self) -> list[SinkStatus]:
        return [w.status for w in self._workers.values()]

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queue is empty and idle; False on timeout."""
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            while worker.status.queued > 0:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (what is still queued is dropped: :meth:`drain` first to
        wait for it); waits at most ``timeout`` in all for a delivery in flight."""
        self._stop.set()
        for worker in self._workers.values():
            worker.queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread is None or not worker.thread.is_alive():
                worker.sink.close()

    # -- one sink's worker ----------------------------------------------------------

    def _run(self, worker: _Worker) -> None:
        while not self._stop.is_set():
            item = worker.queue.get()
            if item is None:
                return
            try:
                self._deliver(worker, item)
            except Exception:  # never let one bad notification kill the worker
                log.exception("alert delivery to %s failed", worker.sink.name)
            finally:
                worker.status.queued -= 1

    def _deliver(self, worker: _Worker, notification: Notification) -> None:
        settings = self.settings
        status = worker.status
        started = time.monotonic()
        attempts = 0
        error: str | None = None
        ok = False
        if not worker.breaker.allow():
            error = f"breaker open: {worker.breaker.last_error or 'sink failing'}"
        else:
            while True:
                attempts += 1
                try:
                    worker.sink.send(notification, settings.timeout_s)
                except Exception as exc:
                    error = str(exc) or type(exc).__name__
                    if attempts > settings.retries or self._stop.is_set():
                        break
                    wait = min(settings.max_backoff_s, settings.backoff_s * 2 ** (attempts - 1))
                    self._sleep(wait * (0.5 + self._random.random() / 2))
                else:
                    ok = True
                    error = None
                    break
        now = time.time()
        if ok:
            worker.breaker.success()
            status.delivered += 1
            status.consecutive_failures = 0
            status.last_ok_at = now
        else:
            if attempts:  # a refused (breaker open) delivery is no new evidence
                worker.breaker.failure(RuntimeError(error or "failed"))
            status.failed += 1
            status.consecutive_failures += 1
            status.last_error = error
            status.last_failure_at = now
        # failing: the last delivery failed after its retries (or was refused while the
        # breaker is open); ok again after the next delivery that goes through
        status.state = "ok" if ok else "failing"
        delivery = Delivery(
            worker.sink.name,
            notification.kind,
            notification.group,
            tuple(a.id for a in notification.alerts),
            ok,
            attempts,
            error,
            time.monotonic() - started,
        )
        if not ok:
            log.warning("alert sink %s: %s", worker.sink.name, error)
        if self.on_result is not None:
            try:
                self.on_result(delivery, status)
            except Exception:
                log.exception("recording a delivery to %s failed", worker.sink.name)
