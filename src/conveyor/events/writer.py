"""The background batch writer: the caller appends to memory, one thread commits.

A model server handing every prediction to the log has a few microseconds
per request to spare, so :meth:`BatchWriter.put` does no I/O and takes no
lock: it appends to a :class:`collections.deque` (atomic under the GIL) and
returns. A daemon thread, started on the first write, takes up to
``batch_size`` rows at a time and inserts them in one transaction, every
``flush_interval`` seconds or as soon as ``batch_size`` rows are waiting.

Waiting for a commit
    :meth:`barrier` appends a marker behind everything already appended. The
    thread releases it once every row before it is committed (or the attempt
    failed). ``flush()`` and durable writes are barriers, so they need no
    counters shared with the hot path.

Failure
    A failed batch is kept (never dropped), retried with exponential backoff
    (50 ms doubling to 5 s) and logged as a warning; barriers waiting on it
    raise the error, so it surfaces on the next ``flush()``, ``close()`` or
    durable write. A barrier cuts the backoff short: each ``flush()`` makes a
    fresh attempt. When the database refuses the rows themselves (an
    integrity or data error), the batch is split in halves until the
    offending rows are isolated: the rest is committed and the refused rows
    are kept in :attr:`BatchWriter.rejected` with the reason, logged as
    errors and reported by the next ``flush()``, so one bad row cannot stall
    the log.

Back-pressure
    At most ``max_buffer`` rows wait in memory (a few more when several
    threads cross the limit at once). A writer that finds the buffer full
    blocks until the thread has made room, so a database outage slows
    callers down instead of exhausting memory or losing events.

Telemetry never waits
    :meth:`BatchWriter.offer` is the path for telemetry (predictions): it never
    blocks. With the buffer full, the row goes to a spill segment on local disk
    (:mod:`conveyor.events.spill`), which the thread loads back once it has
    caught up; without a spill folder, or when it cannot be written, the row is
    *shed*: counted in :attr:`BatchWriter.shed` (a metric) and logged, never
    silently.

Fork
    :meth:`reset_after_fork` gives a child process empty state and no
    thread: rows buffered by the parent are the parent's to write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ClosedError, ConveyorError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.events.spill import SpillSegments

__all__ = ["BatchWriter", "Rejected", "Row"]

log = logging.getLogger("conveyor.events")

#: One event as the INSERT takes it: column name -> value.
Row = dict[str, Any]
#: A row the database refused, and why.
Rejected = tuple[Row, str]

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 5.0
_REJECTED_KEPT = 10_000
#: How often the thread looks for spill segments to load when nothing new was spilled.
_SPILL_CHECK_S = 1.0
#: How often shedding is logged (it is counted every time).
_SHED_LOG_S = 60.0


class _Barrier:
    """A marker in the buffer; released when everything before it is committed."""

    __slots__ = ("_done", "callback", "error", "ids")

    def __init__(
        self,
        ids: frozenset[str] | None,
        callback: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._done = threading.Event()
        self.error: BaseException | None = None
        #: The ids a durable write waits for; None for a flush (waits for all).
        self.ids = ids
        #: Called from the writer thread on release (an event loop's group commit).
        self.callback = callback

    def release(self, error: BaseException | None) -> None:
        self.error = error
        self._done.set()
        if self.callback is not None:
            try:
                self.callback(error)
            except Exception:  # the waiter's loop is gone: nobody to tell
                log.debug("a commit callback failed", exc_info=True)

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


class BatchWriter:
    """Buffers rows in memory and commits them in batches from one thread.

    ``write(rows)`` inserts rows in one transaction (raising on failure);
    ``refused(exc)`` says whether a failure was caused by the rows' content
    (so the batch is split to isolate them) rather than by the database;
    ``describe(exc, unwritten)`` turns a failure into the error callers see.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Row]], None],
        *,
        refused: Callable[[BaseException], bool],
        describe: Callable[[BaseException, int], ConveyorError],
        batch_size: int,
        flush_interval: float,
        max_buffer: int,
        name: str = "conveyor-events-writer",
        spill: SpillSegments | None = None,
    ) -> None:
        self._write = write
        self._refused = refused
        self._describe = describe
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_buffer = max_buffer
        self._name = name
        self._closed = False
        self.spill = spill
        #: Telemetry rows dropped because the buffer was full and could not spill.
        self.shed = 0
        #: Transactions committed so far (rows / commits: the batch a commit carries).
        self.commits = 0
        self._init_state()

    def _init_state(self) -> None:
        self._buffer: deque[Row | _Barrier] = deque()
        self._pending: list[Row] = []  # taken from the buffer, not yet committed
        self._wake = threading.Event()  # work is waiting (batch full, barrier, stop)
        self._kick = threading.Event()  # cut a backoff short (barrier, stop)
        # One token per barrier in the buffer (appended before it, taken with it): a
        # barrier queued while the thread was waking, its _wake cleared, and left behind
        # a full batch, is still seen as due (see _due)
        self._barriers: deque[None] = deque()
        self._space = threading.Condition()
        self._space_waiters = 0
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._failures = 0
        self.rejected: deque[Rejected] = deque(maxlen=_REJECTED_KEPT)
        self._unreported: list[Rejected] = []  # refused, not yet raised to anyone
        self._rejected_lock = threading.Lock()
        self._spill_due = 0.0  # monotonic time of the next look for segments
        self._shed_logged = 0.0

    # -- the caller's side ------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, row: Row) -> None:
        """Queue one row; returns at once unless the buffer is full."""
        if self._closed:
            raise ClosedError("the event log is closed; open a new one to write")
        buffer = self._buffer
        if self._thread is None:
            self._start()
        if len(buffer) >= self._max_buffer:
            self._wait_for_space()
        buffer.append(row)
        if len(buffer) >= self._batch_size and not self._wake.is_set():
            self._wake.set()
        if self.closed:  # closed meanwhile (re-read: another thread sets it)
            self._unput((row,))

    def offer(self, row: Row) -> bool:
        """Queue one telemetry row without ever waiting: spill it, or shed it, when full.

        Returns False when the row was shed (counted in :attr:`shed`).
        """
        if self._closed:
            raise ClosedError("the event log is closed; open a new one to write")
        buffer = self._buffer
        if self._thread is None:
            self._start()
        if len(buffer) < self._max_buffer:
            buffer.append(row)
            if len(buffer) >= self._batch_size and not self._wake.is_set():
                self._wake.set()
            return True
        self._wake.set()
        spill = self.spill
        if spill is not None and spill.write(row):
            self._spill_due = 0.0
            return True
        self.shed += 1
        now = time.monotonic()
        if now - self._shed_logged >= _SHED_LOG_S:
            self._shed_logged = now
            log.error(
                "the event log is behind and telemetry cannot spill: %d events shed so far "
                "(conveyor_events_shed); give it a spill folder or a faster sink",
                self.shed,
            )
        return False

    def load_spilled(self, timeout: float | None = None) -> None:
        """Wait until every spill segment (this process's and dead ones') is loaded.

        Raises TimeoutError if the sink does not take them within ``timeout``.
        """
        spill = self.spill
        if spill is None:
            return
        if self._thread is None:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while spill.pending():
            self._spill_due = 0.0
            self._wake.set()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"spilled telemetry was not loaded within {timeout} s "
                    f"({len(spill.pending())} segments left in {spill.folder}); it is kept"
                )
            time.sleep(0.01)  # the writer thread loads them: poll its progress

    @property
    def spilled(self) -> int:
        """Telemetry rows written to spill segments so far (loaded back later)."""
        return self.spill.spilled if self.spill is not None else 0

    def put_many(self, rows: Sequence[Row]) -> None:
        """Queue rows in order (one wait for space for the whole call)."""
        if self._closed:
            raise ClosedError("the event log is closed; open a new one to write")
        if self._thread is None:
            self._start()
        if len(self._buffer) >= self._max_buffer:
            self._wait_for_space()
        self._buffer.extend(rows)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        if self.closed:  # closed meanwhile
            self._unput(rows)

    def barrier(
        self,
        ids: Iterable[str] | None = None,
        callback: Callable[[BaseException | None], None] | None = None,
    ) -> _Barrier:
        """A marker behind everything queued so far; the thread releases it (and calls
        ``callback`` with the commit's error, or None)."""
        barrier = _Barrier(frozenset(ids) if ids is not None else None, callback)
        if self._thread is None:
            self._start()
        self._barriers.append(None)
        self._buffer.append(barrier)
        self._kick.set()
        self._wake.set()
        return barrier

    def wait(self, barrier: _Barrier, timeout: float | None) -> None:
        """Block until ``barrier`` is released; raise its error, or TimeoutError."""
        if not barrier.wait(timeout):
            raise TimeoutError(
                f"the event log did not commit within {timeout} s "
                f"({self.unwritten} events waiting); they are kept and retried"
            )
        if barrier.error is not None:
            raise barrier.error

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before the call is committed."""
        if self._thread is None and not self._buffer:
            self._check_rejected()
            return
        self.wait(self.barrier(), timeout)
        self._check_rejected()

    @property
    def unwritten(self) -> int:
        """Rows queued or being retried, not yet committed."""
        return len(self._pending) + sum(
            1 for x in list(self._buffer) if not isinstance(x, _Barrier)
        )

    def close(self, timeout: float | None = None) -> None:
        """Refuse new rows, commit what is queued, stop the thread. Idempotent.

        Raises the flush error if the last rows could not be committed; they
        are lost at that point and the error says how many.
        """
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            # Called from the writer thread itself (a garbage collection it
            # triggered finalized the log): waiting would deadlock, so the
            # thread drains what is queued and stops on its own.
            self._stop = True
            return
        error: BaseException | None = None
        if self._thread is not None:
            try:
                self.flush(timeout)
            except (ConveyorError, TimeoutError) as exc:
                error = exc
            self._stop = True
            self._kick.set()
            self._wake.set()
            self._thread.join(timeout=_BACKOFF_MAX if timeout is None else timeout)
        else:
            try:
                self._check_rejected()
            except InvalidInputError as exc:
                error = exc
        if error is not None:
            lost = self.unwritten
            if lost:
                log.error("the event log closed with %d events not written: %s", lost, error)
                raise ClosedError(
                    f"the event log closed with {lost} events not written: {error}",
                    unwritten=lost,
                ) from error
            raise error

    def reset_after_fork(self) -> None:
        """In a forked child: drop the parent's rows, thread and locks."""
        self._init_state()
        self.shed = 0
        self.commits = 0
        if self.spill is not None:
            self.spill.reset_after_fork()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _wait_for_space(self) -> None:
        with self._space:
            self._space_waiters += 1
            try:
                while len(self._buffer) >= self._max_buffer:
                    if self._closed:
                        raise ClosedError("the event log was closed while waiting for space")
                    self._wake.set()
                    # Timed: a notify racing this wait costs at most 0.1 s.
                    self._space.wait(0.1)
            finally:
                self._space_waiters -= 1

    def _unput(self, rows: Iterable[Row]) -> None:
        # A write racing close(): take the rows back if the thread has not, so
        # the caller learns they were not written instead of losing them.
        taken_back = False
        for row in rows:
            try:
                self._buffer.remove(row)
                taken_back = True
            except ValueError:
                pass
        if taken_back:
            raise ClosedError("the event log was closed during the write")

    def _check_rejected(self) -> None:
        if not self._unreported:
            return
        with self._rejected_lock:
            new, self._unreported = self._unreported, []
        if new:
            raise _rejection_error(new)

    # -- the thread's side ------------------------------------------------------

    def _run(self) -> None:
        waiters: list[_Barrier] = []
        while not self._stop:
            if self._pending:
                self._backoff()
            else:
                self._wake.wait(self._interval)
            self._wake.clear()
            self._kick.clear()
            while self._buffer or not self._stopping():
                self._take(waiters)
                if not self._pending:
                    self._release(waiters, None)
                    break
                if not self._commit(waiters):
                    break
                if not self._buffer or not self._due():
                    break
            if self._stopping():
                break
            if self.spill is not None and not self._buffer and not self._pending:
                self._replay_spilled()
        if self.spill is not None:
            # A clean stop loads what was spilled; what the sink refuses now stays on disk
            # for the next process to load.
            self._spill_due = 0.0
            self._replay_spilled(everything=True)
            self.spill.close()
        # Anyone still waiting learns the thread is gone.
        waiters.extend(x for x in list(self._buffer) if isinstance(x, _Barrier))
        self._release(waiters, ClosedError("the event log writer stopped"))

    def _replay_spilled(self, everything: bool = False) -> None:
        """Load spill segments back into the sink, oldest first, while nothing else waits."""
        spill = self.spill
        now = time.monotonic()
        if spill is None or now < self._spill_due:
            return
        self._spill_due = now + _SPILL_CHECK_S
        for path in spill.pending():
            rows = list(spill.take(path))
            try:
                for start in range(0, len(rows), self._batch_size):
                    rejected = self._write_isolating(rows[start : start + self._batch_size], [])
                    if rejected:
                        self._reject(rejected)
            except Exception as exc:  # the sink is still behind: try again later
                log.warning("could not load spilled telemetry from %s: %s", path, exc)
                return
            spill.done(path, len(rows))
            if not everything and (self._buffer or self._stopping()):
                return  # live events first; the rest at the next quiet moment

    def _due(self) -> bool:
        """Whether what came in during a commit is written at once: a full batch, a barrier
        (``_wake`` is set for both) or a stop. Anything less waits for the interval, as it
        would have without the commit: committing back to back whatever arrived during the
        last commit kept a slow disk's writer thread busy at a few rows a commit (three
        times the commits and the CPU per event at 1,400 events/s on SQLite).

        The buffer is looked at too: ``_wake`` is cleared when the thread wakes, so a
        barrier (or the row that filled a batch) that set it just before, and that the
        last take left behind a full batch, would otherwise wait for the next interval."""
        return (
            self._wake.is_set()
            or bool(self._barriers)
            or len(self._buffer) >= self._batch_size
            or self._stopping()
        )

    def _stopping(self) -> bool:
        # A method, not the attribute: close() sets it from another thread.
        return self._stop

    def _backoff(self) -> None:
        delay = min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** (self._failures - 1))
        self._kick.wait(delay)

    def _take(self, waiters: list[_Barrier]) -> None:
        """Move queued rows into ``pending`` (up to a batch), collecting barriers."""
        buffer, pending = self._buffer, self._pending
        while len(pending) < self._batch_size:
            try:
                item = buffer.popleft()
            except IndexError:
                break
            if isinstance(item, _Barrier):
                waiters.append(item)
                self._barriers.popleft()
            else:
                pending.append(item)

    def _commit(self, waiters: list[_Barrier]) -> bool:
        rows = self._pending
        try:
            rejected = self._write_isolating(rows, [])
        except Exception as exc:
            self._failures += 1
            log.warning(
                "could not write %d events to the event log (attempt %d, retrying): %s",
                len(rows),
                self._failures,
                exc,
            )
            error = self._describe(exc, self.unwritten)
            self._release(waiters, error)
            return False
        if self._failures:
            log.info("the event log writes again after %d failed attempts", self._failures)
        self._failures = 0
        self._pending = []
        self.commits += 1
        if rejected:
            self._reject(rejected)
        self._release(waiters, None)
        if self._space_waiters:
            with self._space:
                self._space.notify_all()
        return True

    def _write_isolating(self, rows: list[Row], rejected: list[Rejected]) -> list[Rejected]:
        try:
            self._write(rows)
        except Exception as exc:
            if not self._refused(exc):
                raise
            if len(rows) == 1:
                rejected.append((rows[0], _first_line(exc)))
                return rejected
            # Halves already committed stay committed if a later half fails
            # for another reason: the retry skips them (inserts ignore known ids).
            mid = len(rows) // 2
            self._write_isolating(rows[:mid], rejected)
            self._write_isolating(rows[mid:], rejected)
        return rejected

    def _reject(self, rejected: list[Rejected]) -> None:
        for row, reason in rejected:
            log.error(
                "the event log refused event %s (kind %s), kept in EventLog.rejected: %s",
                row.get("id"),
                row.get("kind"),
                reason,
            )
        with self._rejected_lock:
            self.rejected.extend(rejected)
            self._unreported.extend(rejected)

    def _release(self, waiters: list[_Barrier], error: BaseException | None) -> None:
        for barrier in waiters:
            if error is not None:
                barrier.release(_copy(error))
                continue
            mine: list[Rejected] = []
            if self.rejected and barrier.ids is not None:
                # A durable write learns its own row was refused (possibly in an
                # earlier batch); that counts as reported.
                with self._rejected_lock:
                    mine = [r for r in self.rejected if r[0].get("id") in barrier.ids]
                    if mine:
                        self._unreported = [r for r in self._unreported if r not in mine]
            barrier.release(_rejection_error(mine) if mine else None)
        waiters.clear()


def _rejection_error(rejected: list[Rejected]) -> InvalidInputError:
    shown = "; ".join(
        f"{row.get('id')} ({row.get('kind')}): {reason}" for row, reason in rejected[:3]
    )
    return InvalidInputError(
        f"the database refused {len(rejected)} events, which were not stored (kept in "
        f"EventLog.rejected): {shown}",
        field="event",
        ids=[row.get("id") for row, _ in rejected],
    )


def _copy(error: BaseException) -> BaseException:
    # Each waiting thread raises its own instance: one shared exception would
    # collect every thread's traceback.
    if isinstance(error, ConveyorError):
        fresh: BaseException = type(error)(error.message, **error.context)
    else:
        fresh = type(error)(*error.args)
    fresh.__cause__ = error.__cause__
    return fresh


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
