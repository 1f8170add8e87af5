"""The contract every stream source passes, run on the real NATS JetStream (127.0.0.1:4222)
and the real Redis (6379): scores to a target once per message, poison to the dead-letter
target with its reason, retries with backoff, routes (canary, shadow), two consumers
sharing a group, and bad input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stream_support import FEATURES, make_project, predict, rows

from conveyor.errors import BackendUnavailableError, NotFoundError
from conveyor.project import Project
from conveyor.scoring.stream import StreamScorer, score_stream
from conveyor.scoring.stream.sinks import StreamSink

Streams = Any  # stream_support.Streams or RedisStreams: the same interface


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path / "proj", versions=2) as opened:
        yield opened


def _run(project: Project, streams: Streams, n: int, **options: Any) -> Any:
    options.setdefault("output", streams.target("scores"))
    options.setdefault("dead_letter", streams.target("dlq"))
    return score_stream(
        project,
        options.pop("model", "lr@1"),
        source=options.pop("source", streams.url(ack_wait=2)),
        max_messages=n,
        idle_timeout=options.pop("idle_timeout", 5),
        **options,
    )


def test_messages_are_scored_to_the_output_subject_each_once(
    project: Project, streams: Streams
) -> None:
    batch = rows(300)
    streams.publish(batch)
    result = _run(project, streams, 300, batch=64)
    assert (result.stats.messages, result.stats.scored, result.stats.dead_lettered) == (300, 300, 0)
    scores = streams.read("scores")
    assert len(scores) == 300
    assert [s["id"] for s in scores] == streams.ids
    assert [s["prediction"] for s in scores] == predict(project, batch)
    assert {s["version"] for s in scores} == {1} and {s["arm"] for s in scores} == {"pinned"}
    assert streams.settled() == (0, 0)  # every message taken and acked
    kinds = [e.kind for e in project.events.query(subject="model:lr")]
    assert "scoring.stream_started" in kinds and "scoring.stream_stopped" in kinds


def test_poison_messages_go_to_the_dead_letter_subject_with_their_reason_and_are_acked(
    project: Project, streams: Streams
) -> None:
    good = rows(3)
    poison = [
        b"{not json",
        [1, 2, 3],
        {**good[0], "f1": "abc"},
        {"f0": 1.0, "f1": 2.0},
        {**good[0], "f2": None},
    ]
    streams.publish([good[0], *poison, good[1], good[2]])
    result = _run(project, streams, 8)
    assert (result.stats.scored, result.stats.dead_lettered) == (3, 5)
    dead = {d["body"][:12]: d for d in streams.read("dlq")}
    reasons = [d["reason"] for d in streams.read("dlq")]
    assert len(reasons) == 5
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "a message is a JSON object of the model's inputs, got an array"
    assert "input column 'f1': not a number" in reasons[2]
    assert "input column 'f2' is missing" in reasons[3]
    assert "input column 'f2' is null" in reasons[4]
    assert dead["{not json"]["id"] == streams.ids[1]
    ids = streams.ids
    assert [s["id"] for s in streams.read("scores")] == [ids[0], ids[6], ids[7]]
    assert streams.settled() == (0, 0)


class _Flaky(StreamSink):
    """Fails its first ``failures`` writes, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.refused = 0  # records in the writes that failed
        self.kept: dict[str, Any] = {}

    def write(self, records: Any) -> None:
        records = list(records)
        self.calls += 1
        if self.calls <= self.failures:
            self.refused += len(records)
            raise BackendUnavailableError("the sink is down", url="test://sink")
        for r in records:
            self.kept[r["id"]] = r


def test_a_failing_sink_gets_the_batch_again_after_a_backoff_and_nothing_is_lost(
    project: Project, streams: Streams
) -> None:
    streams.publish(rows(40))
    sink = _Flaky(failures=2)
    scorer = StreamScorer(
        project,
        "lr@1",
        streams.url(ack_wait=10),
        sinks=[sink],
        dead_letter=streams.target("dlq"),
        batch=40,
        backoff=0.3,
    )
    result = scorer.run(idle_timeout=4)
    assert len(sink.kept) == 40 and sink.calls >= 3
    # Each failed write's messages came again: as one batch of 40 each time, or split
    # across fetches when JetStream redelivers them in parts (seen once in a full run:
    # four writes), so counted, not assumed.
    assert sink.refused >= 2 and result.stats.scored == 40
    assert result.stats.retried == sink.refused
    assert result.stats.messages == 40 + sink.refused  # every delivery, failed ones included
    assert streams.read("dlq") == []


def test_a_message_a_sink_keeps_refusing_is_dead_lettered_after_max_deliver(
    project: Project, streams: Streams
) -> None:
    streams.publish(rows(5))
    result = score_stream(
        project,
        "lr@1",
        source=streams.url(ack_wait=10),
        sinks=[_Flaky(failures=100)],
        dead_letter=streams.target("dlq"),
        max_deliver=2,
        backoff=0.2,
        idle_timeout=3,
    )
    dead = streams.read("dlq")
    assert len(dead) == 5 and result.stats.dead_lettered == 5
    assert dead[0]["reason"].startswith("failed 2 deliveries; last error: the sink is down")
    assert dead[0]["deliveries"] == 2
    assert streams.settled() == (0, 0)


def test_the_route_picks_each_messages_version_sticky_by_entity_and_shadows_score_too(
    project: Project, streams: Streams
) -> None:
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    routes = RouteStore(project.store, project.events, project.registry)
    routes.set("lr", RoutePolicy.canary(1, 2, 50), actor="test")
    batch = rows(200, users=40)
    streams.publish(batch)
    result = _run(project, streams, 200, model="lr", key_field="user")
    scores = streams.read("scores")
    assert {s["arm"] for s in scores} == {"stable", "canary"}
    by_user: dict[str, set[int]] = {}
    for s in scores:
        by_user.setdefault(s["key"], set()).add(s["version"])
    assert all(len(v) == 1 for v in by_user.values())  # sticky: one version per user
    expected = {1: predict(project, batch, 1), 2: predict(project, batch, 2)}
    for i, s in enumerate(scores):
        assert s["prediction"] == expected[s["version"]][i]
    assert sum(result.stats.by_version.values()) == 200 and len(result.stats.by_version) == 2

    routes.set("lr", RoutePolicy.fixed(1, shadow=[2]), actor="test")
    streams.publish(rows(50, start=200))
    shadowed = _run(project, streams, 50, model="lr", key_field="user")
    assert shadowed.stats.by_version == {"lr@1": 50}
    assert shadowed.stats.shadow_compared == 50
    assert shadowed.stats.shadow_disagreed == 50  # v2 answers the flipped label


def test_two_consumers_of_one_durable_share_the_work(project: Project, streams: Streams) -> None:
    streams.publish(rows(2000))
    stop = threading.Event()
    results: list[Any] = []

    def consume() -> None:
        results.append(
            score_stream(
                project,
                "lr@1",
                source=streams.url(ack_wait=5),
                output=streams.target("scores"),
                dead_letter=streams.target("dlq"),
                batch=20,
                idle_timeout=3,
                stop=stop,
            )
        )

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert all(r.stats.scored > 100 for r in results), [r.stats.scored for r in results]
    assert sum(r.stats.scored for r in results) == 2000
    ids = [s["id"] for s in streams.read("scores")]
    assert len(ids) == len(set(ids)) == 2000


@pytest.mark.parametrize(
    "url", ["nats://127.0.0.1:1/orders?subject=orders.>", "redis://127.0.0.1:1/0?stream=orders"]
)
def test_an_unreachable_broker_is_backend_unavailable_naming_the_url(
    project: Project, url: str
) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        score_stream(project, "lr@1", source=url)
    assert "127.0.0.1:1" in caught.value.message
    assert caught.value.context["url"].startswith(url.split("?")[0])


def test_a_target_the_source_consumes_is_refused(project: Project, streams: Streams) -> None:
    from conveyor.errors import InvalidInputError

    streams.publish(rows(1))
    with pytest.raises(InvalidInputError, match="scored again"):
        _run(project, streams, 1, output=streams.captured_target())


@pytest.mark.nats
def test_a_missing_jetstream_stream_is_not_found(project: Project) -> None:
    with pytest.raises(NotFoundError, match="no JetStream stream 'nope'"):
        score_stream(project, "lr@1", source="nats://127.0.0.1:4222/nope")


def test_feature_names_come_from_the_signature() -> None:
    assert FEATURES == ["f0", "f1", "f2", "f3"]
