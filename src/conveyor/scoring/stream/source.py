"""The seam every stream source plugs into: a broker's group consumer behind five calls.

A :class:`StreamSource` hands out batches of :class:`Message` (``fetch``), takes them
back as done (``ack``) or to be delivered again after a delay (``retry``), publishes
records durably and once per id to a target of the same broker (``publish``: the
output, the dead-letter and the late-events targets), and keeps a small named state
(``load_state`` / ``save_state``: window checkpoints). The scorer
(:mod:`conveyor.scoring.stream.scorer`) sees nothing else, so a backend is one class:

- ``nats://host:4222/STREAM?subject=...&durable=...``: a JetStream durable pull
  consumer (:mod:`conveyor.scoring.stream.nats`);
- ``redis://host:6379/0?stream=KEY&group=...``: a Redis Streams consumer group
  (:mod:`conveyor.scoring.stream.redis`);
- a Kafka consumer group would be a third (``kafka://``): the same five calls map onto
  ``poll``, ``commit``, ``seek`` and an idempotent producer.

Backends are found by URL scheme in :data:`SOURCES` (lazy import strings, the extra
that installs the driver), like every other seam.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.backends import BackendSpec, BackendURL, Seam

__all__ = ["SOURCES", "Message", "Outgoing", "StreamSource", "open_source"]


@dataclass(slots=True)
class Message:
    """One message delivered to this consumer.

    ``id`` is the message's identity across redeliveries and consumers (a JetStream
    ``Nats-Msg-Id`` header, else ``STREAM:SEQUENCE``; a Redis entry id): the sinks
    dedupe on it. ``deliveries`` counts this delivery (1 the first time).
    """

    id: str
    body: bytes
    deliveries: int
    subject: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to publish: its body and its id (the broker drops a second one)."""

    body: bytes
    id: str


class StreamSource(ABC):
    """A group consumer of one broker's stream, and publishing to that broker."""

    #: ``nats://127.0.0.1:4222/orders?subject=orders.>`` (no password): for messages.
    description: str = ""
    #: The group (durable consumer, consumer group): consumers sharing it share the work.
    group: str = ""

    @abstractmethod
    def fetch(self, limit: int, wait: float) -> list[Message]:
        """Up to ``limit`` messages, waiting at most ``wait`` seconds for the first."""

    @abstractmethod
    def ack(self, messages: Sequence[Message]) -> None:
        """These are done: never delivered again (to any consumer of the group)."""

    @abstractmethod
    def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Deliver these again, to any consumer of the group, after ``delay`` seconds."""

    @abstractmethod
    def publish(self, target: str, records: Sequence[Outgoing]) -> None:
        """Publish ``records`` to ``target`` (a subject, a stream key) and return once the
        broker has them durably; a record whose id it already has is dropped, not doubled.
        Raises (BackendUnavailableError, BackendError) when any was not taken."""

    @abstractmethod
    def load_state(self, name: str) -> bytes | None:
        """The state saved under ``name`` (None: never saved)."""

    @abstractmethod
    def save_state(self, name: str, data: bytes) -> None:
        """Keep ``data`` under ``name``, durably, before returning."""

    def prepare_target(self, target: str) -> None:  # noqa: B027
        """Check ``target`` can take records (and make what holds them); InvalidInputError
        for a target the source itself consumes (its records would be scored again)."""

    def default_target(self, role: str) -> str:
        """Where ``role`` (``scores``, ``dlq``, ``late``) goes unless told."""
        return f"{self.group}.{role}"

    @abstractmethod
    def close(self) -> None:
        """Let go of the connection (unacked messages are redelivered to the group)."""

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SOURCES = Seam(
    "stream_source",
    "the stream a scorer consumes: a broker's consumer group",
    {
        "nats": BackendSpec("conveyor.scoring.stream.nats:JetStreamSource", "nats", ("nats",)),
        "redis": BackendSpec(
            "conveyor.scoring.stream.redis:RedisStreamSource", "redis", ("redis",)
        ),
    },
)


def open_source(url: str | BackendURL, **options: Any) -> StreamSource:
    """The source for ``url`` (UnknownBackendError, MissingDependencyError,
    BackendUnavailableError naming the URL)."""
    source: StreamSource = SOURCES.open(url, **options)
    return source
