"""An ASGI app assembled from the routes capabilities contribute, behind one pipeline.

::

    app = build_app(project, title="Conveyor", auth="required", max_body_bytes=8 << 20)
    uvicorn.run(app)

Each capability that declares ``routes`` (a ``module:factory`` string) gets a
call ``factory(context)`` at build time and returns a :class:`Contribution`:
its routes, and what to run at start-up and shut-down. The app adds its own
few routes (``/openapi.json``, ``/metrics``), matches every request against
the whole table (:mod:`conveyor.web.routing`) and sends it through the chain
of :mod:`conveyor.web.pipeline`; an unknown path answers 404 and a known path
with another method 405, both as JSON like every other error.

Start-ups run in capability order when the server starts (ASGI lifespan),
shut-downs in reverse when it stops, then ``on_close``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import NotFoundError
from conveyor.web.metrics import WebMetrics
from conveyor.web.pipeline import (
    Authenticate,
    Call,
    InputLimits,
    Observe,
    RateLimit,
    Stage,
    compose,
)
from conveyor.web.routing import Route, Router

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.web.dependencies import Dependencies, DependencyLimits

__all__ = ["AppContext", "Contribution", "WebApp", "build_app"]

log = logging.getLogger("conveyor.web")

Hook = Callable[[], Awaitable[None]]


@dataclass
class AppContext:
    """What a capability's route factory gets: the project, the app's shared metrics and
    state, and the options its caller passed (``build_app(..., options={...})``)."""

    project: Project
    metrics: WebMetrics
    state: SimpleNamespace
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The request path's services behind timeouts and breakers (None: not guarded).
    dependencies: Dependencies | None = None


@dataclass
class Contribution:
    """A capability's part of an app."""

    routes: Sequence[Route]
    startup: Hook | None = None
    shutdown: Hook | None = None
    #: A request enricher for model predictions (:data:`conveyor.serving.app.Enrich`):
    #: e.g. the feature store's lookup by entity key. The app's ``state.enrichers``
    #: holds every contributed one, in capability order.
    enrich: Any = None
    #: Whether the capability has something to answer (a RAG collection with a live
    #: version): a server where no model is deployed is still ready when one says so.
    #: ``state.serves`` holds every contributed one.
    serves: Callable[[], bool] | None = None


class WebApp:
    """The ASGI callable: lifespan hooks, route matching, the pipeline."""

    def __init__(
        self,
        routes: Sequence[Route],
        stages: Sequence[Stage],
        *,
        startup: Sequence[Hook] = (),
        shutdown: Sequence[Hook] = (),
        on_close: Callable[[], None] | None = None,
        state: SimpleNamespace | None = None,
    ) -> None:
        self.router = Router(routes)
        self.handler = compose(stages)
        self.startup_hooks = list(startup)
        self.shutdown_hooks = list(shutdown)
        self.on_close = on_close
        self.state = state if state is not None else SimpleNamespace()
        self._missing = Route("GET", "/{path}", _not_found, None, "No such route", name="unknown")

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.router.routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            found = self.router.match(scope["method"], scope["path"])
            route = found.route
            if route is None:
                route = self._missing if not found.allowed else _not_allowed(found.allowed)
            response = await self.handler(Call(scope, receive, route, found.params))
            await response(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: none of ours
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        try:
            for hook in self.startup_hooks:
                await hook()
        except BaseException as exc:
            log.exception("start-up failed")
            await send({"type": "lifespan.startup.failed", "message": f"{exc!r}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            for hook in reversed(self.shutdown_hooks):
                await hook()
            if self.on_close is not None:
                self.on_close()
        except BaseException as exc:
            log.exception("shut-down failed")
            await send({"type": "lifespan.shutdown.failed", "message": f"{exc!r}"})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _not_found(call: Call) -> Response:
    raise NotFoundError(
        f"no route for {call.scope['method']} {call.scope['path']} (see GET /openapi.json)",
        path=call.scope["path"],
    )


def _not_allowed(allowed: tuple[str, ...]) -> Route:
    async def endpoint(call: Call) -> Response:
        body = {
            "code": "method_not_allowed",
            "message": f"{call.scope['method']} is not allowed on {call.scope['path']}; "
            f"allowed: {', '.join(allowed)}",
            "allowed": list(allowed),
            "request_id": call.request_id,
        }
        return Response(orjson.dumps(body), 405, {"allow": ", ".join(allowed)}, "application/json")

    return Route("GET", "/{path}", endpoint, None, "Method not allowed", name="not_allowed")


def build_app(
    project: Project,
    *,
    title: str,
    auth: str,
    max_body_bytes: int,
    body_timeout_s: float | None = None,
    options: Mapping[str, Any] | None = None,
    on_close: Callable[[], None] | None = None,
    dependencies: DependencyLimits | None = None,
    workers: int = 1,
) -> WebApp:
    """The app over ``project``: every capability's routes behind the shared pipeline.

    ``auth`` is the server's ``required | disabled`` setting (see
    :mod:`conveyor.governance.access`); ``options`` reach every route factory.
    ``dependencies``: timeouts and breakers for the cache, rate limiter and store
    (:mod:`conveyor.web.dependencies`), shared with the routes as
    ``context.dependencies``; None: plain threads, no fallbacks. ``workers``: the
    worker processes that share each key's rate limit.
    """
    from conveyor._version import __version__
    from conveyor.capability import contributed, load
    from conveyor.governance.access import Access
    from conveyor.web.dependencies import Dependencies
    from conveyor.web.openapi import openapi_document

    metrics = WebMetrics()
    deps = (
        Dependencies(dependencies, metrics.registry, workers=workers)
        if dependencies is not None
        else None
    )
    context = AppContext(project, metrics, SimpleNamespace(), dict(options or {}), deps)
    routes: list[Route] = []
    startup: list[Hook] = []
    shutdown: list[Hook] = []
    context.state.enrichers = []
    context.state.serves = []
    context.state.auth = auth  # for routes that check a key themselves (the dashboard's cookie)
    for _, target in contributed("routes"):
        part: Contribution = load(target)(context)
        routes.extend(part.routes)
        if part.enrich is not None:
            context.state.enrichers.append(part.enrich)
        if part.serves is not None:
            context.state.serves.append(part.serves)
        if part.startup is not None:
            startup.append(part.startup)
        if part.shutdown is not None:
            shutdown.append(part.shutdown)

    events = project.events
    if hasattr(events, "stats"):
        metrics.before_scrape(lambda: metrics.event_log(events.stats()))

    async def metrics_endpoint(call: Call) -> Response:
        body, media_type = metrics.render()
        return Response(body, media_type=media_type)

    routes.append(
        Route(
            "GET",
            "/metrics",
            metrics_endpoint,
            "metrics.read",
            "Prometheus metrics (every worker's, aggregated)",
            response_media="text/plain",
        )
    )
    document: list[bytes] = []

    async def openapi_endpoint(call: Call) -> Response:
        # built on first use (about 25 ms of a worker's start-up otherwise), then kept
        if not document:
            document.append(
                orjson.dumps(openapi_document(routes, title=title, version=__version__))
            )
        return Response(document[0], media_type="application/json")

    routes.append(Route("GET", "/openapi.json", openapi_endpoint, None, "This document"))

    if deps is not None:

        async def close_dependencies() -> None:
            deps.close()

        shutdown.insert(0, close_dependencies)  # run last (hooks run in reverse)
    observe = Observe(metrics)
    access = Access.for_server(project.keys, auth)

    async def start_tracing() -> None:
        observe.start()

    stages: list[Stage] = [
        observe,
        Authenticate(access, deps),
        RateLimit(project.backend("ratelimit"), deps),
        InputLimits(max_body_bytes, body_timeout_s),
    ]
    return WebApp(
        routes,
        stages,
        startup=[start_tracing, *startup],
        shutdown=shutdown,
        on_close=on_close,
        state=context.state,
    )
