"""The model server's routes: native predictions and the live routes of models.

The serving capability contributes these (with the Open Inference Protocol
v2 routes of :mod:`conveyor.serving.http_v2`) to the app of
:mod:`conveyor.web.app`; each route names the action a caller's role must
allow, and the OpenAPI document is generated from this table.

::

    POST /v1/models/{model}/predict     serving.predict   records or columns -> predictions
                                                          (?version=N or ?version=ALIAS: that
                                                          version; on no route: deployer;
                                                          ?mode=async: 202 and a job, when a
                                                          capability takes deferred requests)
    GET  /v1/models                     serving.read      deployed models and their routes
    GET  /v1/models/{model}/route       serving.read      the live route, with its revision
    PUT  /v1/models/{model}/route       serving.route     set it (a new revision; versions it
                                                          adds are loaded and warmed first, 409
                                                          version_refused when one cannot serve)
    POST /v1/models/{model}/rollback    serving.rollback  restore the previous one
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError, ModelUnavailableError, NotFoundError
from conveyor.serving.pool import refused
from conveyor.web.errors import BadRequest
from conveyor.web.routing import Route

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.registry.versions import ModelVersion
    from conveyor.serving.app import Enrich, Enriched, Server
    from conveyor.serving.dense import DenseRows
    from conveyor.serving.pool import Served
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.pipeline import Call

__all__ = [
    "NATIVE_SCHEMA",
    "Defer",
    "defer",
    "json_response",
    "routes",
    "version_or_alias",
    "version_param",
]

_SCALAR = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}
#: What a native prediction request may hold.
NATIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "records": {"type": "array", "items": {"type": "object", "additionalProperties": _SCALAR}},
        "columns": {"type": "object", "additionalProperties": {"type": "array", "items": _SCALAR}},
        "attributes": {"type": "object", "additionalProperties": _SCALAR},
        "id": {"type": "string"},
    },
}
_ROUTE_BODY = {
    "type": "object",
    "required": ["policy"],
    "properties": {
        "policy": {"type": "object"},
        "reason": {"type": "string"},
        "expected_revision": {"type": "integer"},
    },
}
_VERSION_QUERY = {
    "name": "version",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "Predict with this version, a number or an alias (champion), bypassing "
    "the route; a version on no route needs serving.predict_unrouted (deployer).",
}
_MODE_QUERY = {
    "name": "mode",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["sync", "async"]},
    "description": "async: queue the request and answer 202 with a job id and a Location "
    "(GET /v1/jobs/{id}); needs the jobs capability. Default sync.",
}

#: ``defer(call, model, version, protocol, body) -> Response``: takes a validated request
#: for later (``?mode=async``) and answers at once (202 and a job). The server names no
#: capability that does it: one sets ``state.defer`` on the app's shared state from its
#: route factory (conveyor.jobs does), and without one ``mode=async`` is refused.
Defer = Callable[["Call", str, "int | None", str, bytes], Awaitable[Response]]


def request_mode(call: Call) -> str:
    """``?mode=``: sync (the default) or async; InvalidInputError for anything else. Read
    from the raw query string only when it names a mode (the hot path builds nothing)."""
    if b"mode=" not in call.scope.get("query_string", b""):
        return "sync"
    mode = call.request.query_params.get("mode", "sync")
    if mode not in ("sync", "async"):
        raise InvalidInputError(f"mode {mode!r}: expected sync or async", field="mode")
    return mode


async def defer(
    state: Any, call: Call, model: str, version: int | None, protocol: str, body: bytes
) -> Response:
    """Hand a request to the app's :data:`Defer` (``state.defer``), or refuse it: no
    capability takes deferred requests in this server."""
    handler: Defer | None = getattr(state, "defer", None)
    if handler is None:
        raise InvalidInputError(
            "mode=async needs the jobs capability (conveyor.jobs), which this server lacks",
            field="mode",
        )
    return await handler(call, model, version, protocol, body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, default=str), status, headers, "application/json")


def version_param(call: Call) -> int | None:
    """The version a request names (path ``{version}`` or ``?version=``), or None."""
    from conveyor.registry.versions import version_number

    raw = call.params.get("version")
    if raw is None:
        raw = call.request.query_params.get("version")
    if raw is None:
        return None
    number = version_number(raw)
    if number is None:
        raise NotFoundError(f"version {raw!r} is not a version number", version=str(raw))
    return number


async def version_or_alias(server: Server, call: Call, model: str) -> int | None:
    """The version ``?version=`` names: a number, or an alias (``champion``) resolved
    through the registry (in a thread: a store read), or None when none is named."""
    from conveyor.registry.versions import version_number

    raw = call.request.query_params.get("version")
    if raw is None:
        return None
    number = version_number(raw)
    if number is not None:
        return number
    if raw.isdigit() or raw == "":
        raise NotFoundError(f"version {raw!r} is not a version number", version=raw)
    found: ModelVersion = await asyncio.to_thread(server.registry.get, model, raw)
    return found.number


def routes(context: AppContext) -> Contribution:
    """The serving capability's part of the app: the worker's state and its routes."""
    from conveyor.serving import http_v2
    from conveyor.serving.app import Server
    from conveyor.web.app import Contribution

    server = Server(
        context.project,
        context.metrics,
        enrich=context.options.get("enrich"),
        dependencies=context.dependencies,
    )
    context.state.server = server
    table = [*_native(server, context.state), *http_v2.routes(server, context.state)]

    async def startup() -> None:
        if server.enrich is None:  # create_app(enrich=...) replaces the contributed ones
            server.enrich = chained(context.state.enrichers)
        await server.startup()

    return Contribution(table, startup=startup, shutdown=server.shutdown)


def chained(enrichers: list[Enrich]) -> Enrich | None:
    """One enricher running ``enrichers`` in order (their records merged), or None."""
    from conveyor.serving.app import Enriched

    if len(enrichers) <= 1:
        return enrichers[0] if enrichers else None

    async def enrich(model: str, version: ModelVersion, table: pa.Table) -> pa.Table | Enriched:
        records: dict[str, Any] = {}
        for one in enrichers:
            got = await one(model, version, table)
            if isinstance(got, Enriched):
                table = got.table
                records.update(got.record or {})
            else:
                table = got
        return Enriched(table, records or None)

    return enrich


def _native(server: Server, state: Any = None) -> list[Route]:
    from conveyor.serving.native import decode_native_request, encode_predictions

    async def predict(call: Call) -> Response:
        model = call.params["model"]
        request_id = call.request_id
        version = await version_or_alias(server, call, model)
        await server.check_model(model, version)
        body = await call.body()
        if request_mode(call) == "async":
            return await defer(state, call, model, version, "native", body)
        try:
            decoded = decode_native_request(body)
        except InvalidInputError as exc:
            raise BadRequest(exc) from exc

        def rows(served: Served) -> pa.Table | DenseRows:
            try:
                return decoded.rows_for(served.dense)
            except InvalidInputError as exc:
                raise BadRequest(exc) from exc

        output, served, decision, cached = await server.predict(
            call,
            model,
            rows,
            dict(decoded.attributes),
            version,
            decoded.id or request_id,
        )
        arm = decision.arm if decision else "direct"
        span = call.span
        if span is not None:
            span.set_attribute("model", model)
            span.set_attribute("model.version", served.version.number)
            span.set_attribute("route.arm", arm)
            if decision is not None and decision.flag:
                span.set_attribute("route.flag", decision.flag)
        content = encode_predictions(
            output,
            model=model,
            version=served.version.number,
            arm=arm,
            request_id=decoded.id or request_id,
            cached=cached,
        )
        return Response(content, media_type="application/json")

    async def list_models(call: Call) -> Response:
        watcher = server.watcher
        return json_response(
            {
                "models": [
                    {"name": m, "revision": watcher.revisions.get(m), "policy": r.policy.to_dict()}
                    for m, r in sorted(watcher.routes.items())
                ]
            }
        )

    async def show_route(call: Call) -> Response:
        routes = server.routes
        state = await asyncio.to_thread(routes.get, call.params["model"])
        degraded = await asyncio.to_thread(routes.health, state)
        return json_response({**state.to_dict(), "degraded": degraded})

    async def set_route(call: Call) -> Response:
        from conveyor.serving.routes import RoutePolicy

        body = await call.body()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
        if not isinstance(document, dict) or "policy" not in document:
            raise BadRequest(
                InvalidInputError('the body is {"policy": {...}, "reason": "..."}', field="policy")
            )
        policy = RoutePolicy.from_dict(document["policy"])
        model = call.params["model"]
        routes = server.routes
        await asyncio.to_thread(routes.check_versions, model, policy)
        # Verified by loading into this worker's pool (hash checked, warmed up): the
        # route's versions are then ready here when the change is committed.
        for number in await asyncio.to_thread(routes.new_versions, model, policy):
            try:
                await server.pool.ensure(model, number)
            except ModelUnavailableError as exc:
                raise refused(exc) from None
        state = await asyncio.to_thread(
            routes.set,
            model,
            policy,
            actor=call.actor,
            reason=document.get("reason"),
            expected_revision=document.get("expected_revision"),
        )
        await server.watcher.refresh()
        return json_response(state.to_dict())

    async def rollback(call: Call) -> Response:
        reason = call.request.query_params.get("reason")
        state = await asyncio.to_thread(
            server.routes.rollback, call.params["model"], actor=call.actor, reason=reason
        )
        await server.watcher.refresh()  # this worker switches now; the others within a poll
        return json_response(state.to_dict())

    tags = ("models",)
    return [
        Route(
            "POST",
            "/v1/models/{model}/predict",
            predict,
            "serving.predict",
            "Predict (native JSON: records or columns)",
            body=NATIVE_SCHEMA,
            query=(_VERSION_QUERY, _MODE_QUERY),
            tags=tags,
            errors=(404, 503),
            on_failure=server.failed,  # a prediction.failed event per error
        ),
        Route("GET", "/v1/models", list_models, "serving.read", "Deployed models", tags=tags),
        Route(
            "GET",
            "/v1/models/{model}/route",
            show_route,
            "serving.read",
            "The model's live route",
            tags=tags,
            errors=(404,),
        ),
        Route(
            "PUT",
            "/v1/models/{model}/route",
            set_route,
            "serving.route",
            "Set the model's route (a new revision)",
            body=_ROUTE_BODY,
            tags=tags,
            errors=(404, 409, 422),
        ),
        Route(
            "POST",
            "/v1/models/{model}/rollback",
            rollback,
            "serving.rollback",
            "Restore the previous route",
            query=(
                {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}},
            ),
            tags=tags,
            errors=(404, 409),
        ),
    ]
