"""The jobs capability's part of the model server: ``?mode=async`` and ``GET /v1/jobs/{id}``.

::

    POST /v1/models/{m}/predict?mode=async          serving.predict  202 {"job_id", "location"}
    POST /v2/models/{m}/infer  ("parameters": {"mode": "async"} or ?mode=async)
    GET  /v1/jobs/{id}                              jobs.read        the job (owner or admin)

The serving routes name no capability: they hand an async request to
``state.defer`` (:data:`conveyor.serving.http.Defer`), which this module sets
from its route factory. By then the server has resolved the model (an unknown
one is 404) and read the body; :meth:`Submitter.defer` decodes it exactly as
the synchronous route would, checks the rows against the signature of every
version the route can choose (422 naming the column), checks the callback
URL, and only then queues it. A request that is accepted is one a worker can
score: bad input is refused at submission, never failed later.

**NATS down or hung.** Every call this module makes to the queue (a submission, a
job read) waits at most ``jobs.submit_timeout_s`` and goes through the server's
circuit breaker ``jobs`` (:class:`conveyor.breaker.CircuitBreaker`, the one the
cache, rate limiter and store have: ``serving.dependencies.failures`` and
``reset_s``). After that many failures in a row the queue is bypassed: a request
gets ``503 backend_unavailable`` (``seam: jobs``, ``reason: degraded``) at once,
with ``Retry-After`` saying when the next trial submission goes through; the
first trial that succeeds closes the breaker. The gauge
``conveyor_dependency_degraded{dependency="jobs"}`` and the readiness body say so
(the server stays ready: its synchronous predictions still answer). A submission
that timed out is taken back (its record deleted behind it on the same
connection), so one that reaches NATS late is dropped by the workers, not scored
for a caller who was told 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.responses import Response

from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.jobs.events import JOB_ACCEPTED
from conveyor.jobs.queue import JobQueue, Submission, job_location
from conveyor.jobs.records import check_reader, public
from conveyor.web.errors import BadRequest
from conveyor.web.routing import Route

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.breaker import CircuitBreaker
    from conveyor.jobs.settings import JobsSpec
    from conveyor.serving.app import Server
    from conveyor.serving.dense import DenseRows
    from conveyor.serving.pool import Served
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.pipeline import Call

__all__ = [
    "QueueGuard",
    "Submitter",
    "callback_of",
    "check_callback_url",
    "kept_headers",
    "routes",
]

T = TypeVar("T")

log = logging.getLogger("conveyor.jobs")

#: Request headers a job does not keep (credentials, transport).
_DROPPED = frozenset(
    {
        "authorization",
        "x-api-key",
        "cookie",
        "proxy-authorization",
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "accept-encoding",
    }
)
_DEPTH_INTERVAL_S = 2.0


def kept_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The request headers a worker replays (routing attributes, the sticky key, the
    v2 binary header length), credentials left out."""
    kept = []
    for name, value in raw:
        text = name.decode("latin-1").lower()
        if text not in _DROPPED:
            kept.append((text, value.decode("latin-1")))
    return kept


def check_callback_url(url: Any, spec: JobsSpec) -> str | None:
    """``url`` if it is an http(s) URL and callbacks can be signed; None for none."""
    if url is None:
        return None
    from urllib.parse import urlsplit

    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidInputError("callback_url must be a URL string", field="callback_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"callback_url {url!r}: expected an http:// or https:// URL", field="callback_url"
        )
    if spec.callback_secret is None:
        raise InvalidInputError(
            "callback_url needs jobs.callback_secret (CONVEYOR_JOBS__CALLBACK_SECRET): "
            "callbacks are always signed",
            field="callback_url",
        )
    return url


def callback_of(call: Call, found: Any) -> Any:
    """The callback URL: the body's (``callback_url``, v2 ``parameters.callback_url``) or
    the query string's."""
    if found is not None:
        return found
    if b"callback_url=" in call.scope.get("query_string", b""):
        return call.request.query_params.get("callback_url")
    return None


class QueueGuard:
    """The queue calls of one server worker under a timeout and a circuit breaker."""

    def __init__(self, breaker: CircuitBreaker, timeout_s: float) -> None:
        self.breaker = breaker
        self.timeout_s = timeout_s

    async def call(
        self, work: Callable[[], Awaitable[T]], on_timeout: Callable[[], None] | None = None
    ) -> T:
        """``await work()`` unless the breaker is open; BackendUnavailableError (with
        ``retry_after``) when it is, or when the call fails to reach NATS or times out
        (``on_timeout`` runs then). Other errors are NATS answering: they close it."""
        breaker = self.breaker
        if not breaker.allow():
            raise self._refused(
                "degraded", f"the job queue is bypassed after failing: {breaker.last_error}"
            )
        try:
            result = await asyncio.wait_for(work(), self.timeout_s)
        except TimeoutError:
            breaker.failure(f"no answer within {self.timeout_s:g} s")
            if on_timeout is not None:
                on_timeout()
            raise self._refused(
                "timeout", f"the job queue did not answer within {self.timeout_s:g} s"
            ) from None
        except BackendUnavailableError as exc:
            breaker.failure(exc)
            raise self._refused(
                str(exc.context.get("reason") or "unreachable"), exc.message
            ) from exc
        except Exception:
            breaker.success()
            raise
        breaker.success()
        return result

    def _refused(self, reason: str, message: str) -> BackendUnavailableError:
        retry = self.breaker.retry_in() or self.breaker.base_reset_s
        return BackendUnavailableError(message, seam="jobs", reason=reason, retry_after=retry)


class Submitter:
    """Validates deferred requests and queues them (one per server worker)."""

    def __init__(self, server: Server, queue: JobQueue, guard: QueueGuard) -> None:
        self.server = server
        self.queue = queue
        self.spec = queue.spec
        self.guard = guard
        self.accepted = 0

    async def defer(
        self, call: Call, model: str, version: int | None, protocol: str, body: bytes
    ) -> Response:
        callback, rows, body = self._decode(call, protocol, body)
        callback_url = check_callback_url(callback_of(call, callback), self.spec)
        await self._check_rows(call, model, version, rows)
        job = Submission(
            model=model,
            version=version,
            protocol=protocol,
            owner=call.actor,
            headers=kept_headers(call.scope["headers"]),
            request_id=call.request_id,
            callback_url=callback_url,
        )
        record = await self.guard.call(
            lambda: self.queue.submit(job, body), lambda: self.queue.take_back(job.id)
        )
        self.accepted += 1
        # A control event waits for room when the log's buffer is full: in a thread, so a
        # backed-up event sink slows acceptance down rather than stalling the event loop.
        await asyncio.to_thread(
            self.server.events.record,
            JOB_ACCEPTED,
            subject=model,
            subject_version=None if version is None else str(version),
            request_id=call.request_id,
            actor=call.actor,
            payload={"job_id": job.id, "model": model},
        )
        location = job_location(job.id)
        return Response(
            orjson.dumps(
                {
                    "job_id": job.id,
                    "status": record["status"],
                    "model": model,
                    "location": location,
                    "request_id": call.request_id,
                }
            ),
            202,
            {"location": location},
            "application/json",
        )

    def _decode(
        self, call: Call, protocol: str, body: bytes
    ) -> tuple[Any, Callable[[Served], pa.Table | DenseRows], bytes]:
        """The callback the body names, the rows for a version, and the body to queue."""
        if protocol == "native":
            from conveyor.serving.native import decode_native_request

            callback = None
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(
                    InvalidInputError(f"the body is not valid JSON: {exc}", field="body")
                ) from exc
            if isinstance(document, dict) and "callback_url" in document:
                callback = document.pop("callback_url")
                body = orjson.dumps(document)
            try:
                decoded = decode_native_request(body)
            except InvalidInputError as exc:
                raise BadRequest(exc) from exc
            return callback, lambda served: decoded.rows_for(served.dense), body
        from conveyor.serving import protocol_v2 as v2

        try:
            header = v2.parse_header_length(call.request.headers.get(v2.HEADER_LENGTH))
            infer = v2.decode_infer_request(body, header)
        except InvalidInputError as exc:
            raise BadRequest(exc) from exc

        def table_for(served: Served) -> pa.Table:
            signature = served.loaded.signature
            return v2.table_from_inputs(infer.inputs, signature.names if signature else None)

        return infer.parameters.get("callback_url"), table_for, body

    async def _check_rows(
        self,
        call: Call,
        model: str,
        version: int | None,
        rows: Callable[[Served], pa.Table | DenseRows],
    ) -> None:
        """The rows fit every version the request can reach (422 naming the column)."""
        server = self.server
        if version is not None:
            server.check_named_version(call, model, version)
            numbers: tuple[int, ...] = (version,)
        else:
            numbers = server.route_of(model).policy.serving_versions()
        for number in numbers:
            served = await server.served(model, number)
            table: Any = rows(served)
            if server.enrich is not None:
                # As Server.predict does: features joined by entity key come first (a
                # version trained on a feature service needs them to pass its signature).
                from conveyor.serving.app import Enriched

                enriched = await server.enrich(model, served.version, table)
                table = enriched.table if isinstance(enriched, Enriched) else enriched
            served.enforce(table)


def routes(context: AppContext) -> Contribution:
    """The async hook on the server's shared state and the jobs routes."""
    from conveyor.jobs.settings import jobs_of
    from conveyor.web.app import Contribution

    server: Server | None = getattr(context.state, "server", None)
    spec = jobs_of(context.project.spec)
    queue = JobQueue(spec)
    guard = QueueGuard(_breaker(server), spec.submit_timeout_s)
    if server is not None:
        submitter = Submitter(server, queue, guard)
        context.state.defer = submitter.defer
    depth = _depth_gauge(context)
    refresher: list[asyncio.Task[None]] = []

    async def get_job(call: Call) -> Response:
        record, _ = await guard.call(lambda: queue.get(call.params["id"]))
        caller = call.caller
        check_reader(record, call.actor, caller.key if caller is not None else None)
        return Response(orjson.dumps(public(record)), media_type="application/json")

    async def refresh() -> None:
        # The depth is read once this worker has opened the queue (its first async request
        # or job read): a server nobody sends async requests to never dials NATS.
        while True:
            await asyncio.sleep(_DEPTH_INTERVAL_S)
            if queue._kv is None:
                continue
            try:
                found = await queue.depth()
            except BackendUnavailableError:
                continue
            except Exception as exc:
                log.debug("queue depth: %s", exc)
                continue
            for state in ("pending", "in_flight", "queued"):
                depth.labels(state).set(found[state])

    async def startup() -> None:
        refresher.append(asyncio.create_task(refresh()))

    async def shutdown() -> None:
        for task in refresher:
            task.cancel()
        await queue.close()

    table = [
        Route(
            "GET",
            "/v1/jobs/{id}",
            get_job,
            "jobs.read",
            "An asynchronous prediction job: status, result or error, timing",
            tags=("jobs",),
            errors=(404, 503),
        )
    ]
    return Contribution(table, startup=startup, shutdown=shutdown)


def _breaker(server: Server | None) -> CircuitBreaker:
    """The server's breaker ``jobs`` (its gauge and readiness detail come with it), or one
    of its own for an app without the model server."""
    deps = server.dependencies if server is not None else None
    if deps is not None:
        return deps.breaker("jobs")
    from conveyor.breaker import CircuitBreaker

    return CircuitBreaker("jobs")


def _depth_gauge(context: AppContext) -> Any:
    from prometheus_client import Gauge

    kw: dict[str, Any] = {"registry": context.metrics.registry}
    if context.metrics.multiprocess:
        kw["multiprocess_mode"] = "max"  # every worker reads the same stream
    return Gauge(
        "conveyor_jobs_queue_depth",
        "Asynchronous prediction requests on the queue: pending (no worker took them yet), "
        "in_flight (taken, not acknowledged), queued (both): the workers' autoscaling signal.",
        ("state",),
        **kw,
    )
