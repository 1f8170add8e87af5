"""Dynamic batching: many concurrent requests, one model call per batch.

A :class:`Batcher` sits in front of one loaded model version. Each request
(an Arrow table of one or more rows) is queued; one worker task per batcher
takes what is queued, concatenates it into one table, runs the model on it
in a thread (never on the event loop) and hands every request exactly its
own rows of the prediction::

    batcher = Batcher(lambda t: model.predict(t.to_pandas()), max_batch_size=64)
    prediction = await batcher.submit(table)      # the rows of `table` only
    ...
    await batcher.close()                         # drains what is queued

How long to wait for more requests is decided per batch, from measurements:

- the cost of a batch of ``n`` rows is modelled as ``a + b * n`` (a fixed
  per-call cost and a per-row cost), fitted by exponentially weighted least
  squares over recent batches. Waiting is worth at most the fixed cost it
  saves, so the worker waits ``min(max_wait_ms, a)`` and not at all when
  the model's cost is all per row;
- the worker waits only when more requests are expected: a request that
  arrives while no other is outstanding is alone and never waits (so with
  one caller at a time batching costs nothing against calling the model
  directly); otherwise the worker tracks how many requests are usually
  outstanding when one arrives (an EWMA) and waits only while fewer than
  that are in hand.

Back-pressure is explicit: when ``max_queue`` rows are waiting, ``submit``
raises :class:`~conveyor.errors.OverloadedError` at once, with
``retry_after`` estimated from the measured throughput (the server answers
503 with ``Retry-After``). Nothing accepted is ever dropped.

With ``max_batch_size=1`` there is no queue at all: each request calls the
model in the executor directly (same back-pressure bound, same stats).

A request its caller says is alone (``submit(table, alone=True)``: the server
passes it when it has no other request in flight) skips the executor when
nothing is queued or in the model and the cost model expects the call to take at
most ``inline_max_ms``: the model runs on the caller's event loop, which saves the
two thread hand-offs (about a third of a cheap model's latency at concurrency 1)
and blocks the loop no longer than that bound. Before the cost is measured, and
for a model slower than the bound, requests always go through the executor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import ClosedError, ConveyorError, InvalidInputError, OverloadedError
from conveyor.registry.formula import NotOnTheLoop
from conveyor.serving.dense import DenseRows

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BatchInfo", "Batcher", "split_rows"]

log = logging.getLogger("conveyor.serving.batcher")

#: Weight of the newest observation in every moving average.
_ALPHA = 0.1
#: Below this fixed cost per call (seconds), waiting cannot pay for itself.
_MIN_WORTHWHILE_WAIT = 50e-6
#: Retry-After before anything was measured (seconds).
_DEFAULT_RETRY_AFTER = 1.0
_HISTORY = 256


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What happened to one batch: recorded in :attr:`Batcher.history`."""

    size: int
    """Rows in the batch."""
    requests: int
    """Requests merged into it."""
    seconds: float
    """Model time (concatenation, call and split), measured in the executor thread."""
    waited: bool
    """Whether the worker held the batch open for more requests."""
    wait_seconds: float
    """How long it held it (0 when it did not wait)."""
    failed: bool = False
    """Whether the model raised (every request of the batch got the exception)."""
    inline: bool = False
    """Whether it ran on the event loop (a lone request to a cheap model), not the executor."""


@dataclass(slots=True, eq=False)
class _Request:
    table: pa.Table
    rows: int
    future: asyncio.Future[Any]
    concurrent: bool
    """Other requests were outstanding when it arrived (there is more than one caller)."""


@dataclass(slots=True)
class _CostModel:
    """EWMA least squares of batch time against batch rows: ``t = a + b * n``."""

    n: float = 0.0
    t: float = 0.0
    nn: float = 0.0
    nt: float = 0.0
    samples: int = 0
    fixed: float | None = None
    per_row: float | None = None

    def observe(self, rows: int, seconds: float) -> None:
        if self.samples == 0:
            self.n, self.t, self.nn, self.nt = rows, seconds, rows * rows, rows * seconds
        else:
            k = _ALPHA
            self.n += k * (rows - self.n)
            self.t += k * (seconds - self.t)
            self.nn += k * (rows * rows - self.nn)
            self.nt += k * (rows * seconds - self.nt)
        self.samples += 1
        var = self.nn - self.n * self.n
        if var > 0.25:  # sizes vary enough to tell fixed cost from per-row cost
            b = max(0.0, (self.nt - self.n * self.t) / var)
            self.per_row = b
            self.fixed = min(max(0.0, self.t - b * self.n), self.t)
        elif self.fixed is None or not self.per_row:
            # Every batch had the same size so far: assume the cost is fixed (the
            # optimistic guess for batching; refined once sizes vary), and follow its
            # average: the first, cold call must not stand for the model's cost forever.
            self.fixed, self.per_row = self.t, 0.0

    @property
    def rows_per_second(self) -> float | None:
        if self.samples == 0 or self.t <= 0:
            return None
        return self.n / self.t


def split_rows(prediction: Any, bounds: Sequence[tuple[int, int]], total: int) -> list[Any]:
    """Cut a batch prediction into the row ranges ``bounds`` (``[start, stop)`` pairs).

    Handles numpy arrays, lists and tuples, pandas frames and series, Arrow
    tables and arrays, and dicts of those (one entry per output). Raises
    :class:`ConveyorError` when the prediction does not have ``total`` rows.
    """
    length = _length(prediction)
    if length != total:
        raise ConveyorError(
            f"the model returned {length} rows of predictions for {total} input rows; "
            "a model must return one prediction per input row",
            field="prediction",
        )
    if len(bounds) == 1:
        return [prediction]
    return [_slice(prediction, start, stop) for start, stop in bounds]


def _length(prediction: Any) -> int:
    if isinstance(prediction, dict):
        lengths = {_length(v) for v in prediction.values()}
        if len(lengths) != 1:
            raise ConveyorError(
                f"the model's outputs have different numbers of rows: {sorted(lengths)}",
                field="prediction",
            )
        return lengths.pop()
    num_rows = getattr(prediction, "num_rows", None)  # pyarrow.Table
    if isinstance(num_rows, int):
        return num_rows
    try:
        return len(prediction)
    except TypeError as exc:
        raise ConveyorError(
            f"the model returned a {type(prediction).__name__}, which has no rows to split; "
            "return an array, a list, a DataFrame or a dict of those",
            field="prediction",
        ) from exc


def _slice(prediction: Any, start: int, stop: int) -> Any:
    if isinstance(prediction, dict):
        return {k: _slice(v, start, stop) for k, v in prediction.items()}
    iloc = getattr(prediction, "iloc", None)  # pandas DataFrame / Series
    if iloc is not None:
        return iloc[start:stop]
    arrow_slice = getattr(prediction, "slice", None)  # pyarrow Table / Array
    if arrow_slice is not None and not isinstance(prediction, list | tuple):
        return arrow_slice(start, stop - start)
    return prediction[start:stop]  # numpy arrays, lists, tuples


class Batcher:
    """Merge concurrent requests into batches for one model (see the module docstring).

    ``predict`` takes one Arrow table and returns one prediction per row.
    ``on_batch(size, seconds)`` is called on the event loop after every batch
    (for metrics); it must be quick and should not raise.
    """

    def __init__(
        self,
        predict: Callable[[pa.Table], Any],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        executor: Executor | None = None,
        name: str = "",
        on_batch: Callable[[int, float], None] | None = None,
        inline_max_ms: float = 0.5,
    ) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise InvalidInputError(
                f"max_batch_size must be an integer >= 1, got {max_batch_size!r}",
                field="max_batch_size",
            )
        if not (isinstance(max_wait_ms, int | float) and math.isfinite(max_wait_ms)) or (
            max_wait_ms < 0
        ):
            raise InvalidInputError(
                f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}",
                field="max_wait_ms",
            )
        if not (isinstance(inline_max_ms, int | float) and math.isfinite(inline_max_ms)) or (
            inline_max_ms < 0
        ):
            raise InvalidInputError(
                f"inline_max_ms must be a finite number >= 0, got {inline_max_ms!r}",
                field="inline_max_ms",
            )
        if not isinstance(max_queue, int) or max_queue < max_batch_size:
            raise InvalidInputError(
                f"max_queue must be an integer >= max_batch_size ({max_batch_size}), "
                f"got {max_queue!r}",
                field="max_queue",
            )
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.inline_max = inline_max_ms / 1000.0
        self.name = name
        self.on_batch = on_batch
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=1 if max_batch_size > 1 else min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix=f"conveyor-batcher-{name}" if name else "conveyor-batcher",
        )
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._outstanding = 0  # accepted requests whose future is not resolved yet
        self._inflight_rows = 0  # direct path: rows inside the executor
        self._inflight: set[asyncio.Future[Any]] = set()  # direct path calls
        self._concurrency = 1.0  # EWMA of outstanding requests seen at each submit
        self._cost = _CostModel()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: The most recent batches, oldest first.
        self.history: deque[BatchInfo] = deque(maxlen=_HISTORY)
        self.batches = 0
        self.rows = 0

    def __repr__(self) -> str:
        return (
            f"Batcher({self.name!r}, max_batch_size={self.max_batch_size}, "
            f"max_wait_ms={self.max_wait * 1000:g}, queue_depth={self.queue_depth})"
        )

    # -- stats ----------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Rows accepted and not yet handed to the model."""
        return self._queued_rows

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fixed_cost(self) -> float | None:
        """Estimated fixed cost of one model call, seconds (``None`` before any batch)."""
        return self._cost.fixed

    @property
    def per_row_cost(self) -> float | None:
        """Estimated cost of one more row in a call, seconds (``None`` before any batch)."""
        return self._cost.per_row

    @property
    def rows_per_second(self) -> float | None:
        """Measured model throughput (``None`` before any batch)."""
        return self._cost.rows_per_second

    def retry_after(self, rows: int | None = None) -> float:
        """Seconds until ``rows`` queued rows (default: the queue) should have gone through."""
        backlog = self._queued_rows + self._inflight_rows if rows is None else rows
        rate = self._cost.rows_per_second
        if rate is None:
            return _DEFAULT_RETRY_AFTER
        return max(0.001, round(backlog / rate, 3))

    # -- requests -------------------------------------------------------------

    async def submit(self, table: pa.Table, *, alone: bool = False) -> Any:
        """Predict ``table``'s rows, batched with other requests; returns only its rows.

        ``alone``: the caller has no other request in flight; a cheap model then runs
        on the event loop (see the module docstring). Raises :class:`OverloadedError`
        at once when the queue is full, :class:`ClosedError` after :meth:`close`, and
        whatever the model raised for the batch this request was in.
        """
        if self._closed:
            raise ClosedError(f"batcher {self.name!r} is closed", batcher=self.name)
        rows = _rows_of(table)
        if alone and self._inline_fits(rows):
            try:
                return self._inline(table, rows)
            except NotOnTheLoop:  # the model behind a formula must load first: a thread
                pass
        if self.max_batch_size == 1:
            return await self._direct(table, rows)
        if self._queued_rows + rows > self.max_queue:
            raise self._overloaded(rows)
        loop = self._start()
        request = _Request(table, rows, loop.create_future(), self._outstanding > 0)
        self._queue.append(request)
        self._queued_rows += rows
        self._outstanding += 1
        self._concurrency += _ALPHA * (self._outstanding - self._concurrency)
        assert self._wakeup is not None
        self._wakeup.set()
        return await request.future

    async def _direct(self, table: pa.Table, rows: int) -> Any:
        """``max_batch_size == 1``: no queue, one executor call per request."""
        if self._inflight_rows + rows > self.max_queue:
            raise self._overloaded(rows)
        loop = asyncio.get_running_loop()
        self._inflight_rows += rows
        call = loop.run_in_executor(self._executor, self._run_one, table, rows)
        self._inflight.add(call)
        try:
            prediction, seconds = await call
        except BaseException:
            self._record(rows, 1, 0.0, False, 0.0, failed=True)
            raise
        finally:
            self._inflight.discard(call)
            self._inflight_rows -= rows
        self._record(rows, 1, seconds, False, 0.0)
        return prediction

    def _inline_fits(self, rows: int) -> bool:
        """Nothing queued or in the model, and a call measured cheap enough for the loop."""
        if not self.inline_max or self._outstanding or self._inflight_rows:
            return False
        fixed, per_row = self._cost.fixed, self._cost.per_row
        if fixed is None or per_row is None:
            return False  # not measured yet: the executor, which measures it
        return fixed + per_row * rows <= self.inline_max

    def _inline(self, table: pa.Table, rows: int) -> Any:
        """The model called here, on the event loop (a lone request to a cheap model)."""
        try:
            prediction, seconds = self._run_one(table, rows)
        except NotOnTheLoop:
            raise  # not a failure: the call goes to the executor
        except BaseException:
            self._record(rows, 1, 0.0, False, 0.0, failed=True, inline=True)
            raise
        self._record(rows, 1, seconds, False, 0.0, inline=True)
        return prediction

    def _run_one(self, table: pa.Table, rows: int) -> tuple[Any, float]:
        start = time.perf_counter()
        prediction = self._predict(table)
        split_rows(prediction, [(0, rows)], rows)  # checks the row count
        return prediction, time.perf_counter() - start

    def _overloaded(self, rows: int) -> OverloadedError:
        if rows > self.max_queue:
            return OverloadedError(
                f"the request has {rows} rows, more than batcher {self.name!r} can ever "
                f"queue ({self.max_queue}); send smaller requests",
                retry_after=self.retry_after(rows),
                batcher=self.name,
            )
        retry = self.retry_after()
        return OverloadedError(
            f"batcher {self.name!r} is overloaded: {self._queued_rows + self._inflight_rows} "
            f"rows queued (limit {self.max_queue}); retry after {retry:g} s",
            retry_after=retry,
            batcher=self.name,
        )

    # -- the worker -----------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._work(), name=f"conveyor-batcher-{self.name}")
        elif loop is not self._loop:
            raise ClosedError(
                f"batcher {self.name!r} belongs to another event loop", batcher=self.name
            )
        return loop

    async def _work(self) -> None:
        try:
            await self._loop_forever()
        except BaseException as exc:
            # A bug here must not leave callers hanging: fail what is queued.
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("worker of batcher %r crashed", self.name)
            self._closed = True
            error = ClosedError(f"batcher {self.name!r} stopped: {exc!r}", batcher=self.name)
            self._fail_queued(error)
            raise

    async def _loop_forever(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if not self._queue:
                if self._closed:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            batch, rows = self._take([], 0)
            if not batch:
                continue  # only cancelled requests were queued
            waited, wait_seconds = False, 0.0
            budget = self._wait_budget(batch, rows)
            if budget > 0:
                # Everything queued with this schema is taken: each wake-up
                # from here on is a new request.
                waited = True
                started = time.perf_counter()
                deadline = started + budget
                while rows < self.max_batch_size and not self._closed and self._expecting_more():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    wakeup.clear()
                    try:
                        await asyncio.wait_for(wakeup.wait(), left)
                    except TimeoutError:
                        break
                    batch, rows = self._take(batch, rows)
                wait_seconds = time.perf_counter() - started
            await self._run(batch, rows, waited, wait_seconds)

    def _take(self, batch: list[_Request], rows: int) -> tuple[list[_Request], int]:
        """Move queued requests into ``batch`` while they fit and share its schema.

        A request is never split; one larger than ``max_batch_size`` forms a
        batch of its own. Requests with another schema keep their place.
        """
        schema = _shape(batch[0].table) if batch else None
        kept: deque[_Request] = deque()
        queue = self._queue
        while queue:
            request = queue.popleft()
            if request.future.done():  # the caller went away (cancelled)
                self._queued_rows -= request.rows
                self._outstanding -= 1
                continue
            fits = rows + request.rows <= self.max_batch_size or not batch
            if schema is None:
                schema = _shape(request.table)
                same = True
            else:
                same = _same_shape(_shape(request.table), schema)
            if fits and same:
                batch.append(request)
                rows += request.rows
                self._queued_rows -= request.rows
                if rows >= self.max_batch_size:
                    break
            else:
                kept.append(request)
                if not same:
                    continue
                break  # full: the rest keeps its order behind
        if kept:
            kept.extend(queue)
            queue.clear()
            queue.extend(kept)
        return batch, rows

    def _expecting_more(self) -> bool:
        """More requests are due: fewer are outstanding than usually are."""
        return self._outstanding < self._concurrency - 0.5

    def _wait_budget(self, batch: list[_Request], rows: int) -> float:
        """How long to hold this batch open for more requests (0: run it now).

        A request that found the batcher idle (nothing outstanding) is alone:
        it never waits, whatever the recent history says.
        """
        if self.max_wait <= 0 or rows >= self.max_batch_size or self._queue:
            return 0.0
        if not any(r.concurrent for r in batch):
            return 0.0
        if not self._expecting_more():
            return 0.0
        fixed = self._cost.fixed
        if fixed is None:
            return self.max_wait
        if fixed < _MIN_WORTHWHILE_WAIT:
            return 0.0
        return min(self.max_wait, fixed)

    async def _run(
        self, batch: list[_Request], rows: int, waited: bool, wait_seconds: float
    ) -> None:
        assert self._loop is not None
        tables = [r.table for r in batch]
        bounds: list[tuple[int, int]] = []
        start = 0
        for r in batch:
            bounds.append((start, start + r.rows))
            start += r.rows
        try:
            parts, seconds = await self._loop.run_in_executor(
                self._executor, self._run_batch, tables, bounds, rows
            )
        except Exception as exc:  # the model's error fails this batch only
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            self._outstanding -= len(batch)
            self._record(rows, len(batch), 0.0, waited, wait_seconds, failed=True)
            return
        for r, part in zip(batch, parts, strict=True):
            if not r.future.done():
                r.future.set_result(part)
        self._outstanding -= len(batch)
        self._record(rows, len(batch), seconds, waited, wait_seconds)

    def _run_batch(
        self, tables: list[pa.Table], bounds: list[tuple[int, int]], rows: int
    ) -> tuple[list[Any], float]:
        """In the executor thread: concatenate, predict, split."""
        start = time.perf_counter()
        if len(tables) == 1:
            table = tables[0]
        elif all(type(t) is DenseRows for t in tables) and len({t.names for t in tables}) == 1:
            table = DenseRows.stack(tables)
        else:
            import pyarrow as pa

            table = pa.concat_tables([t.to_arrow() if type(t) is DenseRows else t for t in tables])
        parts = split_rows(self._predict(table), bounds, rows)
        return parts, time.perf_counter() - start

    def _record(
        self,
        rows: int,
        requests: int,
        seconds: float,
        waited: bool,
        wait_seconds: float,
        *,
        failed: bool = False,
        inline: bool = False,
    ) -> None:
        self.history.append(
            BatchInfo(rows, requests, seconds, waited, wait_seconds, failed, inline)
        )
        if failed:
            return
        self.batches += 1
        self.rows += rows
        self._cost.observe(rows, seconds)
        if self.on_batch is not None:
            try:
                self.on_batch(rows, seconds)
            except Exception:  # metrics must never fail a request
                log.exception("on_batch hook of batcher %r raised", self.name)

    # -- shutdown -------------------------------------------------------------

    async def close(self, drain: bool = True) -> None:
        """Stop accepting requests; finish what is queued (``drain``) or fail it.

        With ``drain=False`` queued requests get :class:`ClosedError`; the
        batch already in the model still completes. Idempotent.
        """
        self._closed = True
        if not drain:
            self._fail_queued(ClosedError(f"batcher {self.name!r} was closed", batcher=self.name))
        if self._worker is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.wait([self._worker])  # never raises; a crash was logged
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            request = self._queue.popleft()
            self._queued_rows -= request.rows
            self._outstanding -= 1
            if not request.future.done():
                request.future.set_exception(error)


def _shape(table: Any) -> Any:
    """What requests batched together share: dense rows' column names, a table's schema."""
    return table.names if type(table) is DenseRows else table.schema


def _same_shape(a: Any, b: Any) -> bool:
    if type(a) is tuple or type(b) is tuple:
        return type(a) is type(b) and a == b
    return bool(a.equals(b))


def _rows_of(table: Any) -> int:
    if type(table) is DenseRows:
        return table.num_rows
    rows = getattr(table, "num_rows", None)
    if not isinstance(rows, int) or not hasattr(table, "schema"):
        raise InvalidInputError(
            f"a request is a pyarrow.Table, got {type(table).__name__}", field="table"
        )
    if rows == 0:
        raise InvalidInputError("the request has no rows", field="table")
    return rows
