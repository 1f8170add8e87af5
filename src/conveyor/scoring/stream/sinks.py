"""Where stream scores go, each write durable before it returns and idempotent by id.

A message is acked only once every sink has its result, so a consumer killed between
the write and the ack has the message delivered again, and written again: each sink
drops or overwrites that second copy by the message's id.

- :class:`SubjectSink`: published to a subject (a stream key on Redis) of the
  source's broker, the id as ``Nats-Msg-Id``: JetStream drops a copy it saw within its
  duplicate window; returns once the publish acks came back.
- :class:`TableSink`: upserted on the ``id`` column of a database table, in one
  transaction (the batch scorer's table writer, :class:`conveyor.scoring.sinks.TableSink`).
- :class:`FeatureSink`: the scores as fresh online features of their entity
  (:mod:`conveyor.features.online`): a write by key, the same value again the second time.
- :class:`WebhookSink`: POSTed as one JSON batch, with retries, backoff and a circuit
  breaker (:mod:`conveyor.breaker`); the receiver dedupes on each record's ``id``
  (also sent as ``Idempotency-Key`` for a single record).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import BackendUnavailableError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.scoring.stream.source import StreamSource

__all__ = ["FeatureSink", "StreamSink", "SubjectSink", "TableSink", "WebhookSink", "encode"]

Record = Mapping[str, Any]


def encode(record: Record) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


class StreamSink(ABC):
    """Takes scored records; :meth:`write` returns once they are durably there."""

    description = ""

    def open(self, source: StreamSource, project: Project) -> None:  # noqa: B027
        """Called once before the first write, with the consumer's source and project."""

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Write ``records`` (each with an ``id``); a record written before is not doubled."""

    def close(self) -> None:  # noqa: B027
        """Let go of connections."""


class SubjectSink(StreamSink):
    """Published to ``target`` on the source's broker, once per id (see the module)."""

    def __init__(self, target: str | None = None) -> None:
        self.target = target
        self._source: StreamSource | None = None

    def open(self, source: StreamSource, project: Project) -> None:
        self._source = source
        if self.target is None:
            self.target = source.default_target("scores")
        self.description = f"subject:{self.target}"
        source.prepare_target(self.target)

    def write(self, records: Sequence[Record]) -> None:
        from conveyor.scoring.stream.source import Outgoing

        assert self._source is not None and self.target is not None, "open() first"
        self._source.publish(self.target, [Outgoing(encode(r), str(r["id"])) for r in records])


class TableSink(StreamSink):
    """Upserted on ``id`` into ``table`` of the database at ``url`` (a SQLAlchemy URL)."""

    def __init__(self, url: str, table: str) -> None:
        from conveyor.scoring.sinks import TableSink as BatchTable

        self._sink = BatchTable(url.removeprefix("sql:"), table, "id")
        self.description = self._sink.description

    def open(self, source: StreamSource, project: Project) -> None:
        self._sink.prepare()

    def write(self, records: Sequence[Record]) -> None:
        import pyarrow as pa

        if not records:
            return
        rows = [{k: _cell(v) for k, v in r.items()} for r in records]
        writer = self._sink.writer("stream")
        writer.write(pa.Table.from_pylist(rows))
        writer.commit()

    def close(self) -> None:
        self._sink.close()


def _cell(value: Any) -> Any:
    # nested values (several outputs per row, a key's dict) are kept as JSON text
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return value


class FeatureSink(StreamSink):
    """Each record's outputs as online features of its entity (feature view ``view``).

    ``fields`` maps feature names to record fields (default: ``prediction``). Records
    without a key (no ``key_field``) cannot be written and are refused.
    """

    def __init__(self, view: str, fields: Mapping[str, str] | None = None) -> None:
        self.view = view
        self.fields = dict(fields or {"prediction": "prediction"})
        self.description = f"features:{view}"
        self._project: Project | None = None

    def open(self, source: StreamSource, project: Project) -> None:
        self._project = project

    def write(self, records: Sequence[Record]) -> None:
        from conveyor.scoring.stream.features import write_online

        assert self._project is not None, "open() first"
        write_online(self._project, self.view, self.fields, records)


class WebhookSink(StreamSink):
    """Records POSTed as ``{"records": [...]}`` to ``url``; 2xx is written.

    A failure (connection, timeout, 5xx, 429) is retried ``retries`` times with
    exponential backoff from ``backoff`` seconds; then the batch's messages are
    delivered again later by the scorer. A 4xx other than 429 is the receiver refusing
    the records (InvalidInputError, dead-lettered after ``max_deliver``). A circuit
    breaker opens after ``failures`` failed calls in a row and refuses calls at once
    for ``reset`` seconds (BackendUnavailableError), so a down receiver costs no time.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        failures: int = 5,
        reset: float = 10.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        import time

        from conveyor.breaker import CircuitBreaker

        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"a webhook is an http(s) URL, got {url!r}", field="webhook")
        self.url = url
        self.description = f"webhook:{url}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = dict(headers or {})
        self.breaker = CircuitBreaker(f"webhook {url}", failures=failures, reset_s=reset)
        self._sleep = sleep or time.sleep
        self._client: Any = None

    def open(self, source: StreamSource, project: Project) -> None:
        import httpx

        self._client = httpx.Client(timeout=self.timeout)

    def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        body = orjson.dumps({"records": list(records)}, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {"content-type": "application/json", **self.headers}
        if len(records) == 1:
            headers["idempotency-key"] = str(records[0]["id"])
        from conveyor.backends import BackendURL, unavailable

        delay = self.backoff
        for attempt in range(self.retries + 1):
            if not self.breaker.allow():
                raise unavailable(
                    BackendURL.parse(self.url),
                    "webhook",
                    f"circuit open after repeated failures ({self.breaker.last_error})",
                )
            try:
                self._post(body, headers)
            except BackendUnavailableError as exc:
                self.breaker.failure(exc)
                if attempt == self.retries:
                    raise
            else:
                self.breaker.success()  # a 4xx refusal above is not the receiver failing
                return
            self._sleep(delay)
            delay *= 2

    def _post(self, body: bytes, headers: Mapping[str, str]) -> None:
        import httpx

        from conveyor.backends import BackendURL, unavailable

        try:
            answer = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise unavailable(
                BackendURL.parse(self.url), "webhook", str(exc) or type(exc).__name__
            ) from None
        if answer.status_code < 300:
            return
        if answer.status_code == 429 or answer.status_code >= 500:
            raise unavailable(
                BackendURL.parse(self.url), "webhook", f"answered {answer.status_code}"
            )
        raise InvalidInputError(
            f"the webhook {self.url} refused the records: {answer.status_code} {answer.text[:200]}",
            field="webhook",
            status=answer.status_code,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
