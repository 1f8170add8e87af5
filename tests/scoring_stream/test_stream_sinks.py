"""The stream sinks beyond a subject: online features (the feature store's push) and a
webhook (retries with backoff, a circuit breaker), against the real NATS and a real HTTP
server in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from stream_support import broker, make_project, predict, rows

from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.project import Project
from conveyor.scoring.stream import FeatureSink, WebhookSink, score_stream

_FEATURES = """
features:
  entities:
    user: {join_keys: [user]}
  views:
    risk:
      entities: [user]
      source: {dataset: events}
      event_time: ts
      features:
        - {name: score, type: int64}
"""


class _Receiver:
    """An HTTP server that answers ``statuses`` in turn (then 200) and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(orjson.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[_Receiver]:
    made = _Receiver(getattr(request, "param", []))
    try:
        yield made
    finally:
        made.close()


@pytest.mark.nats
def test_scores_become_fresh_online_features_of_their_entity(tmp_path: Path) -> None:
    from conveyor.features.materialize import online_features

    root = tmp_path / "proj"
    make_project(root).close()
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(_FEATURES)
    events = [{**r, "ts": 1_800_000_000 + r["n"]} for r in rows(30, users=3)]
    with broker("nats") as streams, Project.open(root) as project:
        streams.publish(events)
        result = score_stream(
            project,
            "lr@1",
            source=streams.url(),
            sinks=[FeatureSink("risk", {"score": "prediction"})],
            dead_letter=streams.target("dlq"),
            key_field="user",
            time_field="ts",
            max_messages=30,
            idle_timeout=3,
        )
        assert result.stats.scored == 30
        expected = predict(project, events)
        for user in ("u0", "u1", "u2"):
            last = max(i for i, e in enumerate(events) if e["user"] == user)
            (row,) = online_features(project, [{"user": user}], ["risk:score"])
            assert row["features"]["score"] == expected[last]  # the latest event wins


@pytest.mark.nats
@pytest.mark.parametrize("receiver", [[503, 503]], indirect=True)
def test_a_webhook_gets_every_score_once_its_failures_retried_with_backoff(
    tmp_path: Path, receiver: _Receiver
) -> None:
    with make_project(tmp_path / "proj") as project, broker("nats") as streams:
        streams.publish(rows(50))
        sink = WebhookSink(receiver.url, backoff=0.05, retries=3)
        result = score_stream(
            project,
            "lr@1",
            source=streams.url(),
            sinks=[sink],
            dead_letter=streams.target("dlq"),
            batch=50,
            idle_timeout=2,
        )
    assert result.stats.scored == 50 and result.stats.retried == 0  # retried in the sink
    assert receiver.requests == 3
    ids = [r["id"] for body in receiver.bodies for r in body["records"]]
    assert ids == streams.ids


@pytest.mark.parametrize("receiver", [[503] * 100], indirect=True)
def test_the_circuit_opens_after_repeated_failures_and_then_refuses_at_once(
    receiver: _Receiver,
) -> None:
    waits: list[float] = []
    sink = WebhookSink(
        receiver.url, retries=2, backoff=0.1, failures=3, reset=60, sleep=waits.append
    )
    sink.open(None, None)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailableError, match="answered 503"):
        sink.write([{"id": "a", "prediction": 1}])
    assert receiver.requests == 3 and waits == [0.1, 0.2]  # exponential backoff
    with pytest.raises(BackendUnavailableError, match="circuit open"):
        sink.write([{"id": "b", "prediction": 1}])
    assert receiver.requests == 3  # not called
    sink.close()


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
def test_a_receiver_refusing_the_records_is_not_retried_by_the_sink(receiver: _Receiver) -> None:
    sink = WebhookSink(receiver.url, sleep=lambda _: None)
    sink.open(None, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="refused the records: 400"):
        sink.write([{"id": "a", "prediction": 1}])
    assert receiver.requests == 1
    sink.close()


def test_a_webhook_is_an_http_url() -> None:
    with pytest.raises(InvalidInputError):
        WebhookSink("ftp://example.com/hook")
