"""Delivery to sinks that fail: a webhook answering 500 or hanging is retried with
backoff, then marked failing, and delays no other sink; the circuit breaker stops
calling a sink that keeps failing."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts_support import http_receiver

from conveyor.monitoring.alerts.delivery import Delivery, Dispatcher, SinkStatus
from conveyor.monitoring.alerts.engine import Incident, Notification
from conveyor.monitoring.alerts.settings import DeliverySpec, SinkSpec
from conveyor.monitoring.alerts.sinks import Sink
from conveyor.testing.wait import wait_until

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def _note(n: int = 0) -> Notification:
    alert = Incident(
        id=f"a{n}",
        fingerprint="r|m",
        rule="r",
        metric="latency_p95_ms",
        model="m",
        severity="page",
        op=">",
        threshold=50.0,
        labels={"alertname": "r", "model": "m"},
        state="firing",
        started_at=NOW,
        value=80.0,
        fired_at=NOW,
    )
    return Notification("firing", "r", (alert,), NOW, "p")


def _hook(name: str, url: str) -> Sink:
    return Sink(SinkSpec(name=name, kind="webhook", url=url))


def test_a_webhook_answering_500_is_retried_with_growing_backoff_then_marked_failing() -> None:
    waits: list[float] = []
    results: list[Delivery] = []
    settings = DeliverySpec(retries=3, backoff_s=2.0, max_backoff_s=60, timeout_s=5)
    with http_receiver() as http:
        dispatcher = Dispatcher(
            [_hook("bad", f"{http.url}/fail/x"), _hook("good", f"{http.url}/ok/y")],
            settings,
            sleep=waits.append,
            on_result=lambda d, s: results.append(d),
            seed=1,
        )
        dispatcher.submit(_note())
        assert dispatcher.drain(30)
        dispatcher.close()
        assert http.hits["/fail/x"] == 4  # the first try and 3 retries
        assert len(http.bodies("/ok/y")) == 1
    # exponential: each wait within [1/2, 1] of backoff_s * 2^n (jitter)
    assert len(waits) == 3
    for n, wait in enumerate(waits):
        assert 2.0 * 2**n / 2 <= wait <= 2.0 * 2**n
    by_sink = {d.sink: d for d in results}
    assert by_sink["bad"].ok is False and by_sink["bad"].attempts == 4
    assert "answered 500" in (by_sink["bad"].error or "")
    assert by_sink["good"].ok and by_sink["good"].attempts == 1
    status = {s.name: s for s in dispatcher.statuses()}
    assert status["bad"].state == "failing" and status["bad"].failed == 1
    assert status["good"].state == "ok" and status["good"].delivered == 1


def test_a_hanging_webhook_delays_no_other_sink() -> None:
    delivered: list[str] = []
    settings = DeliverySpec(retries=1, backoff_s=0.01, timeout_s=60)
    with http_receiver() as http:
        dispatcher = Dispatcher(
            [_hook("stuck", f"{http.url}/hang/x"), _hook("fine", f"{http.url}/ok/y")],
            settings,
            on_result=lambda d, s: delivered.append(d.sink),
        )
        for n in range(3):
            dispatcher.submit(_note(n))
        # all three reach the good sink while the stuck one's first request is held by
        # its receiver (released only below)
        wait_until(http.hanging.is_set, message="the stuck sink's first request arrived")
        wait_until(lambda: len(http.bodies("/ok/y")) == 3, message="the good sink got three")
        # the result is reported once the receiver has answered, a moment after its body
        wait_until(lambda: len(delivered) == 3, message="three deliveries reported")
        assert delivered == ["fine"] * 3
        assert {s.name: s.queued for s in dispatcher.statuses()}["stuck"] == 3
        http.release.set()
        assert dispatcher.drain(60)
        dispatcher.close()
    assert sorted(delivered) == ["fine"] * 3 + ["stuck"] * 3


def test_a_hanging_webhook_times_out_is_retried_and_marked_failing() -> None:
    with http_receiver() as http:
        dispatcher = Dispatcher(
            [_hook("stuck", f"{http.url}/hang/x")],
            DeliverySpec(retries=1, backoff_s=0.01, timeout_s=0.3),
        )
        dispatcher.submit(_note())
        assert dispatcher.drain(60)
        dispatcher.close()
        assert http.hits["/hang/x"] == 2
    (status,) = dispatcher.statuses()
    assert status.state == "failing" and "Timeout" in (status.last_error or "")


def test_the_breaker_stops_calling_a_sink_that_keeps_failing() -> None:
    results: list[tuple[Delivery, SinkStatus]] = []
    settings = DeliverySpec(retries=0, breaker_failures=2, breaker_reset_s=600)
    with http_receiver() as http:
        dispatcher = Dispatcher(
            [_hook("bad", f"{http.url}/fail/x")],
            settings,
            on_result=lambda d, s: results.append((d, s)),
        )
        for n in range(4):
            dispatcher.submit(_note(n))
        assert dispatcher.drain(30)
        dispatcher.close()
        assert http.hits["/fail/x"] == 2  # then the breaker opened: no more calls
    refused = [d for d, _ in results if d.attempts == 0]
    assert len(refused) == 2 and all("breaker open" in (d.error or "") for d in refused)
    assert results[-1][1].state == "failing" and results[-1][1].failed == 4


def test_a_pagerduty_sink_without_its_routing_key_fails_naming_the_variable() -> None:
    sink = Sink(
        SinkSpec(name="pd", kind="pagerduty", url="http://127.0.0.1:9/", routing_key_env="PD_X"),
        env={},
    )
    results: list[Delivery] = []
    dispatcher = Dispatcher(
        [sink],
        DeliverySpec(retries=0),
        on_result=lambda d, s: results.append(d),
    )
    dispatcher.submit(_note())
    assert dispatcher.drain(30)
    dispatcher.close()
    assert not results[0].ok and "PD_X is not set" in (results[0].error or "")


def test_a_sink_takes_only_its_severities() -> None:
    with http_receiver() as http:
        tickets = Sink(
            SinkSpec(name="t", kind="webhook", url=f"{http.url}/ok/t", severities=["ticket"])
        )
        dispatcher = Dispatcher([tickets], DeliverySpec())
        dispatcher.submit(_note())  # a page
        assert dispatcher.drain(10)
        dispatcher.close()
        assert http.bodies("/ok/t") == []


def test_a_webhook_url_from_the_environment_is_never_in_an_error() -> None:
    results: list[Delivery] = []
    with http_receiver() as http:
        spec = SinkSpec(name="chat", kind="slack", url_env="SLACK_URL")
        ok = Sink(spec, env={"SLACK_URL": f"{http.url}/ok/T000/B000/secret-token"})
        broken = Sink(
            SinkSpec(name="chat2", kind="slack", url_env="SLACK_URL"),
            env={"SLACK_URL": f"{http.url}/fail/T000/B000/secret-token"},
        )
        unset = Sink(SinkSpec(name="chat3", kind="slack", url_env="SLACK_URL"), env={})
        dispatcher = Dispatcher(
            [ok, broken, unset],
            DeliverySpec(retries=0),
            on_result=lambda d, s: results.append(d),
        )
        dispatcher.submit(_note())
        assert dispatcher.drain(30)
        dispatcher.close()
        assert len(http.bodies("/ok/T000/B000/secret-token")) == 1
    errors = {d.sink: d.error or "" for d in results}
    assert errors["chat"] == ""
    assert "answered 500" in errors["chat2"] and "secret-token" not in errors["chat2"]
    assert "SLACK_URL is not set" in errors["chat3"]
