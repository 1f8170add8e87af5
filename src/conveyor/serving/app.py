"""The model server: what one worker holds, and the app it answers through.

::

    app = create_app(project)           # an open conveyor.Project
    uvicorn.run(app)                    # or: conveyor serve

The app is :func:`conveyor.web.app.build_app`: every capability's routes
behind the shared request pipeline (request id and tracing, key and role,
rate limit, body limit). The model server's own routes are in
:mod:`conveyor.serving.http` (native API, routes) and
:mod:`conveyor.serving.http_v2` (Open Inference Protocol v2); this module
holds :class:`Server`, the worker's state they share.

A prediction goes: route decision (sticky key, flags, weights) -> signature
(422 naming the column) -> cache -> batcher (503 + Retry-After when full) ->
response. Shadow copies run after the response is computed, as tasks nobody
awaits; their outputs go to the event log next to the primary's. Nothing on
this path waits on the network from the event loop: the registry, a remote
cache and the route store are read in threads. See ``docs/serving.md``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from conveyor import _gc
from conveyor.errors import NotFoundError
from conveyor.serving.dense import DenseRows, as_arrow
from conveyor.serving.events import PREDICTION, PREDICTION_FAILED, PREDICTION_SHADOW
from conveyor.web.inflight import requests_in_flight

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.project import Project
    from conveyor.registry.versions import ModelVersion
    from conveyor.serving.pool import Served
    from conveyor.serving.routes import CompiledRoute, Decision
    from conveyor.web.app import WebApp
    from conveyor.web.dependencies import Dependencies
    from conveyor.web.metrics import WebMetrics
    from conveyor.web.pipeline import Call

__all__ = ["Enrich", "Enriched", "Server", "create_app"]

log = logging.getLogger("conveyor.serving")


@dataclass(frozen=True, slots=True)
class Enriched:
    """What an enricher returns when the prediction event should record what it did:
    ``record`` is the event's ``features`` field (values used, which were missing)."""

    table: pa.Table
    record: dict[str, Any] | None = None


#: ``enrich(model, version, rows) -> rows | Enriched``: where a feature lookup by entity
#: key (an online store) joins the request before the signature check; None: requests
#: carry every feature themselves. A capability contributes one with its routes
#: (``Contribution.enrich``); ``create_app(enrich=...)`` replaces them.
Enrich = Callable[[str, "ModelVersion", "pa.Table"], Awaitable["pa.Table | Enriched"]]

_ATTR_HEADER = b"x-conveyor-attr-"
#: Rows of a request a disagreeing shadow copy's event carries (``input``).
SHADOW_INPUT_ROWS = 100


class Server:
    """Everything one worker holds: routes, loaded versions, cache, metrics."""

    def __init__(
        self,
        project: Project,
        metrics: WebMetrics,
        enrich: Enrich | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        from conveyor.serving.cache import PredictionCache
        from conveyor.serving.metrics import ServerMetrics, latency_bounds
        from conveyor.serving.pool import ModelPool
        from conveyor.serving.route_store import RouteStore
        from conveyor.serving.settings import serving_of
        from conveyor.serving.watcher import RouteWatcher

        spec = serving_of(project.spec)
        self.spec = spec
        self.allow_unrouted = spec.allow_unrouted_versions
        self.project = project
        self.events = project.events
        self.registry = project.registry
        self.metrics = ServerMetrics(metrics.registry, latency_bounds(project.spec))
        #: The cache, rate limiter and store behind timeouts and breakers (None: unguarded).
        self.dependencies = dependencies
        self.cache = (
            PredictionCache(project.cache, ttl=spec.cache_ttl_s, quiet=dependencies is None)
            if spec.cache
            else None
        )
        self.pool = ModelPool(
            self.registry,
            spec.batching,
            on_batch=self.metrics.on_batch,
            closed_form=spec.closed_form,
        )
        # Route changes made through this server are verified by loading into its pool.
        self.routes = RouteStore(project.store, project.events, self.registry, verify=False)
        # LISTEN where serving.listen_url says (the database itself when the store's URL is
        # a transaction-mode pooler), else on the store's URL.
        listen = spec.listen_url
        self.watcher = RouteWatcher(
            self.routes,
            self.pool,
            cache=self.cache,
            interval_s=spec.poll_interval_s,
            on_change=self._route_health,
            listen_dsn=None if listen is None else listen.with_(driver=None).render(False),
        )
        self.enrich = enrich
        durability = project.spec.events
        #: With ``events.durability: acknowledged``, a prediction is answered only once its
        #: event is committed (group commit); None: answered at once (buffered).
        self.commits = None
        if durability.durability == "acknowledged":
            from conveyor.events.acknowledge import GroupCommit

            self.commits = GroupCommit(project.events, timeout_s=durability.ack_timeout_s)
            commits = self.commits
            metrics.before_scrape(lambda: metrics.event_log(commits.stats()))
        self._shadows: set[asyncio.Task[None]] = set()
        self.started = time.monotonic()
        #: Failed prediction requests by error code since start (``overloaded``: shed load);
        #: the monitoring sampler reads it.
        self.failures: dict[str, int] = {}
        metrics.before_scrape(self._scrape)

    # -- lifecycle ---------------------------------------------------------------

    async def startup(self) -> None:
        await self.watcher.start()
        # Everything loaded so far (libraries, models) lives as long as the worker:
        # out of the collector's sight, a full collection no longer walks it, which
        # is what stalled requests for tens of milliseconds under load. (No collect
        # first: it would add 0.1 s to start-up to free a few start-up cycles.)
        # `conveyor serve` starts with the collector off (conveyor._start): on from
        # here, and what is loaded later (a model on a route change, a RAG version)
        # is frozen in its turn (conveyor._gc).
        _gc.serving()
        routed = {m: r.policy.serving_versions() for m, r in self.watcher.routes.items()}
        if routed or self.watcher.failures:
            log.info("ready: %s", orjson.dumps(routed).decode())
        else:
            from conveyor.serving.watcher import NOTHING_DEPLOYED

            log.warning("not ready: %s", NOTHING_DEPLOYED)

    async def shutdown(self) -> None:
        """Stop watching, drain the batchers and shadow copies, flush the event log."""
        await self.watcher.stop()
        if self._shadows:
            await asyncio.wait(self._shadows, timeout=5)
        await self.pool.close()
        # Bounded: an event log whose database stopped answering would hold the stop for
        # ever (the events it keeps are counted in the log line).
        timeout = self.spec.drain.shutdown_s * 0.3
        try:
            await asyncio.to_thread(self.events.flush, timeout)
        except Exception as exc:
            log.error("shut-down: the event log's last commit failed: %s", exc)

    def _route_health(self, model: str, failure: object | None) -> None:
        self.metrics.degraded.labels(model).set(0 if failure is None else 1)

    def _scrape(self) -> None:
        for served in self.pool.served:
            self.metrics.queue_depth.labels(served.version.model, str(served.version.number)).set(
                served.batcher.queue_depth
            )

    # -- predicting --------------------------------------------------------------

    def route_of(self, model: str) -> CompiledRoute:
        route = self.watcher.routes.get(model)
        if route is None:
            unavailable = self.watcher.unavailable(model)
            if unavailable is not None:
                raise unavailable
            raise NotFoundError(
                f"model {model!r} is not deployed on this server (conveyor deploy {model}@N)",
                model=model,
            )
        return route

    def check_named_version(self, call: Call, model: str, number: int) -> None:
        """A caller naming a version that is on no route of ``model`` (not served, not
        shadowed: a candidate, one that failed its gates) needs ``serving.predict_unrouted``
        (deployer), unless ``serving.allow_unrouted_versions`` is set. Callers without a
        key (a server open for local development) are not asked."""
        if self.allow_unrouted:
            return
        route = self.watcher.routes.get(model)
        if route is not None and number in route.policy.all_versions():
            return
        caller = call.caller
        key = caller.key if caller is not None else None
        if key is not None:
            key.require("serving.predict_unrouted")

    async def check_model(self, model: str, version: int | None) -> None:
        """NotFoundError for a model this server does not serve (or a version the registry
        does not hold), before a request's body is read: an unknown model is a 404 about
        the model, whatever its body."""
        if version is None:
            self.route_of(model)
        elif self.pool.get(model, version) is None:
            await asyncio.to_thread(self.registry.get, model, version)

    async def served(self, model: str, number: int) -> Served:
        served = self.pool.get(model, number)
        if served is not None:
            return served
        # NotFoundError naming the version before a load; a store read, so in a thread.
        await asyncio.to_thread(self.registry.get, model, number)
        return await self.pool.ensure(model, number)

    async def predict(
        self,
        call: Call,
        model: str,
        rows: pa.Table | DenseRows | Callable[[Served], pa.Table | DenseRows],
        attributes: dict[str, Any],
        version: int | None,
        request_id: str,
    ) -> tuple[Any, Served, Decision | None, bool]:
        """Route, check, look up the cache, predict; schedule shadows. The hot path.

        ``rows`` is the request's table, or builds it for the version the route
        chose (a v2 matrix needs that version's column names).
        """
        started = time.perf_counter()
        decision: Decision | None = None
        served: Served | None = None
        try:
            if version is None:
                route = self.route_of(model)
                attrs = {k: str(v) for k, v in attributes.items()}
                sticky_value = None
                sticky = route.policy.sticky_header
                sticky_name = sticky.lower().encode("latin-1") if sticky else None
                for name, value in call.scope["headers"]:
                    if name.startswith(_ATTR_HEADER):
                        attrs[name[16:].decode("latin-1")] = value.decode("latin-1")
                    elif name == sticky_name:
                        sticky_value = value.decode("latin-1")
                decision = route.decide(
                    model=model, key=sticky_value, attributes=attrs, rand=random.random()
                )
                served = await self.served(model, decision.version)
                cache_on = route.policy.cache
            else:
                decision, cache_on = None, False
                self.check_named_version(call, model, version)
                served = await self.served(model, version)
            table = rows(served) if callable(rows) else rows
            looked_up = None
            if self.enrich is not None:
                enriched = await self.enrich(model, served.version, table)
                if isinstance(enriched, Enriched):
                    table, looked_up = enriched.table, enriched.record
                else:
                    table = enriched
            table = served.enforce(table)
            arm = decision.arm if decision else "direct"
            number = str(served.version.number)
            digest = None
            output = None
            cached = False
            cache = self.cache if cache_on else None
            if cache is not None:
                from conveyor.serving.cache import input_digest

                table = as_arrow(table)  # the digest and the cached copy are of Arrow tables

                digest = input_digest(table)
                if cache.local:
                    output = cache.get(served.version.id, table, digest)
                else:
                    output = await self._remote_cache(cache.get, served.version.id, table, digest)
                cached = output is not None
                self.metrics.cache.labels(model, number, "hit" if cached else "miss").inc()
            if output is None:
                output = await served.batcher.submit(table, alone=requests_in_flight() == 1)
                if cache is not None:
                    if cache.local:
                        cache.put(served.version.id, table, output, digest)
                    else:
                        await self._remote_cache(
                            cache.put, served.version.id, table, output, digest
                        )
            elapsed = time.perf_counter() - started
            ok, seconds = self.metrics.answered(model, number, arm)
            ok.inc()
            seconds.observe(elapsed)
            self._record(
                model,
                served,
                decision,
                table,
                output,
                request_id,
                call,
                elapsed,
                cached,
                digest,
                looked_up,
            )
            if self.commits is not None:
                await self.commits.committed()
            if decision is not None and decision.shadow:
                for shadow in decision.shadow:
                    task = asyncio.create_task(
                        self._shadow(model, shadow, table, output, served, request_id)
                    )
                    self._shadows.add(task)
                    task.add_done_callback(self._shadows.discard)
            return output, served, decision, cached
        except BaseException:
            # Only on failure (no cost to an answered request): what the failure event of
            # the route's on_failure hook (:meth:`failed`) says about the version and arm.
            if served is not None:
                call.served_as = (
                    served.version.number,
                    served.version.id,
                    decision.arm if decision is not None else "direct",
                )
            raise

    def failed(self, call: Call, status: int, code: str) -> None:
        """A prediction route answered an error: a ``prediction.failed`` event (telemetry,
        never waited for). The route's ``on_failure`` hook; never called on success."""
        self.failures[code] = self.failures.get(code, 0) + 1
        model = call.params.get("model")
        if not model:
            return
        served_as = getattr(call, "served_as", None)
        number, version_id, arm = served_as if served_as is not None else (None, None, None)
        if served_as is not None or model in self.watcher.routes or model in self.watcher.failures:
            # Prometheus series only for the models this server routes (or fails to): a
            # name in a URL must not add series. The event below keeps every failure.
            self.metrics.failed(
                model, "" if number is None else str(number), arm or "", status, code
            )
        self.events.record(
            PREDICTION_FAILED,
            subject=model[:200],
            subject_version=None if number is None else str(number),
            request_id=call.request_id,
            actor=call.actor,
            payload={
                "status": status,
                "code": code,
                "version_id": version_id,
                "arm": arm,
                "latency_ms": round((time.perf_counter() - call.started) * 1000, 3),
            },
        )

    async def _remote_cache(self, method: Callable[..., Any], *args: Any) -> Any:
        """A call to a networked cache: under its breaker and timeout, a miss when it
        fails (the request is answered by the model)."""
        deps = self.dependencies
        if deps is None:
            return await asyncio.to_thread(method, *args)
        from conveyor.errors import BackendUnavailableError

        try:
            return await deps.call("cache", deps.limits.cache_timeout_s, method, *args)
        except BackendUnavailableError:
            return None

    def _record(
        self,
        model: str,
        served: Served,
        decision: Decision | None,
        table: pa.Table,
        output: Any,
        request_id: str,
        call: Call,
        elapsed: float,
        cached: bool,
        digest: str | None,
        looked_up: dict[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "version_id": served.version.id,
            "arm": decision.arm if decision else "direct",
            "flag": decision.flag if decision else None,
            "latency_ms": round(elapsed * 1000, 3),
            "cached": cached,
            "rows": table.num_rows,
            "output": plain(output),
        }
        if digest is not None:
            payload["input_digest"] = digest
        if looked_up is not None:
            payload["features"] = looked_up
        rate = self.spec.payload_sample_rate
        if rate and random.random() < rate:
            payload["input"] = table.to_pylist()
        self.events.record(
            PREDICTION,
            subject=model,
            subject_version=str(served.version.number),
            request_id=request_id,
            actor=call.actor,
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
        from conveyor.serving.shadow import compare as compare_shadow

        started = time.perf_counter()
        try:
            served = await self.served(model, number)
            output = await served.batcher.submit(served.enforce(table))
            status = "ok"
            error = None
        except Exception as exc:  # a shadow's failure is data, never the caller's problem
            output, status, error = None, "error", f"{type(exc).__name__}: {exc}"
        self.metrics.shadow.labels(model, str(number), status).inc()
        plain_primary, plain_shadow = plain(primary), plain(output)
        # Numbers agree within a tolerance (serving/shadow.py), with how far apart they were.
        compared = compare_shadow(plain_primary, plain_shadow)
        if compared.max_abs_diff is not None:
            self.metrics.shadow_diff.labels(model, str(number)).observe(compared.max_abs_diff)
        payload = {
            "primary_version": primary_served.version.number,
            "primary_output": plain_primary,
            "output": plain_shadow,
            **compared.to_payload(),
            "status": status,
            "error": error,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if status == "ok" and not compared.agree:
            # The inputs of a disagreement, for the shadow analysis (monitoring).
            payload["input"] = table.slice(0, SHADOW_INPUT_ROWS).to_pylist()
        self.events.record(
            PREDICTION_SHADOW,
            subject=model,
            subject_version=str(number),
            request_id=request_id,
            payload=payload,
        )


def plain(value: Any) -> Any:
    """A prediction as JSON-ready lists (numpy arrays, pandas and polars objects)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_numpy"):
        return value.to_numpy().tolist()
    return value


def create_app(
    project: Project,
    *,
    on_close: Callable[[], None] | None = None,
    enrich: Enrich | None = None,
) -> WebApp:
    """The ASGI app of one worker over ``project`` (see the module docstring).

    ``app.state.server`` is the :class:`Server`. ``on_close`` runs last at
    shutdown (after in-flight requests, batch queues and shadow copies are
    drained and the event log is flushed).
    """
    from conveyor.serving.settings import serving_of
    from conveyor.web.app import build_app

    spec = serving_of(project.spec)
    return build_app(
        project,
        title="Conveyor",
        auth=spec.auth,
        max_body_bytes=spec.max_body_bytes,
        body_timeout_s=spec.body_timeout_s,
        options={"enrich": enrich},
        on_close=on_close,
        dependencies=spec.dependencies,
        workers=spec.workers,
    )
