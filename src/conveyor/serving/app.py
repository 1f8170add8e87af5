"""The model server's ASGI app: native JSON API, Open Inference Protocol v2, routing, metrics.

::

    app = create_app(project)           # an open conveyor.Project
    uvicorn.run(app)                    # or: conveyor serve

A prediction request goes: key and role (cached hash lookup) -> rate limit
-> body size -> decode (400 when undecodable) -> route decision (sticky
key, flags, weights) -> signature (422 naming the column) -> cache ->
batcher (503 + Retry-After when full) -> response. Shadow copies run after
the response is computed, as tasks nobody awaits; their outputs go to the
event log next to the primary's. See ``docs/serving.md``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.errors import (
    AuthenticationError,
    ConveyorError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ThrottledError,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.governance.access import Caller
    from conveyor.project import Project
    from conveyor.serving.pool import Served
    from conveyor.serving.routes import Decision

__all__ = ["STATUS", "create_app"]

log = logging.getLogger("conveyor.serving")

#: Error code -> HTTP status. Anything else that is a ConveyorError is a 400.
STATUS = {
    "invalid_input": 422,
    "payload_too_large": 413,
    "not_found": 404,
    "unauthenticated": 401,
    "forbidden": 403,
    "access_denied": 403,
    "rate_limited": 429,
    "overloaded": 503,
    "throttled": 503,
    "backend_unavailable": 503,
    "closed": 503,
    "concurrent_update": 409,
    "already_exists": 409,
    "conflict": 409,
    "artifact_tampered": 500,
    "gate_failed": 409,
}


def error_response(exc: ConveyorError, status: int | None = None) -> Response:
    """The JSON error body (stable ``code``) with its status and ``Retry-After`` when throttled."""
    body = exc.to_dict()
    headers = {}
    if isinstance(exc, ThrottledError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    return Response(
        orjson.dumps(body, default=str),
        status_code=status or STATUS.get(exc.code, 400),
        media_type="application/json",
        headers=headers,
    )


class _BadRequest(Exception):
    """A body that could not be decoded at all: 400, not 422."""

    def __init__(self, error: InvalidInputError) -> None:
        self.error = error


class Server:
    """Everything one worker holds; the endpoints are its methods."""

    def __init__(self, project: Project, enrich: Enrich | None = None) -> None:
        from conveyor.governance.access import Access
        from conveyor.serving.cache import PredictionCache
        from conveyor.serving.metrics import ServerMetrics
        from conveyor.serving.pool import ModelPool
        from conveyor.serving.route_store import RouteStore
        from conveyor.serving.settings import serving_of
        from conveyor.serving.watcher import RouteWatcher

        spec = serving_of(project.spec)
        self.spec = spec
        self.project = project
        self.events = project.events
        self.registry = project.registry
        self.keys = project.keys
        self.access = Access.for_server(self.keys, spec.auth)
        self.limiter = project.backend("ratelimit")
        self.metrics = ServerMetrics()
        self.cache = PredictionCache(project.cache, ttl=spec.cache_ttl_s) if spec.cache else None
        self.pool = ModelPool(self.registry, spec.batching, on_batch=self.metrics.on_batch)
        self.routes = RouteStore(project.store, project.events, self.registry)
        self.watcher = RouteWatcher(
            self.routes, self.pool, cache=self.cache, interval_s=spec.poll_interval_s
        )
        self.enrich = enrich
        self._shadows: set[asyncio.Task[None]] = set()
        self._tracer: Any = None
        self.started = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------

    async def startup(self) -> None:
        from opentelemetry import trace

        self._tracer = trace.get_tracer("conveyor.serving")
        await self.watcher.start()
        # Everything loaded so far (libraries, models) lives as long as the worker:
        # out of the collector's sight, a full collection no longer walks it, which
        # is what stalled requests for tens of milliseconds under load. (No collect
        # first: it would add 0.1 s to start-up to free a few start-up cycles.)
        gc.freeze()
        log.info(
            "ready: %s",
            orjson.dumps({m: r.policy.serving_versions() for m, r in self.watcher.routes.items()}),
        )

    async def shutdown(self) -> None:
        """Stop watching, drain the batchers and shadow copies, flush the event log."""
        await self.watcher.stop()
        if self._shadows:
            await asyncio.wait(self._shadows, timeout=5)
        await self.pool.close()
        self.events.flush()

    # -- auth --------------------------------------------------------------------

    def authorize(self, request: Request, action: str) -> Caller:
        headers = request.headers
        token = headers.get("x-api-key")
        if token is None:
            value = headers.get("authorization")
            if value and value[:7].lower() == "bearer ":
                token = value[7:].strip()
        caller = self.access.authorize(token, action)
        key = caller.key
        if key is not None and key.limited:
            self.limiter.take(key.id, key.rate_per_second, key.burst)
        return caller

    async def body(self, request: Request) -> bytes:
        limit = self.spec.max_body_bytes
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise PayloadTooLargeError(
                f"the body has {declared} bytes; this server takes at most {limit}",
                field="body",
                limit=limit,
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"the body exceeds {limit} bytes", field="body", limit=limit
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # -- predicting --------------------------------------------------------------

    def route_of(self, model: str) -> Any:
        route = self.watcher.routes.get(model)
        if route is None:
            raise NotFoundError(
                f"model {model!r} is not deployed on this server (conveyor deploy {model}@N)",
                model=model,
            )
        return route

    async def served(self, model: str, number: int) -> Served:
        served = self.pool.get(model, number)
        if served is not None:
            return served
        self.registry.get(model, number)  # NotFoundError naming the version, before a load
        return await self.pool.ensure(model, number)

    async def predict(
        self,
        request: Request,
        model: str,
        rows: pa.Table | Callable[[Served], pa.Table],
        attributes: dict[str, Any],
        version: int | None,
        request_id: str,
        key: Caller,
    ) -> tuple[Any, Served, Decision | None, bool]:
        """Route, check, look up the cache, predict; schedule shadows. The hot path.

        ``rows`` is the request's table, or builds it for the version the route
        chose (a v2 matrix needs that version's column names).
        """

        started = time.perf_counter()
        decision: Decision | None
        if version is None:
            route = self.route_of(model)
            sticky = route.policy.sticky_header
            attrs = {k: str(v) for k, v in attributes.items()}
            for name, value in request.headers.items():
                if name.startswith("x-conveyor-attr-"):
                    attrs[name[16:]] = value
            decision = route.decide(
                model=model,
                key=request.headers.get(sticky) if sticky else None,
                attributes=attrs,
                rand=random.random(),
            )
            served = await self.served(model, decision.version)
            cache_on = route.policy.cache
        else:
            decision, cache_on = None, False
            served = await self.served(model, version)
        table = rows(served) if callable(rows) else rows
        if self.enrich is not None:
            table = await self.enrich(model, served.version.number, table)
        table = served.enforce(table)
        arm = decision.arm if decision else "direct"
        number = str(served.version.number)
        digest = None
        output = None
        cached = False
        if self.cache is not None and cache_on:
            from conveyor.serving.cache import input_digest

            digest = input_digest(table)
            output = self.cache.get(served.version.id, table, digest=digest)
            cached = output is not None
            self.metrics.cache.labels(model, number, "hit" if cached else "miss").inc()
        if output is None:
            output = await served.batcher.submit(table)
            if self.cache is not None and cache_on:
                self.cache.put(served.version.id, table, output, digest=digest)
        elapsed = time.perf_counter() - started
        ok, seconds = self.metrics.answered(model, number, arm)
        ok.inc()
        seconds.observe(elapsed)
        self._record(
            model, served, decision, table, output, request_id, key, elapsed, cached, digest
        )
        if decision is not None and decision.shadow:
            for shadow in decision.shadow:
                task = asyncio.create_task(
                    self._shadow(model, shadow, table, output, served, request_id)
                )
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        return output, served, decision, cached

    def _record(
        self,
        model: str,
        served: Served,
        decision: Decision | None,
        table: pa.Table,
        output: Any,
        request_id: str,
        key: Caller,
        elapsed: float,
        cached: bool,
        digest: str | None,
    ) -> None:
        payload: dict[str, Any] = {
            "version_id": served.version.id,
            "arm": decision.arm if decision else "direct",
            "flag": decision.flag if decision else None,
            "latency_ms": round(elapsed * 1000, 3),
            "cached": cached,
            "rows": table.num_rows,
            "output": _plain(output),
        }
        if digest is not None:
            payload["input_digest"] = digest
        rate = self.spec.payload_sample_rate
        if rate and random.random() < rate:
            payload["input"] = table.to_pylist()
        self.events.emit(
            "prediction",
            subject=model,
            subject_version=str(served.version.number),
            request_id=request_id,
            actor=key.actor,
            payload=payload,
        )

    async def _shadow(
        self,
        model: str,
        number: int,
        table: pa.Table,
        primary: Any,
        primary_served: Served,
        request_id: str,
    ) -> None:
        started = time.perf_counter()
        try:
            served = await self.served(model, number)
            output = await served.batcher.submit(served.enforce(table))
            status = "ok"
            error = None
        except Exception as exc:  # a shadow's failure is data, never the caller's problem
            output, status, error = None, "error", f"{type(exc).__name__}: {exc}"
        self.metrics.shadow.labels(model, str(number), status).inc()
        plain_primary, plain_shadow = _plain(primary), _plain(output)
        self.events.emit(
            "prediction.shadow",
            subject=model,
            subject_version=str(number),
            request_id=request_id,
            payload={
                "primary_version": primary_served.version.number,
                "primary_output": plain_primary,
                "output": plain_shadow,
                "agree": plain_primary == plain_shadow,
                "status": status,
                "error": error,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_numpy"):
        return value.to_numpy().tolist()
    return value


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128:
        return given
    return uuid.uuid4().hex


Handler = Callable[[Request], Awaitable[Response]]


def _open_caller() -> Caller:
    from conveyor.governance.access import Caller

    return Caller(None, "anonymous")


#: ``enrich(model, version, rows) -> rows``: where a feature lookup by entity key (an
#: online store) joins the request before the signature check; None: requests carry
#: every feature themselves.
Enrich = Callable[[str, int, "pa.Table"], Awaitable["pa.Table"]]


def create_app(
    project: Project,
    *,
    on_close: Callable[[], None] | None = None,
    enrich: Enrich | None = None,
) -> Any:
    """The ASGI app of one worker over ``project`` (see the module docstring).

    A Starlette app behind :class:`_FastPredict`; ``app.state.server`` is the
    :class:`Server` (routes, pool, metrics).

    ``on_close`` runs last at shutdown (after in-flight requests, batch
    queues and shadow copies are drained and the event log is flushed).
    """
    from contextlib import asynccontextmanager

    from conveyor._version import __version__
    from conveyor.registry.versions import version_number
    from conveyor.serving import protocol_v2 as v2
    from conveyor.serving.native import decode_native_request, encode_predictions
    from conveyor.serving.openapi import openapi_document

    server = Server(project, enrich)
    openapi = orjson.dumps(openapi_document(__version__))

    def _failed(
        request: Request, request_id: str, exc: ConveyorError, status: int | None
    ) -> Response:
        server.metrics.errors.labels(exc.code).inc()
        response = error_response(exc, status)
        response.headers["x-request-id"] = request_id
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        log.log(
            level,
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            response.status_code,
            exc.code,
            exc.message,
            extra={"request_id": request_id},
        )
        return response

    def guarded(action: str, fn: Callable[[Request, Caller], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            request_id = request.state.request_id = _request_id(request)
            try:
                # Probes (load balancers, Kubernetes) carry no key: health is open.
                key = _open_caller() if action == "health" else server.authorize(request, action)
                return await fn(request, key)
            except _BadRequest as bad:
                return _failed(request, request_id, bad.error, 400)
            except ConveyorError as exc:
                return _failed(request, request_id, exc, None)
            except Exception:
                log.exception(
                    "unexpected error on %s", request.url.path, extra={"request_id": request_id}
                )
                server.metrics.errors.labels("internal").inc()
                return JSONResponse(
                    {
                        "code": "internal",
                        "message": "the server failed; see its log",
                        "request_id": request_id,
                    },
                    status_code=500,
                    headers={"x-request-id": request_id},
                )

        return endpoint

    def _json(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body, default=str), status, media_type="application/json")

    def _version_param(request: Request) -> int | None:
        raw = request.path_params.get("version") or request.query_params.get("version")
        if raw is None:
            return None
        number = version_number(raw)
        if number is None:
            raise NotFoundError(f"version {raw!r} is not a version number", version=str(raw))
        return number

    # -- native ---------------------------------------------------------------------

    async def native_predict(request: Request, key: Caller) -> Response:
        model = request.path_params["model"]
        request_id = request.state.request_id
        body = await server.body(request)
        try:
            decoded = decode_native_request(body)
        except InvalidInputError as exc:
            raise _BadRequest(exc) from exc
        span = server._tracer.start_as_current_span("predict", attributes={"model": model})
        with span as current:
            output, served, decision, cached = await server.predict(
                request,
                model,
                decoded.table,
                dict(decoded.attributes),
                _version_param(request),
                decoded.id or request_id,
                key,
            )
            arm = decision.arm if decision else "direct"
            current.set_attribute("model.version", served.version.number)
            current.set_attribute("route.arm", arm)
            if decision is not None and decision.flag:
                current.set_attribute("route.flag", decision.flag)
        content = encode_predictions(
            output,
            model=model,
            version=served.version.number,
            arm=arm,
            request_id=decoded.id or request_id,
            cached=cached,
        )
        return Response(
            content, media_type="application/json", headers={"x-request-id": request_id}
        )

    async def list_models(request: Request, key: Caller) -> Response:
        return _json(
            {
                "models": [
                    {
                        "name": m,
                        "revision": server.watcher.revisions.get(m),
                        "policy": r.policy.to_dict(),
                    }
                    for m, r in sorted(server.watcher.routes.items())
                ]
            }
        )

    async def show_route(request: Request, key: Caller) -> Response:
        state = server.routes.get(request.path_params["model"])
        return _json(state.to_dict())

    async def set_route(request: Request, key: Caller) -> Response:
        from conveyor.serving.routes import RoutePolicy

        body = await server.body(request)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
        if not isinstance(document, dict) or "policy" not in document:
            raise _BadRequest(
                InvalidInputError('the body is {"policy": {...}, "reason": "..."}', field="policy")
            )
        policy = RoutePolicy.from_dict(document["policy"])
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(
            None,
            lambda: server.routes.set(
                request.path_params["model"],
                policy,
                actor=key.actor,
                reason=document.get("reason"),
                expected_revision=document.get("expected_revision"),
            ),
        )
        return _json(state.to_dict())

    async def rollback(request: Request, key: Caller) -> Response:
        reason = request.query_params.get("reason")
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(
            None,
            lambda: server.routes.rollback(
                request.path_params["model"], actor=key.actor, reason=reason
            ),
        )
        await server.watcher.refresh()  # this worker switches now; the others within a poll
        return _json(state.to_dict())

    # -- Open Inference Protocol v2 ---------------------------------------------------

    async def v2_server(request: Request, key: Caller) -> Response:
        return _json(v2.server_metadata(__version__, ["binary_tensor_data"]))

    async def live(request: Request, key: Caller) -> Response:
        return _json({"live": True})

    async def ready(request: Request, key: Caller) -> Response:
        ok = server.watcher.ready
        return _json({"ready": ok}, 200 if ok else 503)

    async def _metadata_of(request: Request) -> tuple[str, Served]:
        model = request.path_params["model"]
        version = _version_param(request)
        if version is None:
            route = server.route_of(model)
            version = route.policy.serving_versions()[0]
        return model, await server.served(model, version)

    async def v2_model(request: Request, key: Caller) -> Response:
        model, served = await _metadata_of(request)
        route = server.watcher.routes.get(model)
        versions = route.policy.serving_versions() if route else (served.version.number,)
        inputs = [
            v2.TensorMetadata(c.name, v2.datatype_for_arrow(c.type), (-1,))
            for c in (served.loaded.signature.inputs if served.loaded.signature else ())
        ]
        outputs = [v2.TensorMetadata("predict", "FP64", (-1,))]
        return _json(v2.model_metadata(model, versions, served.version.flavor, inputs, outputs))

    async def v2_model_ready(request: Request, key: Caller) -> Response:
        model = request.path_params["model"]
        version = _version_param(request)
        route = server.watcher.routes.get(model)
        ok = route is not None if version is None else server.pool.get(model, version) is not None
        if not ok:
            raise NotFoundError(f"model {model!r} is not ready here", model=model)
        return _json({"name": model, "ready": True})

    async def v2_infer(request: Request, key: Caller) -> Response:
        model = request.path_params["model"]
        request_id = request.state.request_id
        body = await server.body(request)
        try:
            header = v2.parse_header_length(request.headers.get(v2.HEADER_LENGTH))
            decoded = v2.decode_infer_request(body, header)
        except InvalidInputError as exc:
            raise _BadRequest(exc) from exc
        version = _version_param(request)

        def table_for(served: Served) -> pa.Table:
            # A [n, k] matrix is read in the columns of the version the route chose.
            signature = served.loaded.signature
            try:
                return v2.table_from_inputs(decoded.inputs, signature.names if signature else None)
            except InvalidInputError as exc:
                raise _BadRequest(exc) from exc

        output, served, decision, _cached = await server.predict(
            request,
            model,
            table_for,
            dict(decoded.parameters.get("attributes") or {}),
            version,
            decoded.id or request_id,
            key,
        )
        outputs = decoded.select_outputs(v2.outputs_from_predictions(output))
        content, headers = v2.encode_infer_response(
            model, served.version.number, decoded.id, outputs, binary=decoded.binary_outputs()
        )
        headers["x-request-id"] = request_id
        if decision is not None:
            headers["x-conveyor-arm"] = decision.arm
        return Response(content, headers=headers)

    # -- operations ---------------------------------------------------------------

    async def metrics(request: Request, key: Caller) -> Response:
        for served in server.pool.served:
            server.metrics.queue_depth.labels(served.version.model, str(served.version.number)).set(
                served.batcher.queue_depth
            )
        body, media_type = server.metrics.render()
        return Response(body, media_type=media_type)

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()
            if on_close is not None:
                on_close()

    predict_endpoint = guarded("serving.predict", native_predict)
    routes = [
        Route("/v1/models/{model}/predict", predict_endpoint, methods=["POST"]),
        Route("/v1/models", guarded("serving.read", list_models), methods=["GET"]),
        Route("/v1/models/{model}/route", guarded("serving.read", show_route), methods=["GET"]),
        Route("/v1/models/{model}/route", guarded("serving.route", set_route), methods=["PUT"]),
        Route(
            "/v1/models/{model}/rollback", guarded("serving.rollback", rollback), methods=["POST"]
        ),
        Route("/v2", guarded("serving.read", v2_server), methods=["GET"]),
        Route("/v2/health/live", guarded("health", live), methods=["GET"]),
        Route("/v2/health/ready", guarded("health", ready), methods=["GET"]),
        Route("/v2/models/{model}", guarded("serving.read", v2_model), methods=["GET"]),
        Route(
            "/v2/models/{model}/versions/{version}",
            guarded("serving.read", v2_model),
            methods=["GET"],
        ),
        Route("/v2/models/{model}/ready", guarded("serving.read", v2_model_ready), methods=["GET"]),
        Route(
            "/v2/models/{model}/versions/{version}/ready",
            guarded("serving.read", v2_model_ready),
            methods=["GET"],
        ),
        Route("/v2/models/{model}/infer", guarded("serving.predict", v2_infer), methods=["POST"]),
        Route(
            "/v2/models/{model}/versions/{version}/infer",
            guarded("serving.predict", v2_infer),
            methods=["POST"],
        ),
        Route("/metrics", guarded("serving.read", metrics), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return _FastPredict(app, predict_endpoint)


class _FastPredict:
    """``POST /v1/models/{m}/predict`` straight to its endpoint; everything else to Starlette.

    The endpoint already turns every error into a JSON response, so the
    router and Starlette's two exception middlewares only cost time on the
    path that carries nearly all the traffic.
    """

    def __init__(self, app: Starlette, predict: Handler) -> None:
        self.app = app
        self.state = app.state
        self.predict = predict

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/v1/models/") and path.endswith("/predict"):
                model = path[11:-8]
                if model and "/" not in model:
                    scope["path_params"] = {"model": model}
                    scope["app"] = self.app
                    response = await self.predict(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
