"""The alert engine on its own: states, flaps, cooldown, repeats, silences, inhibition,
grouping; and the alert-noise judgment over a seeded day of traffic, delivered to real
local receivers (HTTP for the webhook, Slack and PagerDuty sinks; SMTP for email)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from alerts_support import http_receiver, smtp_receiver

from conveyor.monitoring.alerts.delivery import Dispatcher
from conveyor.monitoring.alerts.engine import Engine, MemoryStore, Notification, Silence
from conveyor.monitoring.alerts.rules import AlertRule
from conveyor.monitoring.alerts.settings import AlertsSpec, SinkSpec
from conveyor.monitoring.alerts.simulate import START, latency_stream, replay
from conveyor.monitoring.alerts.sinks import Sink

LATENCY = AlertRule(
    "slo_latency_p95_ms:fraud", "latency_p95_ms", "fraud", 300, ">", 50.0, 300, "page"
)
MIN = timedelta(minutes=1)


def _engine(*rules: AlertRule, **settings: Any) -> Engine:
    return Engine(list(rules) or [LATENCY], AlertsSpec(**settings), MemoryStore(), project="p")


def _run(
    engine: Engine, values: Sequence[float | None], rule: str = LATENCY.name
) -> list[Notification]:
    sent: list[Notification] = []
    for n, value in enumerate(values):
        sent += engine.evaluate(START + n * MIN, {rule: value}).notifications
    return sent


def test_a_breach_shorter_than_for_stays_pending_and_never_notifies() -> None:
    engine = _engine()
    # 5 breached minutes: pending from the first, 4 minutes < for 5m
    assert _run(engine, [10, 60, 70, 80, 90, 60, 10, 10]) == []
    store = engine.store
    assert (
        isinstance(store, MemoryStore) and store.incidents == {}
    )  # a pending that clears leaves nothing


def test_one_incident_fires_once_folds_its_flaps_and_resolves_once() -> None:
    engine = _engine(resolve_after="5m")
    values: list[float] = [10.0] + [80.0] * 10 + [10.0] * 2 + [80.0] * 5 + [10.0] * 10
    sent = _run(engine, values)
    assert [n.kind for n in sent] == ["firing", "resolved"]
    firing, resolved = sent
    assert firing.alerts[0].count == 6  # breached minutes 1..6: pending for 5m, then firing
    assert resolved.alerts[0].flaps == 1  # the 2-minute lull did not resolve it
    assert resolved.alerts[0].count == 15
    assert firing.alerts[0].id == resolved.alerts[0].id


def test_no_data_drops_a_pending_alert_but_keeps_a_firing_one() -> None:
    engine = _engine(resolve_after="0s")
    assert _run(engine, [80, 80, None, 80]) == []
    # the None dropped the pending alert: the last breach is a new one
    assert engine.store.open_incidents()["slo_latency_p95_ms:fraud|fraud"].count == 1
    engine = _engine(resolve_after="0s")
    sent = _run(engine, [80] * 6 + [None] * 3)
    assert [n.kind for n in sent] == ["firing"]
    assert engine.store.open_incidents()["slo_latency_p95_ms:fraud|fraud"].state == "firing"


def test_repeat_interval_renotifies_until_acknowledged() -> None:
    engine = _engine(repeat_interval="30m")
    sent = _run(engine, [80.0] * 70)
    assert [n.kind for n in sent] == ["firing", "repeat", "repeat"]  # minutes 5, 35, 65
    engine = _engine(repeat_interval="30m")
    sent = _run(engine, [80.0] * 10)
    incident = next(iter(engine.store.open_incidents().values()))
    store = engine.store
    assert isinstance(store, MemoryStore)
    store.incidents[incident.id].acked_at = START
    for n in range(10, 70):
        sent += engine.evaluate(START + n * MIN, {LATENCY.name: 80.0}).notifications
    assert [n.kind for n in sent] == ["firing"]


def test_a_new_incident_within_the_cooldown_is_recorded_not_notified() -> None:
    engine = _engine(resolve_after="0s", cooldown="30m")
    first = [80.0] * 6 + [10.0]  # fires at minute 5, resolves at 6
    again = [80.0] * 6 + [10.0]  # fires again 7 minutes later: within 30m
    sent = _run(engine, first + [10.0] * 2 + again)
    assert [n.kind for n in sent] == ["firing", "resolved"]
    store = engine.store
    assert isinstance(store, MemoryStore)
    held = [i for i in store.incidents.values() if i.suppressed == "cooldown"]
    assert len(held) == 1 and held[0].state == "resolved"
    # after the cooldown, a new incident is notified again
    engine = _engine(resolve_after="0s", cooldown="5m")
    sent = _run(engine, first + [10.0] * 10 + again)
    assert [n.kind for n in sent] == ["firing", "resolved", "firing", "resolved"]


def test_a_silence_holds_the_notification_until_it_expires() -> None:
    engine = _engine()
    store = engine.store
    assert isinstance(store, MemoryStore)
    store.silence_list.append(
        Silence("s1", {"model": "fraud", "severity": "page"}, START + 20 * MIN, START)
    )
    sent = _run(engine, [80.0] * 30)
    assert [n.kind for n in sent] == ["firing"]
    assert sent[0].at == START + 20 * MIN  # the first evaluation after the silence ended
    # a silence on another model changes nothing
    engine = _engine()
    store = engine.store
    assert isinstance(store, MemoryStore)
    store.silence_list.append(Silence("s2", {"model": "other"}, START + 20 * MIN, START))
    assert _run(engine, [80.0] * 10)[0].at == START + 5 * MIN


def test_a_firing_availability_alert_inhibits_the_latency_alert_of_its_model() -> None:
    down = AlertRule(
        "slo_availability:fraud", "availability", "fraud", 300, "<", 0.999, 300, "page"
    )
    other = AlertRule(
        "slo_latency_p95_ms:churn", "latency_p95_ms", "churn", 300, ">", 50, 300, "page"
    )
    engine = _engine(LATENCY, down, other)
    sent: list[Notification] = []
    for n in range(12):
        values = {LATENCY.name: 500.0, down.name: 0.2, other.name: 90.0}
        sent += engine.evaluate(START + n * MIN, values).notifications
    alerts = [(n.group, a.rule) for n in sent for a in n.alerts]
    assert ("slo_availability", "slo_availability:fraud") in alerts
    assert ("slo_latency_p95_ms", "slo_latency_p95_ms:churn") in alerts  # another model
    assert all(rule != LATENCY.name for _, rule in alerts)
    held = engine.store.open_incidents()[f"{LATENCY.name}|fraud"]
    assert held.suppressed == "inhibited:slo_availability:fraud|fraud"


def test_alerts_of_one_rule_firing_together_are_one_notification_with_a_count() -> None:
    rules = [
        AlertRule(f"slo_latency_p95_ms:{m}", "latency_p95_ms", m, 300, ">", 50, 0, "page")
        for m in ("a", "b", "c")
    ]
    engine = _engine(*rules)
    sent = engine.evaluate(START, {r.name: 99.0 for r in rules}).notifications
    assert len(sent) == 1 and sent[0].group == "slo_latency_p95_ms"
    assert sorted(a.model or "" for a in sent[0].alerts) == ["a", "b", "c"]
    assert sent[0].count == 3


# -- the judgment: a day of traffic, one 20-minute incident, 20 seeds -------------------

SEEDS = range(20)


def test_the_noise_is_real_a_naive_rule_pages_on_quiet_days() -> None:
    """The same streams with a 1-minute window, no for and no resolve delay: the noise the
    judgment test survives would page (so that test is not passing for lack of noise)."""
    naive = AlertRule("naive", "latency_p95_ms", "fraud", 60, ">", 50.0, 0, "page")
    paged = 0
    for seed in range(5):
        engine = _engine(naive, resolve_after="0s", cooldown="0s")
        paged += len(replay(engine, latency_stream(seed, window_minutes=1), rule="naive"))
    assert paged >= 5


def _sinks(http: str, smtp_port: int) -> list[Sink]:
    env = {"PD_KEY": "routing-key-1"}
    specs = [
        SinkSpec(name="hook", kind="webhook", url=f"{http}/ok/hook"),
        SinkSpec(name="chat", kind="slack", url=f"{http}/ok/slack"),
        SinkSpec(name="pager", kind="pagerduty", url=f"{http}/ok/pd", routing_key_env="PD_KEY"),
        SinkSpec(
            name="mail",
            kind="email",
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            sender="conveyor@example.com",
            to=["oncall@example.com"],
        ),
    ]
    return [Sink(s, env) for s in specs]


def test_a_day_with_one_incident_notifies_each_sink_once_and_resolves_once() -> None:
    """Across 20 seeds: a quiet day notifies nothing; a day with one 20-minute incident
    (which flaps once) sends each sink exactly one notification and one resolve."""
    with http_receiver() as http, smtp_receiver() as mail:
        dispatcher = Dispatcher(
            _sinks(http.url, mail.port), AlertsSpec().delivery, sleep=lambda s: None
        ).start()
        try:
            for seed in SEEDS:
                quiet = replay(_engine(), latency_stream(seed), rule=LATENCY.name)
                assert quiet == [], (seed, [n.title() for n in quiet])
                stream = latency_stream(seed, incident_at=600)
                stormy = replay(_engine(), stream, rule=LATENCY.name)
                assert [n.kind for n in stormy] == ["firing", "resolved"], seed
                firing, resolved = stormy
                assert START + 600 * MIN < firing.at < START + 620 * MIN
                assert resolved.alerts[0].flaps == 1  # the incident's lull folded into it
                for note in stormy:
                    dispatcher.submit(note)
            assert dispatcher.drain(60)
        finally:
            dispatcher.close()
        days = len(SEEDS)
        hooks, chats, pages = (http.bodies(p) for p in ("/ok/hook", "/ok/slack", "/ok/pd"))
        assert len(hooks) == len(chats) == len(pages) == len(mail.messages) == 2 * days
        assert all(s.state == "ok" and s.delivered == 2 * days for s in dispatcher.statuses())
    assert [h["status"] for h in hooks].count("resolved") == days
    assert all(h["group"] == "slo_latency_p95_ms" and h["project"] == "p" for h in hooks)
    assert all(h["count"] >= 6 and len(h["alerts"]) == 1 for h in hooks)
    assert all("text" in c and c["blocks"][0]["type"] == "header" for c in chats)
    # PagerDuty: a trigger and a resolve per incident, paired by their dedup key
    triggers = {p["dedup_key"] for p in pages if p["event_action"] == "trigger"}
    resolves = {p["dedup_key"] for p in pages if p["event_action"] == "resolve"}
    assert len(triggers) == days and triggers == resolves
    assert all(p["routing_key"] == "routing-key-1" for p in pages)
    assert {p["payload"]["severity"] for p in pages if "payload" in p} == {"critical"}
    subjects = [m["Subject"] for _, m in mail.messages]
    assert sum(s.startswith("[FIRING]") for s in subjects) == days
    assert sum(s.startswith("[RESOLVED]") for s in subjects) == days
    assert all(rcpt == ["oncall@example.com"] for rcpt, _ in mail.messages)


def test_an_incident_whose_rule_left_the_spec_resolves() -> None:
    store = MemoryStore()
    first = Engine([LATENCY], AlertsSpec(), store, project="p")
    assert [n.kind for n in _run(first, [80.0] * 6)] == ["firing"]
    renamed = AlertRule("p95", "latency_p95_ms", "fraud", 300, ">", 50.0, 300, "page")
    second = Engine([renamed], AlertsSpec(), store, project="p")
    result = second.evaluate(START + 10 * MIN, {"p95": 10.0})
    assert [n.kind for n in result.notifications] == ["resolved"]
    assert result.resolved[0].rule == LATENCY.name
    assert result.resolved[0].suppressed == "rule removed"
    assert store.open_incidents() == {}
