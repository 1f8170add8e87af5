"""The rollouts' HTTP routes under ``/v1/rollouts``: status (viewer); start, pause,
resume, abort, promote (deployer), the same operations as ``conveyor rollout``.

::

    POST /v1/rollouts {"model": "fraud", "version": 4, "steps": "1,5,25,50,100",
                       "interval": "10m"}
    GET  /v1/rollouts?active=true         GET /v1/rollouts/{ref}
    POST /v1/rollouts/{ref}/pause | resume | abort | promote   {"reason": "..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.bodies import json_object
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.rollouts.settings import ControllerSpec
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["ServerController", "routes"]

_log = logging.getLogger(__name__)

_START_FIELDS = {
    "model": str,
    "version": int,
    "steps": (str, list),
    "interval": str,
    "min_requests": int,
    "max_extensions": int,
    "force": bool,
    "reason": str,
}
_START_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["model", "version"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "steps": {"oneOf": [{"type": "string"}, {"type": "array"}]},
        "interval": {"type": "string"},
        "min_requests": {"type": "integer", "minimum": 1},
        "max_extensions": {"type": "integer", "minimum": 0},
        "force": {"type": "boolean"},
        "reason": {"type": "string"},
    },
}
_REASON_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string"}},
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def routes(context: AppContext) -> Contribution:
    project = context.project

    def service() -> Any:
        return project.rollouts

    async def list_rollouts(call: Call) -> Response:
        active = call.request.query_params.get("active", "false").lower() in ("1", "true", "yes")
        model = call.request.query_params.get("model")
        found = await asyncio.to_thread(service().list, active=active, model=model)
        return _json({"items": [r.to_dict() for r in found], "next_cursor": None})

    async def show(call: Call) -> Response:
        found = await asyncio.to_thread(service().get, call.params["ref"])
        return _json(found.to_dict())

    async def start(call: Call) -> Response:
        body = json_object(await call.body(), _START_FIELDS)
        for key in ("model", "version"):
            if body.get(key) is None:
                raise InvalidInputError(f"{key} is required", field=key)
        started = await asyncio.to_thread(
            lambda: service().start(
                body["model"],
                body["version"],
                actor=call.actor,
                steps=body.get("steps"),
                interval=body.get("interval"),
                min_requests=body.get("min_requests"),
                max_extensions=body.get("max_extensions"),
                force=bool(body.get("force", False)),
                reason=body.get("reason"),
            )
        )
        return _json(started.to_dict(), 201)

    def steer(name: str) -> Any:
        async def endpoint(call: Call) -> Response:
            body = json_object(await call.body(), {"reason": str})
            ref, reason = call.params["ref"], body.get("reason")
            rollouts = service()

            def run() -> Any:
                if name == "pause":
                    return rollouts.pause(ref, actor=call.actor, reason=reason)
                if name == "resume":
                    return rollouts.resume(ref, actor=call.actor)
                if name == "abort":
                    return rollouts.abort(ref, actor=call.actor, reason=reason)
                return rollouts.promote(ref, actor=call.actor)

            done = await asyncio.to_thread(run)
            return _json(done.to_dict())

        return endpoint

    tags = ("rollouts",)
    from conveyor.rollouts.settings import rollouts_of

    loop = ServerController(project, rollouts_of(project.spec).controller)
    return Contribution(
        startup=loop.start if loop.spec.in_server else None,
        shutdown=loop.stop if loop.spec.in_server else None,
        routes=[
            Route(
                "GET",
                "/v1/rollouts",
                list_rollouts,
                "rollouts.read",
                "Rollouts, newest first (active=true: running and paused only)",
                query=(
                    {
                        "name": "active",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    },
                    {
                        "name": "model",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ),
                tags=tags,
            ),
            Route(
                "POST",
                "/v1/rollouts",
                start,
                "rollouts.manage",
                "Start a rollout of a candidate version (refused: failed gates, one active)",
                body=_START_BODY,
                tags=tags,
                errors=(400, 404, 409, 422),
            ),
            Route(
                "GET",
                "/v1/rollouts/{ref}",
                show,
                "rollouts.read",
                "One rollout (by id, or a model's newest): its step, reports and history",
                tags=tags,
                errors=(404,),
            ),
            *(
                Route(
                    "POST",
                    f"/v1/rollouts/{{ref}}/{name}",
                    steer(name),
                    "rollouts.manage",
                    summary,
                    body=_REASON_BODY,
                    tags=tags,
                    errors=(400, 404, 409, 422),
                )
                for name, summary in (
                    ("pause", "Hold a rollout at its step"),
                    ("resume", "Resume a paused rollout from the live route"),
                    ("abort", "Stop a rollout: the stable version takes all the traffic"),
                    ("promote", "Skip the remaining steps: 100 % and the alias promoted"),
                )
            ),
        ],
    )


class ServerController:
    """The controller in a server worker's background (``rollouts.controller.in_server``):
    a tick every ``poll_s`` in a thread; every worker ticks, the lease lets one drive each
    rollout. A failed tick is logged and the next one tries again."""

    def __init__(self, project: Project, spec: ControllerSpec) -> None:
        import os
        import socket

        self.project = project
        self.spec = spec
        self.holder = f"server:{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(
                    self.project.rollouts.tick, self.holder, lease_s=self.spec.lease_s
                )
            except Exception:  # the next tick tries again; the rollout's state is in the store
                _log.exception("rollout controller tick failed")
            await asyncio.sleep(self.spec.poll_s)
