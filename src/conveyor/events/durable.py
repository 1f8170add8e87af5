"""A durable reader of the NATS event log: a JetStream pull consumer with explicit acks.

``follow`` and the page reads use ephemeral consumers: they forget where they were when
the process goes. A process that must see every event exactly once *in effect* (the
sink that copies the log into PostgreSQL and Parquet: :mod:`conveyor.monitoring.sink`)
needs the server to remember instead::

    with EventLog.from_url("nats://127.0.0.1:4222/CONVEYOR_EVENTS") as log:
        reader = log.durable("conveyor-sink", ack_wait=60)
        for d in reader.fetch(1000, wait=0.5):
            store(d.row)                 # idempotent: an event may come again
        reader.ack(deliveries)           # only once stored

The consumer (file storage, so it survives a server restart) hands out each message
and waits ``ack_wait`` seconds for its ack; a message not acked by then (the reader was
killed, or its ack was lost) is delivered again, to this reader or to the next one that
opens the same name. So delivery is at least once and the reader's writes must be
idempotent (the event id is unique everywhere the log is copied). Acks are sent one per
message (never "ack all": a message the server delivered while the connection was down
would be acked unseen), then flushed.

Messages that are not events (a publisher other than Conveyor on the subjects) come
back as :class:`Delivery` with ``row`` None and ``error`` saying why; the reader keeps
them its own way and acks them like the rest (the stream keeps every message anyway:
its retention is by limits, an ack deletes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import orjson
from nats.js import api

from conveyor.backends import BackendURL
from conveyor.errors import InvalidInputError
from conveyor.events.jetstream import Gone, Link, errors, position
from conveyor.events.log import row_of
from conveyor.events.streams import decode_event
from conveyor.events.writer import Row

__all__ = ["Delivery", "DurableReader", "consumer_name"]

#: How long closing waits for an open pull request to bring what it asked for.
_RELEASE_WAIT_S = 1.0

log = logging.getLogger("conveyor.events")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message of the stream: its sequence, the event as a writer row (payload as JSON
    text), or None and why not, how many times it was delivered, and its ack subject."""

    seq: int
    row: Row | None
    error: str | None
    delivered: int
    reply: str
    size: int


def consumer_name(name: str) -> str:
    """``name`` if JetStream takes it as a durable consumer's name, else InvalidInputError."""
    if not name or len(name) > 128 or not set(name) <= _NAME_CHARS:
        raise InvalidInputError(
            f"a durable consumer's name is 1 to 128 letters, digits, '_' and '-'; got {name!r}",
            field="durable",
        )
    return name


def decode(msg: Any) -> Delivery:
    """A pulled message as a :class:`Delivery`: the event checked as ``emit`` checks it."""
    tokens = msg.reply.split(".")
    seq, _ = position(msg.reply)
    delivered = int(tokens[4 if len(tokens) == 9 else 6])
    try:
        row: Row | None = row_of(decode_event(msg.data))
        error = None
    except Exception as exc:  # not an event: kept by the reader with the reason
        row, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return Delivery(seq, row, error, delivered, msg.reply, len(msg.data))


class DurableReader:
    """A durable pull consumer on the log's stream (see the module). Made by
    :meth:`conveyor.events.nats.NatsEventLog.durable`; the log's connection carries it."""

    def __init__(
        self,
        link: Link,
        url: BackendURL,
        stream: str,
        subject: str,
        name: str,
        *,
        ack_wait: float,
        max_ack_pending: int,
        timeout: float,
    ) -> None:
        if not ack_wait > 0:
            raise InvalidInputError(f"ack_wait must be > 0 s, got {ack_wait!r}", field="ack_wait")
        if not isinstance(max_ack_pending, int) or max_ack_pending < 1:
            raise InvalidInputError(
                f"max_ack_pending must be a positive integer, got {max_ack_pending!r}",
                field="max_ack_pending",
            )
        self.url = url
        self.stream = stream
        self.subject = subject
        self.name = consumer_name(name)
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self._link = link
        self._timeout = timeout
        self._pull: _Pulls | None = None

    def _config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.name,
            filter_subject=self.subject,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            max_deliver=-1,  # never given up on: a message is stored or kept as rejected
        )

    def ensure(self) -> None:
        """Create the consumer if it is missing (the first run starts at the stream's start)."""
        with errors(self.url):
            self._link.run(self._ensure)

    async def _ensure(self, nc: Any) -> None:
        js = nc.jetstream(timeout=self._timeout)
        try:
            info = await js.consumer_info(self.stream, self.name)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(self.stream, self._config())
            return
        if info.config.filter_subject != self.subject:
            raise InvalidInputError(
                f"{self.url}: the consumer {self.name} reads {info.config.filter_subject}, "
                f"not {self.subject}; delete it or choose another name",
                field="durable",
            )
        if info.config.ack_wait != self.ack_wait or (
            info.config.max_ack_pending != self.max_ack_pending
        ):
            try:
                await js.add_consumer(self.stream, self._config())  # an update of the two
            except nats.js.errors.APIError as exc:
                log.warning(
                    "the consumer %s keeps ack_wait %s s and max_ack_pending %s (%s)",
                    self.name,
                    info.config.ack_wait,
                    info.config.max_ack_pending,
                    exc,
                )

    def fetch(self, batch: int, wait: float, *, prefetch: int = 0) -> list[Delivery]:
        """Up to ``batch`` messages: those waiting, or the first to come within ``wait`` s
        (an empty list when none came). A message may come again (see the module).

        ``prefetch``: then ask for that many more without waiting, so they arrive (and are
        parsed on the connection's thread) while the caller stores these; the next fetch
        takes them. Each counts against ``max_ack_pending`` from its delivery."""
        with errors(self.url):
            for _ in range(2):
                if self._pull is None:
                    self._link.run(self._ensure)
                    self._pull = self._link.run(self._open)
                try:
                    msgs = self._link.run(
                        self._pull.fetch,
                        batch,
                        wait,
                        self._timeout,
                        prefetch,
                        timeout=wait + self._timeout,
                    )
                except Gone:
                    self._pull = None  # deleted meanwhile, or a new connection: again
                    continue
                return [decode(m) for m in msgs]
        return []

    async def _open(self, nc: Any) -> _Pulls:
        pulls = _Pulls(nc, self.stream, self.name)
        await pulls.start()
        return pulls

    def ack(self, deliveries: list[Delivery]) -> None:
        """Ack each of ``deliveries`` and flush: call it only once they are stored. An ack
        lost on the way costs a redelivery, never an event."""
        if not deliveries:
            return
        replies = [d.reply for d in deliveries]
        with errors(self.url):
            self._link.run(_ack, replies, self._timeout, timeout=self._timeout * 2)

    def info(self) -> dict[str, Any]:
        """The consumer's position: ``acked_seq`` (every message at or below it is acked),
        ``delivered_seq``, ``deliveries`` (every delivery so far, a redelivery included),
        ``ack_pending`` (delivered, not yet acked), ``pending`` (not yet delivered),
        ``redelivered`` (of those pending); ``stream_last_seq``; and ``lag`` (messages
        still to ack)."""

        async def both(nc: Any) -> tuple[Any, Any]:
            js = nc.jetstream(timeout=self._timeout)
            return await js.consumer_info(self.stream, self.name), await js.stream_info(self.stream)

        with errors(self.url):
            try:
                consumer, stream = self._link.run(both)
            except nats.js.errors.NotFoundError:
                stream = self._link.run(_stream_info, self.stream, self._timeout)
                last = int(stream.state.last_seq)
                return {
                    "consumer": self.name,
                    "exists": False,
                    "acked_seq": 0,
                    "delivered_seq": 0,
                    "deliveries": 0,
                    "ack_pending": 0,
                    "pending": int(stream.state.messages),
                    "redelivered": 0,
                    "stream_last_seq": last,
                    "lag": int(stream.state.messages),
                }
        acked = int(consumer.ack_floor.stream_seq) if consumer.ack_floor else 0
        pending = int(consumer.num_pending or 0)
        ack_pending = int(consumer.num_ack_pending or 0)
        return {
            "consumer": self.name,
            "exists": True,
            "acked_seq": acked,
            "delivered_seq": int(consumer.delivered.stream_seq) if consumer.delivered else 0,
            "deliveries": int(consumer.delivered.consumer_seq) if consumer.delivered else 0,
            "ack_pending": ack_pending,
            "pending": pending,
            "redelivered": int(consumer.num_redelivered or 0),
            "stream_last_seq": int(stream.state.last_seq),
            "lag": pending + ack_pending,
        }

    def delete(self) -> None:
        """Remove the consumer from the server (the next :meth:`fetch` starts over)."""

        async def drop(nc: Any) -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream(timeout=self._timeout).delete_consumer(self.stream, self.name)

        self.close()
        with errors(self.url):
            self._link.run(drop)

    def close(self) -> None:
        """Stop pulling: what was fetched ahead is handed back (the consumer stays on the
        server, with what was not acked)."""
        pull, self._pull = self._pull, None
        if pull is not None:
            try:
                self._link.run(_release, pull)
            except Exception as exc:  # gone with the connection: it comes after ack_wait
                log.debug("handing back prefetched messages: %s", exc)


class _Pulls:
    """Pull requests on one consumer and the messages they bring, on one wildcard inbox.

    Each request has a reply subject of its own (``<inbox>.<n>``), so the status that
    ends a request (408 expired, 404 nothing left) is told apart from a late one of an
    earlier request; messages are collected by the subscription's callback (no wait
    and timer per message), and any that come after their request was given up are
    kept for the next fetch rather than left to be redelivered.
    """

    def __init__(self, nc: Any, stream: str, name: str) -> None:
        self.nc = nc
        self._stream = stream
        self._name = name
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
        self._prefix = nc.new_inbox()
        self._sub: Any = None
        self._buffer: list[Any] = []
        self._request = 0
        self._want = 0
        self._done: asyncio.Future[None] | None = None
        self._gone = False

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)

    async def _on_msg(self, msg: Any) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            if len(self._buffer) >= self._want:
                self._finish()
            return
        if status == "100":
            return  # a heartbeat
        if status == "503" or (
            status == "409" and "deleted" in str(msg.headers.get("Description", "")).lower()
        ):
            self._gone = True
            self._finish()
        elif msg.subject == f"{self._prefix}.{self._request}":
            self._finish()  # 404 nothing left, 408 expired, 409 too many waiting: it is over

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _pending(self) -> bool:
        return self._done is not None and not self._done.done()

    async def _ask(self, nc: Any, count: int, wait: float) -> None:
        self._request += 1
        self._want = len(self._buffer) + count
        self._done = asyncio.get_running_loop().create_future()
        request = {"batch": count, "expires": int(wait * 1e9)}
        await nc.publish(self._next, orjson.dumps(request), reply=f"{self._prefix}.{self._request}")

    async def fetch(
        self, nc: Any, batch: int, wait: float, timeout: float, prefetch: int = 0
    ) -> list[Any]:
        if nc is not self.nc or self._gone:
            raise Gone  # a renewed connection: the inbox went with the old one
        if len(self._buffer) < batch:
            if not self._pending():
                await self._ask(nc, batch - len(self._buffer), wait)
            assert self._done is not None
            try:
                await asyncio.wait_for(asyncio.shield(self._done), wait + timeout)
            except TimeoutError:
                # No answer at all: the server restarted (it forgot the request), or the
                # consumer is gone. Ask, and go on with what came.
                self._done.cancel()
                try:
                    await nc.jetstream(timeout=timeout).consumer_info(self._stream, self._name)
                except nats.js.errors.NotFoundError:
                    raise Gone from None
            if self._gone:
                raise Gone
        taken, self._buffer = self._buffer[:batch], self._buffer[batch:]
        if prefetch > len(self._buffer) and not self._pending():
            await self._ask(nc, prefetch - len(self._buffer), wait)
        return taken

    async def release(self, nc: Any) -> None:
        """Hand back what was fetched ahead and not taken (NAK: delivered again at once),
        and stop receiving. A request still open gets a moment to bring what it asked for
        (those would otherwise wait ``ack_wait`` to come again)."""
        if self._pending():
            assert self._done is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done), _RELEASE_WAIT_S)
        if self._sub is not None:
            await self._sub.unsubscribe()
        left, self._buffer = self._buffer, []
        for msg in left:
            await nc.publish(msg.reply, b"-NAK")
        if left:
            await nc.flush()


async def _ack(nc: Any, replies: list[str], timeout: float) -> None:
    for reply in replies:
        await nc.publish(reply, b"+ACK")
    await nc.flush(timeout)


async def _stream_info(nc: Any, stream: str, timeout: float) -> Any:
    return await nc.jetstream(timeout=timeout).stream_info(stream)


async def _release(nc: Any, pull: _Pulls) -> None:
    await pull.release(nc)
