"""The circuit breaker: failures in a row open it, one trial call after the reset may close
it, a failed trial doubles the wait; each change is reported once."""

from __future__ import annotations

from conveyor.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_it_and_a_trial_closes_it() -> None:
    clock = Clock()
    changes: list[str] = []
    breaker = CircuitBreaker(
        "cache", failures=3, reset_s=1.0, clock=clock, on_change=lambda b: changes.append(b.state)
    )
    for _ in range(2):
        assert breaker.allow()
        breaker.failure(ConnectionError("refused"))
    breaker.success()  # a success between failures resets the count
    for _ in range(2):
        breaker.failure("timeout")
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure("timeout")
    assert breaker.state == "open" and changes == ["open"]
    assert not breaker.allow() and breaker.short_circuited == 1
    assert breaker.to_dict()["error"] == "timeout"
    clock.now += 1.0
    assert breaker.allow()  # the one trial call
    assert breaker.state == "half_open" and not breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and changes == ["open", "closed"]
    assert breaker.allow() and breaker.to_dict()["for_s"] is None


def test_a_failed_trial_doubles_the_wait_up_to_the_cap() -> None:
    clock = Clock()
    breaker = CircuitBreaker("store", failures=1, reset_s=1.0, max_reset_s=3.0, clock=clock)
    breaker.failure("refused")
    waits = []
    for _ in range(4):
        start = clock.now
        while not breaker.allow():
            clock.now += 0.25
        waits.append(clock.now - start)
        breaker.failure("still refused")
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert breaker.opens == 1  # one incident, however many trials failed


def test_retry_in_says_when_the_next_trial_goes_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("jobs", failures=1, reset_s=2.0, clock=clock)
    assert breaker.retry_in() == 0.0
    breaker.failure("timeout")
    assert breaker.retry_in() == 2.0
    clock.now += 1.5
    assert breaker.retry_in() == 0.5
    clock.now += 1.0
    assert breaker.retry_in() == 0.0 and breaker.allow()  # the trial is due
    breaker.failure("timeout")  # a failed trial doubles the wait
    assert breaker.retry_in() == 4.0
