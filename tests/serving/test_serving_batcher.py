"""The dynamic batcher against real scikit-learn models (no mocks, no timing assertions)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from conveyor.errors import ClosedError, InvalidInputError, OverloadedError
from conveyor.serving.batcher import Batcher, split_rows
from conveyor.testing.wait import wait_until_async

FEATURES = [f"x{i}" for i in range(5)]


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


def _fit(kind: str) -> Any:
    x = _data(400, 0)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    if kind == "logreg":
        return LogisticRegression().fit(x, y)
    return RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(x, y)


@pytest.fixture(scope="module")
def logreg() -> Any:
    return _fit("logreg")


@pytest.fixture(scope="module")
def forest() -> Any:
    return _fit("forest")


def _matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(name).to_numpy() for name in FEATURES])


def _table(rows: int, seed: int) -> pa.Table:
    x = _data(rows, seed)
    return pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})


def _tables(count: int, seed: int = 1, max_rows: int = 8) -> list[pa.Table]:
    sizes = np.random.default_rng(seed).integers(1, max_rows + 1, count)
    return [_table(int(n), seed * 10_000 + i) for i, n in enumerate(sizes)]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- correctness under concurrency -------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "output"),
    [
        ("logreg", "proba"),
        ("forest", "proba"),
        ("forest", "labels_list"),
        ("logreg", "frame"),
    ],
)
def test_concurrent_submits_get_exactly_their_own_predictions(
    logreg: Any, forest: Any, model_name: str, output: str
) -> None:
    model = logreg if model_name == "logreg" else forest

    def predict(table: pa.Table) -> Any:
        x = _matrix(table)
        if output == "proba":
            return model.predict_proba(x)
        if output == "labels_list":
            return model.predict(x).tolist()
        return pd.DataFrame(model.predict_proba(x), columns=["p0", "p1"])

    tables = _tables(200)
    sizes: list[int] = []

    async def main() -> list[Any]:
        batcher = Batcher(predict, max_batch_size=32, on_batch=lambda size, _: sizes.append(size))
        try:
            return await asyncio.gather(*(batcher.submit(t) for t in tables))
        finally:
            await batcher.close()

    results = _run(main())
    assert len(results) == len(tables)
    for table, got in zip(tables, results, strict=True):
        expected = predict(table)  # the same model called on this request alone
        if output == "labels_list":
            assert got == expected
        elif output == "frame":
            assert len(got) == table.num_rows
            np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
        else:
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert sum(sizes) == sum(t.num_rows for t in tables)
    assert max(sizes) > 1  # batches formed
    assert max(sizes) <= 32 + 7  # never over the limit (a request is never split)


def test_batches_form_under_concurrency_and_a_lone_request_never_waits(forest: Any) -> None:
    def predict(table: pa.Table) -> Any:
        return forest.predict(_matrix(table))

    tables = _tables(64, seed=3, max_rows=3)
    observed: list[int] = []

    async def main() -> Batcher:
        batcher = Batcher(
            predict,
            max_batch_size=64,
            max_wait_ms=50.0,
            on_batch=lambda size, _: observed.append(size),
        )
        # One caller at a time: every request finds the batcher idle.
        for table in tables[:10]:
            await batcher.submit(table)
        alone = list(batcher.history)
        assert [b.requests for b in alone] == [1] * 10
        assert not any(b.waited for b in alone)
        assert all(b.wait_seconds == 0.0 for b in alone)

        # Many callers in closed loops: requests pile up and merge.
        async def client(i: int) -> None:
            for j in range(5):
                await batcher.submit(tables[(i + j) % len(tables)])

        await asyncio.gather(*(client(i) for i in range(16)))

        # After the burst, a lone request still does not wait.
        await batcher.submit(tables[0])
        assert batcher.history[-1].requests == 1
        assert not batcher.history[-1].waited
        await batcher.close()
        return batcher

    batcher = _run(main())
    concurrent = list(batcher.history)[10:-1]
    assert max(b.requests for b in concurrent) > 1
    assert max(observed) > 3
    assert (
        batcher.rows
        == sum(t.num_rows for t in tables[:10])
        + sum(tables[(i + j) % 64].num_rows for i in range(16) for j in range(5))
        + tables[0].num_rows
    )
    assert batcher.fixed_cost is not None
    assert batcher.rows_per_second is not None


def test_a_model_error_fails_only_the_requests_of_its_batch(logreg: Any) -> None:
    poison = 999.0

    def predict(table: pa.Table) -> Any:
        x = _matrix(table)
        if (x == poison).any():
            raise ValueError("poisoned row in the batch")
        return logreg.predict(x)

    good = _tables(40, seed=5)
    bad = pa.table({name: [poison] for name in FEATURES})
    entered = threading.Event()
    release = threading.Event()

    def gated(table: pa.Table) -> Any:
        entered.set()
        release.wait(10)
        return predict(table)

    async def main() -> tuple[list[Any], list[Any], Batcher]:
        batcher = Batcher(gated, max_batch_size=16)
        # The first request holds the worker, so the rest queue up in FIFO
        # order and form batches of known membership.
        first = asyncio.ensure_future(batcher.submit(good[0]))
        await wait_until_async(entered.is_set, message="the first request to reach the model")
        requests = [*good[1:10], bad, *good[10:]]
        futures = [asyncio.ensure_future(batcher.submit(t)) for t in requests]
        await wait_until_async(
            lambda: batcher.queue_depth == sum(t.num_rows for t in requests),
            message="every other request to be queued behind it",
        )
        release.set()
        results = await asyncio.gather(first, *futures, return_exceptions=True)
        await batcher.close()
        return [good[0], *requests], results, batcher

    requests, results, batcher = _run(main())
    failed_batches = [b for b in batcher.history if b.failed]
    assert len(failed_batches) == 1
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == failed_batches[0].requests
    assert all(isinstance(e, ValueError) and "poisoned" in str(e) for e in errors)
    assert len(errors) < len(requests)  # other batches succeeded
    for table, result in zip(requests, results, strict=True):
        if not isinstance(result, BaseException):
            np.testing.assert_array_equal(result, predict(table))
    assert isinstance(results[requests.index(bad)], ValueError)


def test_a_full_queue_raises_overloaded_at_once_and_loses_nothing_accepted(
    forest: Any,
) -> None:
    release = threading.Event()

    def predict(table: pa.Table) -> Any:
        release.wait(10)
        return forest.predict(_matrix(table))

    tables = _tables(100, seed=7, max_rows=4)

    async def main() -> tuple[list[pa.Table], list[Any], list[OverloadedError], Batcher]:
        batcher = Batcher(predict, max_batch_size=8, max_queue=40)
        # Measure throughput first so retry_after comes from it.
        release.set()
        for table in tables[:3]:
            await batcher.submit(table)
        assert batcher.rows_per_second is not None
        release.clear()
        accepted: list[pa.Table] = []
        futures: list[asyncio.Future[Any]] = []
        rejected: list[OverloadedError] = []
        for table in tables[3:]:
            future = asyncio.ensure_future(batcher.submit(table))
            # One turn of the event loop, not a wait in time: submit runs up to its first
            # await, where it has either queued the request or refused it.
            await asyncio.sleep(0)
            if future.done() and isinstance(future.exception(), OverloadedError):
                rejected.append(future.exception())  # type: ignore[arg-type]
            else:
                accepted.append(table)
                futures.append(future)
        assert batcher.queue_depth <= 40
        release.set()
        results = await asyncio.gather(*futures)
        await batcher.close()
        return accepted, results, rejected, batcher

    accepted, results, rejected, batcher = _run(main())
    assert rejected, "the queue never filled"
    assert all(e.retry_after > 0 and e.code == "overloaded" for e in rejected)
    assert all(e.to_dict()["retry_after"] == e.retry_after for e in rejected)
    assert len(accepted) + len(rejected) == 97
    for table, result in zip(accepted, results, strict=True):
        np.testing.assert_array_equal(result, forest.predict(_matrix(table)))
    assert batcher.queue_depth == 0


def test_a_request_larger_than_the_queue_is_refused(logreg: Any) -> None:
    async def main() -> None:
        batcher = Batcher(lambda t: logreg.predict(_matrix(t)), max_batch_size=4, max_queue=10)
        with pytest.raises(OverloadedError, match="more than"):
            await batcher.submit(_table(11, 0))
        assert len(await batcher.submit(_table(10, 0))) == 10  # large but fits: alone
        await batcher.close()

    _run(main())


def test_close_drains_the_queue_and_refuses_new_requests(forest: Any) -> None:
    entered = threading.Event()
    release = threading.Event()

    def predict(table: pa.Table) -> Any:
        entered.set()
        release.wait(10)
        return forest.predict(_matrix(table))

    tables = _tables(30, seed=9)

    async def main() -> tuple[list[Any], Batcher]:
        batcher = Batcher(predict, max_batch_size=4)
        futures = [asyncio.ensure_future(batcher.submit(t)) for t in tables]
        # The submits were scheduled before the worker: once a batch is in the model,
        # every request is in.
        await wait_until_async(entered.is_set, message="the first batch to reach the model")
        closing = asyncio.ensure_future(batcher.close())
        await wait_until_async(lambda: batcher.closed, message="close to begin")
        with pytest.raises(ClosedError):
            await batcher.submit(tables[0])
        assert not closing.done()
        release.set()
        await closing
        assert all(f.done() for f in futures)
        return [f.result() for f in futures], batcher

    results, batcher = _run(main())
    for table, result in zip(tables, results, strict=True):
        np.testing.assert_array_equal(result, forest.predict(_matrix(table)))
    assert batcher.queue_depth == 0


def test_close_without_drain_fails_the_queued_requests(logreg: Any) -> None:
    entered = threading.Event()
    release = threading.Event()

    def predict(table: pa.Table) -> Any:
        entered.set()
        release.wait(10)
        return logreg.predict(_matrix(table))

    tables = _tables(10, seed=11, max_rows=2)

    async def main() -> list[Any]:
        batcher = Batcher(predict, max_batch_size=2)
        futures = [asyncio.ensure_future(batcher.submit(t)) for t in tables]
        await wait_until_async(entered.is_set, message="the first batch to reach the model")
        closing = asyncio.ensure_future(batcher.close(drain=False))
        await wait_until_async(
            lambda: batcher.queue_depth == 0, message="close to fail the queued requests"
        )
        release.set()
        await closing
        return await asyncio.gather(*futures, return_exceptions=True)

    results = _run(main())
    done = [r for r in results if not isinstance(r, BaseException)]
    closed = [r for r in results if isinstance(r, ClosedError)]
    assert done, "the batch already in the model completes"
    assert closed, "queued requests are failed"
    assert len(done) + len(closed) == len(tables)


def test_requests_with_different_schemas_are_batched_separately() -> None:
    def predict(table: pa.Table) -> Any:
        return np.full(table.num_rows, table.num_columns)

    narrow = [pa.table({"a": [1.0] * n}) for n in (1, 2, 3)]
    wide = [pa.table({"a": [1.0] * n, "b": [2.0] * n}) for n in (2, 1)]

    async def main() -> list[Any]:
        batcher = Batcher(predict, max_batch_size=16)
        mixed = [narrow[0], wide[0], narrow[1], wide[1], narrow[2]]
        results = await asyncio.gather(*(batcher.submit(t) for t in mixed))
        await batcher.close()
        return results

    results = _run(main())
    assert [r.tolist() for r in results] == [[1], [2, 2], [1, 1], [2], [1, 1, 1]]


def test_direct_path_when_max_batch_size_is_one(forest: Any) -> None:
    calls: list[int] = []

    def predict(table: pa.Table) -> Any:
        calls.append(threading.get_ident())
        return forest.predict(_matrix(table))

    tables = _tables(20, seed=13)
    loop_thread: list[int] = []

    async def main() -> tuple[list[Any], Batcher]:
        loop_thread.append(threading.get_ident())
        batcher = Batcher(predict, max_batch_size=1)
        results = await asyncio.gather(*(batcher.submit(t) for t in tables))
        assert batcher._worker is None  # no queue machinery
        await batcher.close()
        return results, batcher

    results, batcher = _run(main())
    for table, result in zip(tables, results, strict=True):
        np.testing.assert_array_equal(result, forest.predict(_matrix(table)))
    assert loop_thread[0] not in calls  # never on the event loop
    assert [b.requests for b in batcher.history] == [1] * 20


def _noting_threads(model: Any, threads: list[int]) -> Callable[[pa.Table], Any]:
    """The model's predict, noting the thread of each call in ``threads``."""

    def predict(table: pa.Table) -> Any:
        threads.append(threading.get_ident())
        return model.predict(_matrix(table))

    return predict


def test_model_runs_off_the_event_loop(logreg: Any) -> None:
    threads: list[int] = []
    predict = _noting_threads(logreg, threads)

    async def main() -> int:
        batcher = Batcher(predict)
        await asyncio.gather(*(batcher.submit(t) for t in _tables(10)))
        await batcher.close()
        return threading.get_ident()

    assert _run(main()) not in threads


def test_a_lone_request_to_a_cheap_model_runs_on_the_event_loop(logreg: Any) -> None:
    threads: list[int] = []
    predict = _noting_threads(logreg, threads)

    async def main() -> int:
        batcher = Batcher(predict, inline_max_ms=5)
        tables = _tables(12)
        # Before its cost is measured, even a lone request goes through the executor.
        first = await batcher.submit(tables[0], alone=True)
        assert threads[-1] != threading.get_ident() and not batcher.history[-1].inline
        for table in tables[1:6]:
            await batcher.submit(table)  # measured
        loop_thread = threading.get_ident()
        alone = [await batcher.submit(t, alone=True) for t in tables[6:9]]
        assert threads[-3:] == [loop_thread] * 3
        assert [b.inline for b in list(batcher.history)[-3:]] == [True, True, True]
        assert batcher.rows == sum(t.num_rows for t in tables[:9])  # counted as batches
        # Not alone (the server has other requests in flight): the executor.
        await batcher.submit(tables[9])
        assert threads[-1] != loop_thread and not batcher.history[-1].inline
        # Each got its own rows.
        for table, got in zip(tables[6:9], alone, strict=True):
            assert list(got) == list(logreg.predict(_matrix(table)))
        assert list(first) == list(logreg.predict(_matrix(tables[0])))
        await batcher.close()
        return loop_thread

    _run(main())


def test_a_lone_request_waits_its_turn_behind_one_in_the_model(logreg: Any) -> None:
    release = threading.Event()
    threads: list[int] = []

    def predict(table: pa.Table) -> Any:
        threads.append(threading.get_ident())
        if table.num_rows == 7:
            release.wait(5)  # the one request held in the model
        return logreg.predict(_matrix(table))

    async def main() -> None:
        batcher = Batcher(predict, inline_max_ms=5)
        for seed in range(6):
            await batcher.submit(_table(3, seed))  # measured: cheap
        held = asyncio.ensure_future(batcher.submit(_table(7, 3)))
        await wait_until_async(lambda: len(threads) == 7, message="the held batch in the model")
        lone = asyncio.ensure_future(batcher.submit(_table(2, 4), alone=True))
        await asyncio.sleep(0.05)
        assert not lone.done()  # queued behind the batch in the model, not run beside it
        release.set()
        await asyncio.gather(held, lone)
        assert threads[-1] != threading.get_ident() and not batcher.history[-1].inline
        await batcher.close()

    _run(main())


def test_a_slow_model_or_a_zero_bound_never_runs_on_the_event_loop(logreg: Any) -> None:
    threads: list[int] = []

    def slow(table: pa.Table) -> Any:
        threads.append(threading.get_ident())
        threading.Event().wait(0.003)  # 3 ms a call, over the 0.5 ms bound
        return logreg.predict(_matrix(table))

    cheap = _noting_threads(logreg, threads)

    async def main() -> None:
        for predict, bound in ((slow, 0.5), (cheap, 0.0)):
            batcher = Batcher(predict, inline_max_ms=bound)
            for table in _tables(10):
                await batcher.submit(table, alone=True)
            assert threading.get_ident() not in threads
            assert not any(b.inline for b in batcher.history)
            await batcher.close()

    _run(main())


def test_a_call_that_overran_the_bound_on_the_loop_sends_the_rest_to_the_executor(
    logreg: Any,
) -> None:
    # A model that is cheap until it is not (a cold cache, a remote call in a PythonModel):
    # the loop it held once is not lent to it again.
    threads: list[int] = []

    def predict(table: pa.Table) -> Any:
        threads.append(threading.get_ident())
        if table.num_rows == 6:
            threading.Event().wait(0.1)  # 100 ms, twenty times the bound
        return logreg.predict(_matrix(table))

    async def main() -> None:
        batcher = Batcher(predict, inline_max_ms=5)
        for seed in range(6):
            await batcher.submit(_table(3, seed))  # measured: cheap
        await batcher.submit(_table(6, 1), alone=True)
        assert batcher.history[-1].inline  # it looked cheap: on the loop, and overran
        for seed in range(4):
            await batcher.submit(_table(3, seed), alone=True)
        assert not any(b.inline for b in list(batcher.history)[-4:])
        assert threading.get_ident() not in threads[-4:]
        await batcher.close()

    _run(main())


def test_a_model_error_on_the_event_loop_is_the_callers(logreg: Any) -> None:
    def predict(table: pa.Table) -> Any:
        if table.num_rows == 5:
            raise ValueError("five rows: refused by the model")
        return logreg.predict(_matrix(table))

    async def main() -> None:
        batcher = Batcher(predict, inline_max_ms=5)
        for seed in range(6):
            await batcher.submit(_table(3, seed))
        with pytest.raises(ValueError, match="five rows"):
            await batcher.submit(_table(5, 9), alone=True)
        assert batcher.history[-1].failed and batcher.history[-1].inline
        assert list(await batcher.submit(_table(3, 2), alone=True)) == list(
            logreg.predict(_matrix(_table(3, 2)))
        )
        await batcher.close()

    _run(main())


def test_bad_arguments_name_the_field(logreg: Any) -> None:
    predict: Callable[[pa.Table], Any] = lambda t: logreg.predict(_matrix(t))  # noqa: E731
    for kwargs, field in [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"max_queue": 2, "max_batch_size": 4}, "max_queue"),
        ({"inline_max_ms": -0.1}, "inline_max_ms"),
        ({"inline_max_ms": float("nan")}, "inline_max_ms"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            Batcher(predict, **kwargs)
        assert info.value.context["field"] == field

    async def main() -> None:
        batcher = Batcher(predict)
        with pytest.raises(InvalidInputError, match="no rows"):
            await batcher.submit(_table(0, 0))
        with pytest.raises(InvalidInputError, match=r"pyarrow\.Table"):
            await batcher.submit({"x0": [1.0]})  # type: ignore[arg-type]
        await batcher.close()

    _run(main())


def test_a_model_returning_the_wrong_number_of_rows_fails_the_batch() -> None:
    async def main() -> None:
        batcher = Batcher(lambda t: np.zeros(t.num_rows + 1))
        with pytest.raises(Exception, match="returned 3 rows of predictions for 2 input rows"):
            await batcher.submit(pa.table({"a": [1, 2]}))
        await batcher.close()

    _run(main())


def test_split_rows_handles_every_output_kind() -> None:
    bounds = [(0, 1), (1, 3)]
    arr = np.arange(6).reshape(3, 2)
    assert [p.tolist() for p in split_rows(arr, bounds, 3)] == [[[0, 1]], [[2, 3], [4, 5]]]
    assert split_rows([1, 2, 3], bounds, 3) == [[1], [2, 3]]
    frame = pd.DataFrame({"p": [0.1, 0.2, 0.3]})
    assert split_rows(frame, bounds, 3)[1]["p"].tolist() == [0.2, 0.3]
    table = pa.table({"p": [1, 2, 3]})
    assert split_rows(table, bounds, 3)[1].column("p").to_pylist() == [2, 3]
    parts = split_rows({"label": np.array([1, 0, 1]), "score": [0.9, 0.1, 0.8]}, bounds, 3)
    assert parts[1]["label"].tolist() == [0, 1]
    assert parts[1]["score"] == [0.1, 0.8]


def test_the_cost_estimate_follows_the_average_when_every_batch_has_one_size() -> None:
    """The first call of a model is cold (imports, allocations): with every batch one row,
    the estimate must move to the warm cost, not keep the first call's forever."""
    from conveyor.serving.batcher import _CostModel

    cost = _CostModel()
    cost.observe(1, 0.010)  # cold
    for _ in range(100):
        cost.observe(1, 0.0001)
    assert cost.fixed is not None and cost.fixed < 0.0002
    assert cost.per_row == 0.0
