"""The queue on JetStream: a work-queue stream of requests and a KV bucket of job records.

::

    queue = JobQueue(jobs_of(project.spec))     # connects on first use, on the running loop
    job = await queue.submit(Submission(...), body)     # record written, then request published
    record = await queue.get(job.id)            # {"status": "queued" | "running" | ...}
    await queue.depth()                         # requests not yet acknowledged by a worker
    await queue.close()

**Why a stream and a bucket on the same server.** The request goes onto a
stream with work-queue retention (``NAME.requests``, stream ``NAME``): a
message is acknowledged by a worker of the durable pull consumer ``workers``
once its result is stored, and then removed; until then JetStream redelivers
it after ``ack_wait_s`` to another worker (a killed worker loses nothing). The
job's record (status, timing, the owner, the result or the error, the
callback's fate) is a key of the KV bucket ``NAME_results``, whose TTL
(``result_ttl_s``) expires old jobs with no clean-up job of ours. A KV bucket
rather than the metadata store: every server and worker already talks to this
NATS, results expire by themselves, a write is a sub-millisecond local
round-trip (no store transaction per job under a spike), and its revisions
give the compare-and-set that makes redelivery safe: a worker moves a record
only from the revision it read, so two deliveries of one job never both store
a result, and a job whose result is stored is acknowledged without being
scored again.

The connection lives on the caller's event loop (nats-py is asyncio); an
unreachable server is :class:`~conveyor.errors.BackendUnavailableError`
naming its URL (HTTP 503 ``backend_unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ThrottledError,
)

if TYPE_CHECKING:
    from conveyor.jobs.settings import JobsSpec

__all__ = [
    "CONSUMER",
    "HEADER",
    "JobQueue",
    "Submission",
    "job_location",
    "now_iso",
]

log = logging.getLogger("conveyor.jobs")

#: The durable pull consumer every worker pulls from (one group: each job goes to one).
CONSUMER = "workers"
#: The NATS header carrying a request's job (JSON): the body is the request's own bytes.
HEADER = "Conveyor-Job"
_SEAM = "jobs"
_TIMEOUT_S = 5.0
_CLOSE_S = 2.0
#: JetStream's error codes met on purpose.
_STREAM_FULL = 10077  # maximum messages exceeded (discard new)
_WRONG_LAST_SEQ = 10071  # KV compare-and-set lost
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")


def job_location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


@dataclass
class Submission:
    """One request taken for later: what a worker needs to score it as the server would."""

    model: str
    version: int | None
    protocol: str  # native | v2
    owner: str  # the actor: key:NAME (only it, or an admin, reads the job)
    headers: list[tuple[str, str]] = field(default_factory=list)  # attributes, sticky key
    request_id: str | None = None
    callback_url: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            from conveyor.events.schema import new_event_id

            self.id = new_event_id()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "protocol": self.protocol,
            "owner": self.owner,
            "headers": self.headers,
            "request_id": self.request_id,
            "callback_url": self.callback_url,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submission:
        return cls(
            model=data["model"],
            version=data.get("version"),
            protocol=data.get("protocol", "native"),
            owner=data.get("owner", "anonymous"),
            headers=[(k, v) for k, v in data.get("headers") or ()],
            request_id=data.get("request_id"),
            callback_url=data.get("callback_url"),
            id=data["id"],
        )


class JobQueue:
    """The stream, the consumer and the bucket of one ``jobs:`` section, over one connection."""

    def __init__(self, spec: JobsSpec, *, connect_timeout_s: float = 2.0) -> None:
        self.spec = spec
        self.url = BackendURL.parse(spec.url)
        self._server = self.url.with_(path="", query={}).render(hide_password=False)
        self._connect_timeout = connect_timeout_s
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._lock: asyncio.Lock | None = None
        self.max_payload: int | None = None
        self._taking_back: set[asyncio.Task[None]] = set()

    # -- connection ---------------------------------------------------------------

    async def _ensure(self) -> tuple[Any, Any]:
        if self._kv is not None and not self._nc.is_closed:
            return self._js, self._kv
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._kv is not None and not self._nc.is_closed:
                return self._js, self._kv
            import nats

            try:
                nc = await nats.connect(
                    servers=[self._server],
                    name="conveyor-jobs",
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=1,  # an absent server fails fast here
                    reconnect_time_wait=0.2,
                    error_cb=_quiet,
                )
            except Exception as exc:
                raise unavailable(self.url, _SEAM, _reason(exc)) from exc
            nc.options["max_reconnect_attempts"] = -1  # once up, ride out restarts
            try:
                js = nc.jetstream(timeout=_TIMEOUT_S)
                await self._declare(js)
                kv = await self._bucket(js)
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js, self._kv = nc, js, kv
            self.max_payload = nc.max_payload
            return js, kv

    async def _declare(self, js: Any) -> None:
        from nats.js import api

        spec = self.spec
        config = api.StreamConfig(
            name=spec.stream,
            subjects=[spec.subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            discard=api.DiscardPolicy.NEW,
            max_msgs=spec.max_queued,
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
        )
        try:
            await js.add_stream(config)
        except Exception as exc:
            if _code(exc) != 10058:  # stream name already in use with another config
                raise _translate(self.url, exc) from exc
            await js.update_stream(config)
        consumer = api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            # Ours to count (num_delivered): a job over max_deliver is failed and acked.
            max_deliver=-1,
            filter_subject=spec.subject,
            max_ack_pending=-1,
        )
        try:
            await js.add_consumer(spec.stream, consumer)
        except Exception as exc:
            if _code(exc) not in (10148, 10013):  # exists with another config
                raise _translate(self.url, exc) from exc

    async def _bucket(self, js: Any) -> Any:
        from nats.js import api

        try:
            return await js.key_value(self.spec.bucket)
        except Exception:
            pass
        try:
            return await js.create_key_value(
                api.KeyValueConfig(
                    bucket=self.spec.bucket,
                    history=1,
                    ttl=self.spec.result_ttl_s,
                    storage=api.StorageType.FILE,
                )
            )
        except Exception as exc:
            raise _translate(self.url, exc) from exc

    async def js(self) -> Any:
        """The JetStream context (connected, stream and bucket declared)."""
        js, _ = await self._ensure()
        return js

    async def close(self) -> None:
        nc, self._nc, self._js, self._kv = self._nc, None, None, None
        self._lock = None  # bound to the loop that made it; the next may be another
        if nc is not None and not nc.is_closed:
            # What was sent (a worker's last acks) reaches NATS first: a flush, bounded, then
            # the close. Not nats-py's drain: on a server that stopped answering it held a
            # server's or a worker's stop for 12-30 s, and its cancellation is not prompt.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(), _CLOSE_S)
            with contextlib.suppress(Exception):
                await nc.close()

    # -- jobs ----------------------------------------------------------------------

    async def submit(self, job: Submission, body: bytes) -> dict[str, Any]:
        """Record ``job`` as queued, then publish its request (acknowledged by JetStream).

        The record comes first so that a worker always finds it; a publish that
        fails takes it back, and the caller gets the error (nothing half-queued).
        """
        js, kv = await self._ensure()
        if self.max_payload is not None and len(body) + 4096 > self.max_payload:
            raise PayloadTooLargeError(
                f"the body ({len(body)} bytes) exceeds what the queue carries "
                f"({self.max_payload - 4096} bytes: NATS max_payload)",
                field="body",
                limit=self.max_payload - 4096,
            )
        record = {
            "id": job.id,
            "status": "queued",
            "model": job.model,
            "version": job.version,
            "protocol": job.protocol,
            "owner": job.owner,
            "request_id": job.request_id,
            "submitted_at": now_iso(),
            "submitted_ts": time.time(),
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "result": None,
            "error": None,
            "callback": None
            if job.callback_url is None
            else {"url": job.callback_url, "status": "pending", "attempts": 0},
        }
        try:
            await kv.create(job.id, orjson.dumps(record))
        except Exception as exc:
            raise _translate(self.url, exc) from exc
        try:
            await js.publish(
                self.spec.subject,
                body,
                headers={HEADER: orjson.dumps(job.to_dict()).decode(), "Nats-Msg-Id": job.id},
                stream=self.spec.stream,
            )
        except Exception as exc:
            try:
                await kv.delete(job.id)
            except Exception:  # the record expires with its TTL
                log.warning("job %s: could not take back its record", job.id)
            if _code(exc) == _STREAM_FULL:
                raise ThrottledError(
                    f"the queue holds its maximum of {self.spec.max_queued} requests; retry later",
                    retry_after=5.0,
                ) from exc
            raise _translate(self.url, exc) from exc
        return record

    def take_back(self, job_id: str) -> None:
        """Delete ``job_id``'s record in the background, after a submission the caller gave
        up on (timed out). The delete follows the record and the request on the same
        connection, so if they reach NATS late, it does too, after them: the worker that
        takes the request finds no record and drops it."""
        kv = self._kv
        if kv is None:
            return

        async def delete() -> None:
            try:
                await kv.delete(job_id)
            except Exception as exc:  # NATS is still away: the delete stays queued in
                log.debug("job %s: take back: %s", job_id, exc)  # the client, or the TTL

        task = asyncio.get_running_loop().create_task(delete())
        self._taking_back.add(task)
        task.add_done_callback(self._taking_back.discard)

    async def get(self, job_id: str) -> tuple[dict[str, Any], int]:
        """The record of ``job_id`` and its revision (NotFoundError: none, or expired)."""
        if not _JOB_ID.fullmatch(job_id):  # every id is 32 hex digits: nothing to look up
            raise NotFoundError(f"job {job_id[:64]!r} does not exist", job=job_id[:64])
        _, kv = await self._ensure()
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            raise NotFoundError(
                f"job {job_id!r} does not exist (or expired after {self.spec.result_ttl_s:g} s)",
                job=job_id,
            ) from None
        except Exception as exc:
            raise _translate(self.url, exc) from exc
        if entry.value is None:  # deleted
            raise NotFoundError(f"job {job_id!r} does not exist", job=job_id)
        return orjson.loads(entry.value), entry.revision

    async def update(self, record: dict[str, Any], revision: int) -> int:
        """Store ``record`` if the job is still at ``revision`` (ConflictError otherwise:
        another delivery moved it); its new revision."""
        _, kv = await self._ensure()
        try:
            return int(await kv.update(record["id"], orjson.dumps(record), last=revision))
        except Exception as exc:
            if _code(exc) == _WRONG_LAST_SEQ or "wrong last sequence" in str(exc).lower():
                raise ConflictError(
                    f"job {record['id']} moved on meanwhile", job=record["id"]
                ) from None
            raise _translate(self.url, exc) from exc

    async def depth(self) -> dict[str, int]:
        """``pending``: requests no worker has taken yet; ``in_flight``: taken, unacknowledged;
        ``queued``: both (the stream's messages): the autoscaling signal."""
        js = await self.js()
        try:
            info = await js.consumer_info(self.spec.stream, CONSUMER)
            stream = await js.stream_info(self.spec.stream)
        except Exception as exc:
            raise _translate(self.url, exc) from exc
        return {
            "pending": int(info.num_pending),
            "in_flight": int(info.num_ack_pending),
            "redelivered": int(info.num_redelivered),
            "queued": int(stream.state.messages),
        }

    async def delete_all(self) -> None:
        """Remove the stream and the bucket (tests, benchmarks)."""
        js = await self.js()
        try:
            await js.delete_stream(self.spec.stream)
            await js.delete_key_value(self.spec.bucket)
        except Exception as exc:
            log.debug("delete: %s", exc)


async def _quiet(exc: Exception) -> None:
    log.debug("NATS: %s", exc)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "err_code", None)
    return int(code) if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _translate(url: BackendURL, exc: BaseException) -> BackendError:
    """A NATS error as ours: no answer is BackendUnavailableError naming the URL."""
    import nats.errors

    if isinstance(
        exc,
        nats.errors.NoServersError
        | nats.errors.TimeoutError
        | nats.errors.ConnectionClosedError
        | nats.errors.NoRespondersError
        | TimeoutError
        | OSError,
    ):
        return unavailable(url, _SEAM, _reason(exc))
    if isinstance(exc, BackendUnavailableError):
        return exc
    return BackendError(f"the job queue at {url.address}: {_reason(exc)}", seam=_SEAM)
