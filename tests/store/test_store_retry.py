"""retry_on_conflict: jittered exponential backoff, a last error that counts, and real races."""

from __future__ import annotations

import random
import threading
import time

import pytest

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.store.retry import DEFAULT_ATTEMPTS, backoff_delay, retry_on_conflict


class _Flaky:
    """Raises ``errors`` one per call, then returns ``value``."""

    def __init__(self, errors: list[BaseException], value: str = "done") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def test_a_write_that_loses_then_wins_is_retried_with_growing_jittered_waits() -> None:
    waits: list[float] = []
    fn = _Flaky([ConcurrentUpdateError("stale"), AlreadyExistsError("taken")] * 2)
    got = retry_on_conflict(
        fn, attempts=5, base_delay=0.01, max_delay=0.025, sleep=waits.append, rng=random.Random(1)
    )
    assert got == "done" and fn.calls == 5
    assert len(waits) == 4
    # Full jitter: each wait is drawn below min(max_delay, base_delay * 2**n).
    for n, wait in enumerate(waits):
        assert 0 <= wait <= min(0.025, 0.01 * 2**n)


def test_the_last_error_is_reraised_with_the_attempts_in_its_message() -> None:
    errors = [ConcurrentUpdateError(f"stale {i}", row="r1") for i in range(3)]
    fn = _Flaky(list(errors))
    with pytest.raises(ConcurrentUpdateError) as info:
        retry_on_conflict(fn, attempts=3, what="moving alias m@champion", sleep=lambda _: None)
    assert info.value is errors[-1]  # the same object: type, context and traceback kept
    assert str(info.value) == (
        "stale 2 (moving alias m@champion: gave up after 3 attempts, each lost to a "
        "concurrent writer)"
    )
    assert info.value.context == {"row": "r1", "attempts": 3}
    assert info.value.to_dict()["attempts"] == 3
    assert fn.calls == 3


def test_other_errors_are_never_retried() -> None:
    fn = _Flaky([NotFoundError("gone"), ConcurrentUpdateError("stale")])
    with pytest.raises(NotFoundError, match=r"^gone$"):
        retry_on_conflict(fn, sleep=lambda _: pytest.fail("no wait for a non-conflict"))
    assert fn.calls == 1


def test_retry_on_names_what_counts_as_a_conflict() -> None:
    fn = _Flaky([AlreadyExistsError("taken")])
    with pytest.raises(AlreadyExistsError):
        retry_on_conflict(fn, retry_on=(ConcurrentUpdateError,), sleep=lambda _: None)
    assert fn.calls == 1
    fn = _Flaky([TimeoutError("slow"), TimeoutError("slow")])
    with pytest.raises(TimeoutError) as info:
        retry_on_conflict(fn, attempts=2, retry_on=(TimeoutError,), sleep=lambda _: None)
    # A foreign exception keeps its args; the count is a note on it.
    assert info.value.args == ("slow",)
    assert "gave up after 2 attempts" in "".join(info.value.__notes__)


def test_defaults_and_argument_checks() -> None:
    fn = _Flaky([ConcurrentUpdateError("stale")] * (DEFAULT_ATTEMPTS + 1))
    with pytest.raises(ConcurrentUpdateError, match=f"after {DEFAULT_ATTEMPTS} attempts"):
        retry_on_conflict(fn, sleep=lambda _: None)
    assert fn.calls == DEFAULT_ATTEMPTS
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="attempts"):
            retry_on_conflict(lambda: 1, attempts=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="base_delay"):
        retry_on_conflict(lambda: 1, base_delay=-1)
    assert retry_on_conflict(lambda: 7, attempts=1) == 7
    assert backoff_delay(30, base_delay=0.1, max_delay=0.5, rng=random.Random(0)) <= 0.5


class _VersionedCell:
    """A value under optimistic concurrency, as a row with a version column is."""

    def __init__(self) -> None:
        self.value = 0
        self.version = 0
        self._lock = threading.Lock()
        self.conflicts = 0

    def increment(self) -> int:
        seen_value, seen_version = self.value, self.version  # the read
        time.sleep(0.0005)  # work between the read and the write: where races happen
        with self._lock:  # the conditional write: UPDATE ... WHERE version = seen
            if self.version != seen_version:
                self.conflicts += 1
                raise ConcurrentUpdateError("the cell moved since it was read")
            self.value, self.version = seen_value + 1, seen_version + 1
            return self.value


def test_racing_threads_all_land_their_writes() -> None:
    cell = _VersionedCell()
    threads_n, each = 8, 5
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            try:
                retry_on_conflict(cell.increment, attempts=50, base_delay=0.0005, max_delay=0.01)
            except BaseException as exc:  # collected, so the assertion below shows it
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert cell.value == threads_n * each  # no increment lost
    assert cell.conflicts > 0  # the threads did race


def test_a_race_without_enough_attempts_says_so() -> None:
    cell = _VersionedCell()
    barrier = threading.Barrier(6)
    outcomes: list[BaseException | int] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        try:
            got: BaseException | int = retry_on_conflict(cell.increment, attempts=1)
        except ConcurrentUpdateError as exc:
            got = exc
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lost = [o for o in outcomes if isinstance(o, ConcurrentUpdateError)]
    assert cell.value == 6 - len(lost)
    assert all("gave up after 1 attempt," in str(e) for e in lost)
