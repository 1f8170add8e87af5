"""JetStream plumbing for the NATS event log: the loop thread, pull consumers, publish acks.

nats-py is asyncio only. The log owns one event loop on a daemon thread
(:class:`Link`); every call from the caller's threads, and from the batch
writer's, is a coroutine submitted to it with
:func:`asyncio.run_coroutine_threadsafe`, never a loop per call. The
connection is made lazily on that loop, renewed if nats-py gives up on it, and
made afresh in a forked child (the parent's is left alone: closing it would
write to the parent's socket).

Reads go through :class:`Pull`: an ephemeral pull consumer (memory storage,
no acks, forgotten by the server after a minute without pulls) and an inbox,
pulled with raw ``MSG.NEXT`` requests so that "nothing left" is an immediate
answer rather than a timeout. Writes go through :class:`Acks`: a batch is
published in order on the connection, each message with its own reply subject
on one wildcard inbox, and waited for under one deadline.

Together with ``nats.py`` and ``durable.py`` (a durable consumer, for the sink), the only
modules that import ``nats``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.js import api

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import BackendError, ClosedError, ConveyorError
from conveyor.events.streams import encode_event
from conveyor.events.writer import Row

__all__ = [
    "Acks",
    "Gone",
    "Link",
    "Pull",
    "TooLarge",
    "delete",
    "errors",
    "position",
    "publish",
    "refused",
    "translate",
]

log = logging.getLogger("conveyor.events")

T = TypeVar("T")

_SEAM = "events"
_API = "$JS.API"
#: A reader's consumer the server forgets after this long without a pull (a dropped reader).
_INACTIVE_S = 60.0
#: How long an unanswered pull waits before asking whether its consumer still exists.
_PROBE_S = 0.5
_TOO_LARGE = 10054  # JSStreamMessageExceedsMaximumErr
_NO_MESSAGE = 10057  # JSNoMessageFoundErr
# Parents' loops and connections in a forked child: closing them would write to the
# parent's socket, and dropping them would warn; they are kept, unused.
_INHERITED: list[object] = []


class Link:
    """The log's event loop on a daemon thread, and the NATS connection living on it."""

    def __init__(self, url: BackendURL, connect_timeout: float, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._connect_timeout = connect_timeout
        self._server = url.with_(path="", query={}).render(hide_password=False)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Any = None
        self._acks: Acks | None = None
        self._closed = False

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(client, *args)`` on the loop and return its result (at most ``timeout``)."""
        nc, loop = self._ensure()
        limit = (self.timeout if timeout is None else timeout) + 1.0

        async def call() -> T:
            return await asyncio.wait_for(fn(nc, *args), limit)

        try:
            return asyncio.run_coroutine_threadsafe(call(), loop).result()
        except concurrent.futures.CancelledError:
            raise ClosedError(f"the event log {self.url} was closed during the call") from None
        except RuntimeError:
            if self._closed:  # the loop closed between the check and the call
                raise ClosedError(f"the event log {self.url} is closed") from None
            raise

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(client, *args)`` on the loop without waiting (clean-up); errors are logged."""
        nc, loop = self._nc, self._loop
        if self._closed or nc is None or loop is None or loop.is_closed():
            return

        async def call() -> None:
            try:
                await asyncio.wait_for(fn(nc, *args), self.timeout)
            except Exception as exc:
                log.debug("event log clean-up on %s failed: %s", self.url, exc)

        asyncio.run_coroutine_threadsafe(call(), loop)

    def in_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _ensure(self) -> tuple[Any, asyncio.AbstractEventLoop]:
        nc, loop = self._nc, self._loop
        if nc is not None and loop is not None and not nc.is_closed:
            return nc, loop
        with self._lock:
            if self._closed:
                raise ClosedError(f"the event log {self.url} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="conveyor-events-nats", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            if self._nc is None or self._nc.is_closed:
                future = asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
                self._nc, self._acks = future.result()
            return self._nc, self._loop

    def publish(self, prefix: str, rows: list[Row]) -> None:
        """Publish a batch on ``<prefix>.<kind>`` and wait for every ack (the writer's write)."""
        self._ensure()
        self.run(publish, self._acks, prefix, self.timeout, rows)

    async def _connect(self) -> tuple[Any, Acks]:
        async def warn(exc: Exception) -> None:
            log.warning("NATS at %s: %s", self.url.address, reason(exc))

        async def disconnected() -> None:
            if not self._closed:  # closing disconnects too
                log.warning("NATS at %s: disconnected, reconnecting", self.url.address)

        async def reconnected() -> None:
            log.warning("NATS at %s: reconnected", self.url.address)

        try:
            nc = await nats.connect(
                servers=[self._server],
                name="conveyor-events",
                connect_timeout=self._connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=1,  # fail fast here; see below
                reconnect_time_wait=0.2,
                error_cb=warn,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
            )
        except Exception as exc:
            raise unavailable(self.url, _SEAM, reason(exc)) from exc
        # Once connected, ride out restarts: publishes are buffered meanwhile and the
        # writer's timeouts and retries take over. (Before, an absent server fails fast.)
        nc.options["max_reconnect_attempts"] = -1
        try:
            await nc.jetstream(timeout=self.timeout).account_info()
        except Exception as exc:
            await nc.close()
            if isinstance(
                exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError
            ):
                raise BackendError(
                    f"NATS at {self.url.address} has no JetStream: start nats-server with -js "
                    f"({self.url})",
                    seam=_SEAM,
                    host=self.url.host,
                    port=self.url.port,
                ) from exc
            raise translate(self.url, exc) from exc
        acks = Acks(nc)
        await acks.start()
        return nc, acks

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, nc = self._loop, self._thread, self._nc
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(shutdown(nc, self.timeout), loop).result(
                self.timeout + 2
            )
        except Exception as exc:
            log.warning("closing the NATS connection of %s: %s", self.url, exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
            if not thread.is_alive():
                loop.close()

    def reset_after_fork(self) -> None:
        _INHERITED.append((self._loop, self._nc))
        self._lock = threading.Lock()
        self._loop = self._thread = self._nc = self._acks = None


async def shutdown(nc: Any, timeout: float) -> None:
    """Close the connection, then end every task still on the loop (callers get ClosedError)."""
    if nc is not None and not nc.is_closed:
        try:
            await asyncio.wait_for(nc.close(), timeout)
        except Exception as exc:
            log.debug("closing NATS: %s", exc)
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class Gone(nats.errors.Error):
    """The consumer is gone (dropped by the server, or the connection was renewed)."""

    def __str__(self) -> str:
        return "the read's consumer is gone (idle too long, or the connection was renewed)"


class Pull:
    """An ephemeral pull consumer from one position, and the inbox its messages come to."""

    def __init__(self, nc: Any, stream: str, name: str, sub: Any) -> None:
        self._nc = nc
        self._stream = stream
        self._name = name
        self._sub = sub
        self._next = f"{_API}.CONSUMER.MSG.NEXT.{stream}.{name}"

    @classmethod
    async def open(
        cls,
        nc: Any,
        stream: str,
        subject: str,
        start_seq: int | None,
        start_time: datetime | None,
        timeout: float,
    ) -> Pull:
        if start_seq is not None:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        elif start_time is not None:
            policy = api.DeliverPolicy.BY_START_TIME
        else:
            policy = api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=policy,
            opt_start_seq=start_seq,
            opt_start_time=start_time,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        info = await nc.jetstream(timeout=timeout).add_consumer(stream, config)
        sub = await nc.subscribe(nc.new_inbox())
        return cls(nc, stream, info.name, sub)

    async def fetch(self, nc: Any, batch: int, wait: float | None, timeout: float) -> list[Any]:
        """Up to ``batch`` messages: those waiting (``wait`` None), or the first to come
        within ``wait`` seconds. Fewer than ``batch`` means none were left."""
        if nc is not self._nc:
            raise Gone  # a renewed connection: the inbox went with the old one
        request: dict[str, Any] = {"batch": batch}
        if wait is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(wait * 1e9)
        await nc.publish(self._next, orjson.dumps(request), reply=self._sub.subject)
        loop = asyncio.get_running_loop()
        start = loop.time() + (wait or 0.0)
        deadline = start + timeout
        probe: float | None = start + _PROBE_S
        msgs: list[Any] = []
        while len(msgs) < batch:
            until = deadline if probe is None else min(probe, deadline)
            try:
                msg = await self._sub.next_msg(timeout=max(until - loop.time(), 0.001))
            except nats.errors.TimeoutError:
                if loop.time() < deadline and probe is not None:
                    # The server ignores a pull for a consumer it no longer has: ask.
                    probe = None
                    await self._check_exists(nc, timeout)
                    continue
                if wait is None:
                    raise
                return msgs
            status = msg.headers.get("Status") if msg.headers else None
            if status is None:
                msgs.append(msg)
            elif status == "503" or (
                status == "409" and "deleted" in str(msg.headers.get("Description", "")).lower()
            ):
                raise Gone
            elif status != "100":
                break  # 404 no messages, 408 expired, 409 too many waiting: this request is over
        return msgs

    async def _check_exists(self, nc: Any, timeout: float) -> None:
        try:
            await nc.jetstream(timeout=timeout).consumer_info(self._stream, self._name)
        except nats.js.errors.NotFoundError:
            raise Gone from None

    async def close(self, nc: Any) -> None:
        try:
            await self._sub.unsubscribe()
        finally:
            await nc.jetstream().delete_consumer(self._stream, self._name)


def position(reply: str) -> tuple[int, int]:
    """(stream sequence, messages pending after it) from a JetStream message's reply subject."""
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or with
    # <domain>.<account hash> after ACK (and a token at the end) on newer servers.
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 3]), int(tokens[base + 6])


class TooLarge(Exception):
    """An event bigger than the server takes in one message."""


class _Batch:
    """One published batch's acks: filled in by token, one future for the lot."""

    __slots__ = ("done", "left", "results")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.results: list[bytes | BaseException | None] = [None] * size
        self.left = size
        self.done: asyncio.Future[None] = loop.create_future()


class Acks:
    """JetStream's publish acks for one connection, matched by token on one wildcard inbox.

    Sent through nats-py's ``request``, a batch of 500 is 500 tasks each with its
    own timer (a third of this path's speed, measured); a batch needs one
    deadline, so the writer publishes with reply subjects of its own, and a batch
    waits on one future that its last ack completes (a future per message cost a
    sixth of the loop's time, measured).
    """

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._count = 0

    async def start(self) -> None:
        await self.nc.subscribe(f"{self._prefix}*", cb=self._on_ack)

    async def _on_ack(self, msg: Any) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return  # its batch gave up waiting
        batch, index = entry
        if msg.headers and msg.headers.get("Status") == "503":
            batch.results[index] = nats.errors.NoRespondersError()
        else:
            batch.results[index] = msg.data
        batch.left -= 1
        if batch.left == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def publish(
        self, messages: list[tuple[str, bytes, str]], timeout: float
    ) -> list[bytes | BaseException]:
        """Publish ``(subject, body, message id)`` in order; each one's ack or error."""
        batch = _Batch(len(messages), asyncio.get_running_loop())
        tokens: list[str] = []
        waiting, prefix, nc = self._waiting, self._prefix, self.nc
        raw = _raw_path(nc) and all(_PLAIN_ID.fullmatch(m[2]) for m in messages)
        chunks: list[bytes] = []
        try:
            for index, (subject, body, msg_id) in enumerate(messages):
                self._count += 1
                token = str(self._count)
                waiting[token] = (batch, index)
                tokens.append(token)
                if raw:
                    chunks.append(_hpub(subject, prefix + token, msg_id, body))
                else:
                    await nc.publish(
                        subject, body, reply=prefix + token, headers={"Nats-Msg-Id": msg_id}
                    )
            if raw:
                await _send_raw(nc, b"".join(chunks), len(messages))
            if batch.left:
                await asyncio.wait((batch.done,), timeout=timeout)
        finally:
            for token in tokens:
                waiting.pop(token, None)
            if not batch.done.done():
                batch.done.cancel()
        return [nats.errors.TimeoutError() if r is None else r for r in batch.results]


#: A message id the raw path writes into a header as it is (Conveyor's ids are 32 hex).
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _raw_path(nc: Any) -> bool:
    """Whether this client lets a batch go out as one write (see :func:`_send_raw`)."""
    return callable(getattr(nc, "_send_command", None)) and callable(
        getattr(nc, "_flush_pending", None)
    )


def _hpub(subject: str, reply: str, msg_id: str, body: bytes) -> bytes:
    """One HPUB command of the NATS protocol, with the ``Nats-Msg-Id`` header."""
    header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        len(header),
        len(header) + len(body),
        header,
        body,
    )


async def _send_raw(nc: Any, data: bytes, count: int) -> None:
    """A batch of HPUB commands onto the client's outgoing buffer as one write, and flushed.

    What ``Client.publish`` does per message (checks, header encoding, a buffer append)
    was a third of the loop thread's time; subjects, reply inboxes and ids here are
    ours and already checked. It uses the client's buffer (so a reconnect resends it
    as it resends publishes); a client without it takes the per-message path.
    """
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    await nc._send_command(data)
    await nc._flush_pending()
    stats = getattr(nc, "stats", None)
    if isinstance(stats, dict) and "out_msgs" in stats:
        stats["out_msgs"] += count


async def publish(nc: Any, acks: Acks | None, prefix: str, timeout: float, rows: list[Row]) -> None:
    """Publish a batch at once (in order on the connection) and wait for every ack."""
    if acks is None or acks.nc is not nc:
        raise Gone  # the connection was renewed meanwhile: the writer retries
    limit = nc.max_payload
    messages = []
    for row in rows:
        body = encode_event(row)
        if len(body) + 100 > limit:  # the headers count too
            raise TooLarge(
                f"event {row['id']} is {len(body)} bytes; the NATS server takes at most "
                f"{limit} per message (max_payload)"
            )
        messages.append((f"{prefix}.{row['kind']}", body, row["id"]))
    errors: list[BaseException] = []
    for reply in await acks.publish(messages, timeout):
        if isinstance(reply, BaseException):
            errors.append(reply)
            continue
        if b'"error"' in reply:  # an ack is {"stream": ..., "seq": ...}: parse only errors
            answer = orjson.loads(reply)
            if "error" in answer:
                errors.append(nats.js.errors.APIError.from_error(answer["error"]))
    if errors:
        # A failure of the service before one of a row: the batch is retried whole.
        raise next((e for e in errors if not refused(e)), errors[0])


async def delete(nc: Any, stream: str, seqs: list[int], timeout: float) -> None:
    """Delete (and overwrite on disk: the server's default erase) these messages."""
    js = nc.jetstream(timeout=timeout)
    for start in range(0, len(seqs), 256):
        done = await asyncio.gather(
            *(js.delete_msg(stream, seq) for seq in seqs[start : start + 256]),
            return_exceptions=True,
        )
        for result in done:
            gone = isinstance(result, nats.js.errors.APIError) and result.err_code == _NO_MESSAGE
            if isinstance(result, BaseException) and not gone:
                raise result


# -- errors ------------------------------------------------------------------------------


def refused(exc: BaseException) -> bool:
    """True when the server refused the event itself (too large), not the connection."""
    if isinstance(exc, TooLarge | nats.errors.MaxPayloadError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == _TOO_LARGE


def reason(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.NoServersError):
        cause = getattr(exc, "__context__", None)
        return f"no server answered ({cause})" if cause else "no server answered"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(url: BackendURL, exc: BaseException) -> BaseException:
    """The ConveyorError a caller sees for a driver error."""
    if isinstance(exc, ConveyorError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return BackendError(
            f"NATS JetStream at {url.address} refused the request: {reason(exc)} ({url})",
            seam=_SEAM,
            url=str(url),
            host=url.host,
            port=url.port,
        )
    if isinstance(exc, nats.errors.Error | OSError | TimeoutError):
        return unavailable(url, _SEAM, reason(exc))
    return exc


@contextmanager
def errors(url: BackendURL) -> Iterator[None]:
    try:
        yield
    except ConveyorError:
        raise
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise translate(url, exc) from exc
