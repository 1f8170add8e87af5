"""A worker: pulls jobs from the durable consumer, scores them as the server would, stores them.

::

    asyncio.run(Worker(project).run())      # conveyor jobs worker [--concurrency N]

Run as many as the queue needs (processes, pods): they share the durable pull
consumer ``workers``, so each request goes to one of them. A worker holds a
:class:`conveyor.serving.app.Server` of its own (the same loader, route
watcher, batcher, cache, canary and shadow copies, and prediction events as
``conveyor serve``) and scores a job with :meth:`Server.predict`, the path a
synchronous request takes, with the submitting key as the actor.

One job, in order: read its record (a finished job, delivered again because
its worker died before acknowledging, is acknowledged without being scored
again); move it to ``running`` from the revision read (compare-and-set: a
second delivery in flight backs off); score; store ``done`` with the result
(or ``failed`` with the error) from the revision it wrote; deliver its
callback; acknowledge. While it works it tells JetStream so (``in_progress``)
every third of ``ack_wait_s``; a worker killed at any point leaves the
message unacknowledged, and JetStream gives it to another after ``ack_wait_s``.
A model that cannot serve for now (503: not loaded yet, overloaded) is put
back with a delay, up to ``max_deliver`` deliveries; input that fails is a
``failed`` job at once (it passed the same checks at submission, so this is
rare: a route moved to a version with another signature meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import (
    BackendUnavailableError,
    ConflictError,
    ConveyorError,
    ModelUnavailableError,
    NotFoundError,
    ThrottledError,
)
from conveyor.jobs.callbacks import Callbacks
from conveyor.jobs.events import JOB_CALLBACK, JOB_FINISHED
from conveyor.jobs.queue import CONSUMER, HEADER, JobQueue, Submission, now_iso

if TYPE_CHECKING:
    from conveyor.jobs.settings import JobsSpec
    from conveyor.project import Project
    from conveyor.serving.app import Server

__all__ = ["Worker"]

log = logging.getLogger("conveyor.jobs")

_TRANSIENT = (ModelUnavailableError, BackendUnavailableError, ThrottledError)


class Worker:
    """One worker process's loop over the queue of ``project``'s ``jobs:`` section."""

    def __init__(
        self,
        project: Project,
        *,
        concurrency: int | None = None,
        spec: JobsSpec | None = None,
        metrics_port: int | None = None,
    ) -> None:
        from conveyor.jobs.settings import jobs_of

        self.project = project
        self.spec = spec or jobs_of(project.spec)
        self.concurrency = concurrency or self.spec.concurrency
        self.queue = JobQueue(self.spec)
        self.callbacks = Callbacks(self.spec)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics_port = metrics_port
        self.server: Server | None = None
        self.done = 0
        self.failed = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Finish the jobs in hand, take no more (SIGTERM)."""
        self._stop.set()

    async def run(self, *, max_jobs: int | None = None) -> None:
        """Pull and score until :meth:`stop` (or ``max_jobs`` are finished)."""
        import nats.errors

        from conveyor.serving.app import Server
        from conveyor.web.metrics import WebMetrics

        metrics = WebMetrics()
        server = self.server = Server(self.project, metrics)
        finished = self._finished_counter(metrics)
        depth = self._depth_gauge(metrics)
        if self.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_port, registry=metrics.registry)
        js = await self.queue.js()
        await server.startup()
        sub = await js.pull_subscribe(self.spec.subject, durable=CONSUMER, stream=self.spec.stream)
        tasks: set[asyncio.Task[None]] = set()
        depth_task = asyncio.create_task(self._watch_depth(depth))
        log.info(
            "worker %s: pulling %s (%d at a time)", self.name, self.spec.stream, self.concurrency
        )
        try:
            while not self._stop.is_set():
                if max_jobs is not None and self.done + self.failed >= max_jobs:
                    break
                free = self.concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await sub.fetch(free, timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):  # nothing to do
                    continue
                except nats.errors.ConnectionClosedError:
                    break
                for message in messages:
                    task = asyncio.create_task(self._handle(message, finished))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            depth_task.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            await server.shutdown()
            await self.callbacks.close()
            await self.queue.close()

    # -- one job -----------------------------------------------------------------

    async def _handle(self, message: Any, finished: Any) -> None:
        try:
            job = Submission.from_dict(orjson.loads((message.headers or {})[HEADER]))
        except (KeyError, ValueError, TypeError) as exc:
            # Not a request of ours: nobody can score it, redelivering it helps nobody.
            log.error("a message without a readable %s header was dropped: %s", HEADER, exc)
            await message.term()
            return
        keepalive = asyncio.create_task(self._keep_alive(message))
        try:
            await self._work(job, message, finished)
        except BackendUnavailableError as exc:
            # The bucket is unreachable: leave the message; JetStream redelivers it.
            log.warning("job %s: %s", job.id, exc.message)
        except Exception:
            log.exception("job %s: the worker failed; it will be redelivered", job.id)
        finally:
            keepalive.cancel()

    async def _work(self, job: Submission, message: Any, finished: Any) -> None:
        queue = self.queue
        delivered = int(message.metadata.num_delivered)
        try:
            record, revision = await queue.get(job.id)
        except NotFoundError:
            # Its record expired while it waited (result_ttl_s shorter than the backlog):
            # nobody can read a result any more; let it go.
            log.warning("job %s: no record (expired); dropped", job.id)
            await message.ack()
            return
        if record["status"] in ("done", "failed"):
            # Stored by a delivery that died before acknowledging: not scored again.
            callback = record.get("callback")
            if callback and callback.get("status") == "pending":
                await self._callback(record, revision)
            await message.ack()
            return
        if delivered > self.spec.max_deliver:
            await self._finish(
                job,
                record,
                revision,
                None,
                {
                    "code": "gave_up",
                    "message": f"not scored after {delivered - 1} deliveries"
                    + (f": {record['error']['message']}" if record.get("error") else ""),
                },
                finished,
            )
            await message.ack()
            return
        now = time.time()
        record.update(
            status="running",
            started_at=now_iso(),
            started_ts=now,
            attempts=delivered,
            worker=self.name,
        )
        try:
            revision = await queue.update(record, revision)
        except ConflictError:
            return  # another delivery moved it; it acknowledges
        try:
            result = await self._score(job, message.data)
        except _TRANSIENT as exc:
            if delivered < self.spec.max_deliver:
                record.update(status="queued", error=exc.to_dict())
                with contextlib.suppress(ConflictError):
                    await queue.update(record, revision)
                await message.nak(delay=min(30.0, 0.5 * 2 ** (delivered - 1)))
                return
            await self._finish(job, record, revision, None, exc.to_dict(), finished)
        except ConveyorError as exc:
            await self._finish(job, record, revision, None, exc.to_dict(), finished)
        except Exception as exc:  # the model raised: the job failed, as a 500 would
            log.exception("job %s: scoring failed", job.id)
            error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            await self._finish(job, record, revision, None, error, finished)
        else:
            await self._finish(job, record, revision, result, None, finished)
        await message.ack()

    async def _finish(
        self,
        job: Submission,
        record: dict[str, Any],
        revision: int,
        result: Any,
        error: dict[str, Any] | None,
        finished: Any,
    ) -> None:
        now = time.time()
        record.update(
            status="done" if error is None else "failed",
            result=result,
            error=error,
            finished_at=now_iso(),
            finished_ts=now,
        )
        record.setdefault("started_ts", now)
        try:
            revision = await self.queue.update(record, revision)
        except ConflictError:
            return  # another delivery stored it first: its result is the one seen
        if error is None:
            self.done += 1
        else:
            self.failed += 1
        finished.labels(record["status"]).inc()
        started = record.get("started_ts") or now
        await asyncio.to_thread(  # a control event may wait for room: not on the loop
            self.project.events.record,
            JOB_FINISHED,
            subject=job.model,
            request_id=job.request_id,
            actor=job.owner,
            payload={
                "job_id": job.id,
                "status": record["status"],
                "attempts": int(record.get("attempts") or 1),
                "queued_ms": round((started - record["submitted_ts"]) * 1000, 3),
                "run_ms": round((now - started) * 1000, 3),
                "code": None if error is None else str(error.get("code")),
            },
        )
        if record.get("callback"):
            await self._callback(record, revision)

    async def _callback(self, record: dict[str, Any], revision: int) -> None:
        state = await self.callbacks.deliver(record)
        record["callback"] = state
        with contextlib.suppress(ConflictError):
            await self.queue.update(record, revision)
        await asyncio.to_thread(
            self.project.events.record,
            JOB_CALLBACK,
            subject=record["model"],
            request_id=record.get("request_id"),
            actor=record.get("owner"),
            payload={
                "job_id": record["id"],
                "status": state["status"],
                "attempts": int(state["attempts"]),
                "target": self.callbacks.breaker(state["url"]).name.rsplit(" ", 1)[-1],
            },
        )

    async def _score(self, job: Submission, body: bytes) -> Any:
        """The answer the synchronous route would have given, as JSON."""
        server = self.server
        assert server is not None
        call = _call(job)
        request_id = job.request_id or job.id
        if job.protocol == "native":
            from conveyor.serving.native import decode_native_request, encode_predictions

            decoded = decode_native_request(body)
            output, served, decision, cached = await server.predict(
                call,
                job.model,
                lambda s: decoded.rows_for(s.dense),
                dict(decoded.attributes),
                job.version,
                decoded.id or request_id,
            )
            return orjson.loads(
                encode_predictions(
                    output,
                    model=job.model,
                    version=served.version.number,
                    arm=decision.arm if decision else "direct",
                    request_id=decoded.id or request_id,
                    cached=cached,
                )
            )
        from conveyor.serving import protocol_v2 as v2

        headers = dict(job.headers)
        infer = v2.decode_infer_request(
            body, v2.parse_header_length(headers.get(v2.HEADER_LENGTH.lower()))
        )

        def table_for(served: Any) -> Any:
            signature = served.loaded.signature
            return v2.table_from_inputs(infer.inputs, signature.names if signature else None)

        output, served, decision, _ = await server.predict(
            call,
            job.model,
            table_for,
            dict(infer.parameters.get("attributes") or {}),
            job.version,
            infer.id or request_id,
        )
        outputs = infer.select_outputs(v2.outputs_from_predictions(output))
        content, _headers = v2.encode_infer_response(
            job.model, served.version.number, infer.id, outputs, binary=False
        )
        answer = orjson.loads(content)
        if decision is not None:
            answer["arm"] = decision.arm
        return answer

    # -- background ------------------------------------------------------------------

    async def _keep_alive(self, message: Any) -> None:
        every = max(0.5, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await message.in_progress()

    async def _watch_depth(self, gauge: Any) -> None:
        while True:
            with contextlib.suppress(Exception):
                found = await self.queue.depth()
                for state in ("pending", "in_flight", "queued"):
                    gauge.labels(state).set(found[state])
            await asyncio.sleep(2.0)

    @staticmethod
    def _finished_counter(metrics: Any) -> Any:
        from prometheus_client import Counter

        return Counter(
            "conveyor_jobs_finished",
            "Jobs this worker finished, by status (done, failed).",
            ("status",),
            registry=metrics.registry,
        )

    @staticmethod
    def _depth_gauge(metrics: Any) -> Any:
        from prometheus_client import Gauge

        return Gauge(
            "conveyor_jobs_queue_depth",
            "Asynchronous prediction requests on the queue: pending, in_flight, queued (both).",
            ("state",),
            registry=metrics.registry,
        )


def _call(job: Submission) -> Any:
    """A :class:`~conveyor.web.pipeline.Call` as the submission's request was: its headers
    (routing attributes, sticky key), its request id, the submitting key as the actor."""
    from conveyor.governance.access import Caller
    from conveyor.web.pipeline import Call

    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in job.headers]
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1/models/{job.model}/predict",
        "query_string": b"",
        "headers": headers,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    call = Call(scope, receive, _route(), {"model": job.model})
    call.request_id = job.request_id or job.id
    call.caller = Caller(None, job.owner)
    return call


_ROUTE: list[Any] = []


def _route() -> Any:
    if not _ROUTE:
        from conveyor.web.routing import Route

        _ROUTE.append(
            Route(
                "POST",
                "/v1/models/{model}/predict",
                _scored_by_the_worker,
                "jobs.work",
                "a job",
                name="job",
            )
        )
    return _ROUTE[0]


async def _scored_by_the_worker(call: Any) -> Any:
    """The job route's endpoint: a job's call goes straight to ``Server.predict`` (see
    :meth:`Worker._score`), never through an app's router, so reaching this is a bug."""
    raise RuntimeError(f"job {call.request_id}: a job is scored by the jobs worker, not routed")
