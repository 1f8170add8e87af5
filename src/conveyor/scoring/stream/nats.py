"""NATS JetStream as a stream source: a durable pull consumer shared by every scorer.

``nats://host:4222/STREAM?subject=orders.>&durable=fraud-scorer`` binds (or creates)
the durable pull consumer ``durable`` on ``STREAM`` with explicit acks: every process
started with the same URL pulls from the same consumer, so the work is shared and a
message is acked by whoever scored it. A message not acked within ``ack_wait``
seconds (its consumer was killed) is delivered again to another. ``max_ack_pending``
bounds what the whole group holds unacked.

nats-py is asyncio only: the source owns one event loop on a daemon thread and every
call is a coroutine submitted to it (as :mod:`conveyor.events.jetstream` does for the
event log), so the scorer's loop and the model stay plain synchronous code. Publishes
go through that module's :class:`~conveyor.events.jetstream.Acks` (a batch, each
message with its ``Nats-Msg-Id``, one deadline for every ack); a target subject no
stream captures gets a stream of its own (``duplicate_window`` is how long JetStream
remembers ids to drop a second copy). Window state lives in a KV bucket,
``conveyor_stream_state``.

Query options: ``subject`` (the consumer's filter; default every subject of the
stream), ``durable`` (default ``conveyor-scorer``), ``ack_wait`` (seconds, 30),
``max_ack_pending`` (10000), ``duplicate_window`` (seconds, 600),
``connect_timeout`` (2) and ``timeout`` (10).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.js import api

from conveyor.backends import BackendURL, check_options, int_option, seconds_option, unavailable
from conveyor.errors import BackendError, ClosedError, InvalidInputError, NotFoundError
from conveyor.events.jetstream import Acks, reason
from conveyor.scoring.stream.source import Message, Outgoing, StreamSource

__all__ = ["JetStreamSource"]

log = logging.getLogger("conveyor.scoring")

T = TypeVar("T")

_SEAM = "stream source"
_OPTIONS = (
    "subject",
    "durable",
    "ack_wait",
    "max_ack_pending",
    "duplicate_window",
    "connect_timeout",
    "timeout",
)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_BUCKET = "conveyor_stream_state"


class JetStreamSource(StreamSource):
    """A durable pull consumer of one JetStream stream (see the module)."""

    def __init__(
        self,
        url: BackendURL,
        *,
        stream: str,
        subject: str | None,
        durable: str,
        ack_wait: float,
        max_ack_pending: int,
        duplicate_window: float,
        connect_timeout: float,
        timeout: float,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject = subject
        self.group = durable
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.duplicate_window = duplicate_window
        self.timeout = timeout
        self.description = str(url)
        self._connect_timeout = connect_timeout
        self._server = url.with_(path="", query={}).render(hide_password=False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-stream-nats", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._nc: Any = None
        self._sub: Any = None
        self._acks: Acks | None = None
        self._kv: Any = None
        self._stream_subjects: list[str] = []
        self._targets: set[str] = set()
        try:
            self._run(self._open())
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: BackendURL, **options: Any) -> JetStreamSource:
        check_options(url, _OPTIONS, "stream source")
        stream = url.path.strip("/")
        if not _NAME.match(stream):
            raise InvalidInputError(
                f"{url}: the path names the JetStream stream to consume "
                "(nats://host:4222/STREAM?subject=...)",
                field="source",
            )
        durable = url.query.get("durable", "conveyor-scorer")
        if not _NAME.match(durable):
            raise InvalidInputError(
                f"{url}: durable {durable!r} is not a consumer name (letters, digits, - and _)",
                field="durable",
            )
        settings: dict[str, Any] = {
            "stream": stream,
            "subject": url.query.get("subject") or None,
            "durable": durable,
            "ack_wait": seconds_option(url, "ack_wait", 30.0),
            "max_ack_pending": int_option(url, "max_ack_pending", 10_000),
            "duplicate_window": seconds_option(url, "duplicate_window", 600.0),
            "connect_timeout": seconds_option(url, "connect_timeout", 2.0),
            "timeout": seconds_option(url, "timeout", 10.0),
        }
        settings.update(options)
        return cls(url, **settings)

    # -- the loop ------------------------------------------------------------------

    def _run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        if self._closed:
            raise ClosedError(f"the stream source {self.url} is closed")
        limit = (self.timeout if timeout is None else timeout) + 1.0

        async def call() -> T:
            return await asyncio.wait_for(coro, limit)

        try:
            return asyncio.run_coroutine_threadsafe(call(), self._loop).result()
        except concurrent.futures.CancelledError:
            raise ClosedError(f"the stream source {self.url} was closed during the call") from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, nats.js.errors.APIError):
            return BackendError(
                f"NATS JetStream at {self.url.address} refused the request: {reason(exc)} "
                f"({self.url})",
                seam=_SEAM,
                url=str(self.url),
                host=self.url.host,
                port=self.url.port,
            )
        return unavailable(self.url, _SEAM, reason(exc))

    async def _open(self) -> None:
        async def warn(exc: Exception) -> None:
            log.warning("NATS at %s: %s", self.url.address, reason(exc))

        try:
            nc = await nats.connect(
                servers=[self._server],
                name=f"conveyor-scorer-{self.group}",
                connect_timeout=self._connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=warn,
            )
        except Exception as exc:
            raise unavailable(self.url, _SEAM, reason(exc)) from exc
        nc.options["max_reconnect_attempts"] = -1  # connected once: ride out restarts
        self._nc = nc
        js = nc.jetstream(timeout=self.timeout)
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise NotFoundError(
                f"there is no JetStream stream {self.stream!r} at {self.url.address} ({self.url})",
                stream=self.stream,
            ) from None
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            raise BackendError(
                f"NATS at {self.url.address} has no JetStream: start nats-server with -js "
                f"({self.url})",
                seam=_SEAM,
                host=self.url.host,
                port=self.url.port,
            ) from None
        self._stream_subjects = list(info.config.subjects or [])
        config = api.ConsumerConfig(
            durable_name=self.group,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=self.subject,
        )
        try:
            await js.consumer_info(self.stream, self.group)
        except nats.js.errors.NotFoundError:
            # another scorer of the group may have created it meanwhile
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await js.add_consumer(self.stream, config)
        self._sub = await js.pull_subscribe_bind(self.group, self.stream)
        self._acks = Acks(nc)
        await self._acks.start()

    # -- the seam ------------------------------------------------------------------

    def fetch(self, limit: int, wait: float) -> list[Message]:
        return self._run(self._fetch(limit, wait), timeout=wait + self.timeout)

    async def _fetch(self, limit: int, wait: float) -> list[Message]:
        try:
            msgs = await self._sub.fetch(limit, timeout=max(wait, 0.01))
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from inside the pull
            return []
        out = []
        for msg in msgs:
            meta = msg.metadata
            headers = dict(msg.headers or {})
            msg_id = headers.get("Nats-Msg-Id") or f"{self.stream}:{meta.sequence.stream}"
            out.append(
                Message(
                    id=msg_id,
                    body=msg.data,
                    deliveries=int(meta.num_delivered),
                    subject=msg.subject,
                    headers=headers,
                    handle=msg,
                )
            )
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            self._run(self._settle(messages, None))

    def retry(self, messages: Sequence[Message], delay: float) -> None:
        if messages:
            self._run(self._settle(messages, delay))

    async def _settle(self, messages: Sequence[Message], delay: float | None) -> None:
        for m in messages:
            if delay is None:
                await m.handle.ack()
            else:
                await m.handle.nak(delay=delay)
        await self._nc.flush(timeout=self.timeout)

    def publish(self, target: str, records: Sequence[Outgoing]) -> None:
        if records:
            self._run(self._publish(target, records))

    def prepare_target(self, target: str) -> None:
        self._run(self._prepare(target))

    async def _prepare(self, target: str) -> None:
        if target not in self._targets:
            await self._ensure_target(target)
            self._targets.add(target)

    async def _publish(self, target: str, records: Sequence[Outgoing]) -> None:
        await self._prepare(target)
        assert self._acks is not None
        # Acks.publish sends one header, the id; other headers ride in the body's envelope.
        replies = await self._acks.publish([(target, r.body, r.id) for r in records], self.timeout)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            answer = orjson.loads(reply)
            if "error" in answer:
                raise nats.js.errors.APIError.from_error(answer["error"])

    async def _ensure_target(self, target: str) -> None:
        from conveyor.scoring.stream.subjects import overlaps

        if any(overlaps(target, s) for s in self._stream_subjects):
            raise InvalidInputError(
                f"target subject {target!r} is captured by the source stream {self.stream!r} "
                f"({', '.join(self._stream_subjects)}): its records would be scored again",
                field="target",
            )
        js = self._nc.jetstream(timeout=self.timeout)
        try:
            await js.find_stream_name_by_subject(target)
            return
        except nats.js.errors.NotFoundError:
            pass
        name = re.sub(r"[^A-Za-z0-9_-]", "_", target.replace(">", "all").replace("*", "any"))
        await js.add_stream(
            api.StreamConfig(
                name=name[:200],
                subjects=[target],
                duplicate_window=self.duplicate_window,
                storage=api.StorageType.FILE,
            )
        )

    def load_state(self, name: str) -> bytes | None:
        return self._run(self._load_state(name))

    async def _load_state(self, name: str) -> bytes | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(_key(name))
        except nats.js.errors.KeyNotFoundError:
            return None
        value: bytes | None = entry.value
        return value

    def save_state(self, name: str, data: bytes) -> None:
        self._run(self._save_state(name, data))

    async def _save_state(self, name: str, data: bytes) -> None:
        kv = await self._bucket()
        await kv.put(_key(name), data)

    async def _bucket(self) -> Any:
        if self._kv is None:
            js = self._nc.jetstream(timeout=self.timeout)
            try:
                self._kv = await js.key_value(_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(bucket=_BUCKET, history=1, storage=api.StorageType.FILE)
                )
        return self._kv

    def default_target(self, role: str) -> str:
        return f"{role}.{self.stream}.{self.group}"

    def delete_state(self, name: str) -> None:
        """Forget the state saved under ``name`` (tests, a reset)."""

        async def drop() -> None:
            kv = await self._bucket()
            await kv.purge(_key(name))

        self._run(drop())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        nc = self._nc

        async def shutdown() -> None:
            if nc is not None and not nc.is_closed:
                try:
                    await nc.close()
                except Exception as exc:
                    log.debug("closing NATS: %s", exc)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(self.timeout + 2)
        except Exception as exc:
            log.debug("closing the stream source %s: %s", self.url, exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def run_on_loop(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(jetstream)`` on this source's connection (benchmarks, tests)."""
        return self._run(work(self._nc.jetstream(timeout=self.timeout)))


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_=/.-]", "_", name)
