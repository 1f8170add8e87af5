"""HTTP routes: ``/v1/experiments`` and ``/v1/flags`` (read: viewer; changes: deployer).

::

    GET  /v1/experiments                    POST /v1/experiments  {"name", "model", "arms",
                                                                  "metric", "mde", ...}
    GET  /v1/experiments/{name}             POST /v1/experiments/{name}/stop {"winner"}
    GET  /v1/experiments/{name}/report      (judged now, not saved)
    POST /v1/experiments/{name}/report      (saved, and the conclusion audited)

    GET  /v1/flags?model=                   POST /v1/flags {"model", "name", "version",
                                                            "match", "percent"}
    GET  /v1/flags/{model}/{name}           DELETE /v1/flags/{model}/{name}
    POST /v1/flags/{model}/{name}/ramp {"percent"} | /target {"match"} | /kill
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.web.app import Contribution
from conveyor.web.bodies import json_object, require
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]

_NUMBER = (int, float)
_START_FIELDS: dict[str, Any] = {
    "name": str,
    "model": str,
    "arms": (dict, list, str),
    "metric": str,
    "mde": _NUMBER,
    "relative": bool,
    "baseline": _NUMBER,
    "sd": _NUMBER,
    "alpha": _NUMBER,
    "power": _NUMBER,
    "guardrails": list,
    "sticky_header": str,
}
_START_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "model", "arms", "metric", "mde"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "model": {"type": "string"},
        "arms": {
            "description": "label -> version (or {version, weight}); the control arm first",
            "oneOf": [{"type": "object"}, {"type": "array"}, {"type": "string"}],
        },
        "metric": {"type": "string"},
        "mde": {"type": "number"},
        "relative": {"type": "boolean"},
        "baseline": {"type": "number"},
        "sd": {"type": "number"},
        "alpha": {"type": "number"},
        "power": {"type": "number"},
        "guardrails": {"type": "array", "items": {"type": "string"}},
        "sticky_header": {"type": "string"},
    },
}
_STOP_FIELDS: dict[str, Any] = {"winner": str, "reason": str}
_STOP_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"winner": {"type": "string"}, "reason": {"type": "string"}},
}
_FLAG_FIELDS: dict[str, Any] = {
    "model": str,
    "name": str,
    "version": int,
    "match": (dict, str),
    "percent": _NUMBER,
    "description": str,
    "reason": str,
}
_FLAG_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["model", "name", "version"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string"},
        "name": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "match": {"type": "object", "additionalProperties": {"type": "string"}},
        "percent": {"type": "number", "minimum": 0, "maximum": 100},
        "description": {"type": "string"},
        "reason": {"type": "string"},
    },
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def routes(context: AppContext) -> Contribution:
    project = context.project

    def experiments() -> Any:
        return project.experiments

    def flags() -> Any:
        return project.flags

    # -- experiments ------------------------------------------------------------------

    async def list_experiments(call: Call) -> Response:
        model = call.request.query_params.get("model")
        found = await asyncio.to_thread(experiments().list, model=model)
        return _json({"items": [e.to_dict() for e in found], "next_cursor": None})

    async def start(call: Call) -> Response:
        body = json_object(await call.body(), _START_FIELDS)
        require(body, "name", "model", "arms", "metric", "mde")
        started = await asyncio.to_thread(
            lambda: experiments().start(
                body["name"],
                body["model"],
                body["arms"],
                primary=body["metric"],
                mde=float(body["mde"]),
                relative=bool(body.get("relative", False)),
                baseline=body.get("baseline"),
                sd=body.get("sd"),
                alpha=body.get("alpha"),
                power=body.get("power"),
                guardrails=[str(g) for g in body.get("guardrails") or []],
                sticky_header=body.get("sticky_header"),
                actor=call.actor,
            )
        )
        return _json(started.to_dict(), 201)

    async def show(call: Call) -> Response:
        found = await asyncio.to_thread(experiments().get, call.params["name"])
        return _json(found.to_dict())

    async def judge_now(call: Call) -> Response:
        body = await asyncio.to_thread(experiments().report, call.params["name"], save=False)
        return _json(body)

    async def save_report(call: Call) -> Response:
        body = await asyncio.to_thread(experiments().report, call.params["name"], save=True)
        return _json(body, 201)

    async def stop(call: Call) -> Response:
        body = json_object(await call.body(), _STOP_FIELDS)
        stopped = await asyncio.to_thread(
            lambda: experiments().stop(
                call.params["name"],
                actor=call.actor,
                winner=body.get("winner"),
                reason=body.get("reason"),
            )
        )
        return _json(stopped.to_dict())

    # -- flags ----------------------------------------------------------------------

    async def list_flags(call: Call) -> Response:
        model = call.request.query_params.get("model")
        found = await asyncio.to_thread(flags().list, model)
        return _json({"items": found, "next_cursor": None})

    async def create_flag(call: Call) -> Response:
        body = json_object(await call.body(), _FLAG_FIELDS)
        require(body, "model", "name", "version")
        created = await asyncio.to_thread(
            lambda: flags().create(
                body["model"],
                body["name"],
                version=body["version"],
                match=body.get("match"),
                percent=body.get("percent", 0.0),
                description=body.get("description"),
                reason=body.get("reason"),
                actor=call.actor,
            )
        )
        return _json(created, 201)

    async def show_flag(call: Call) -> Response:
        found = await asyncio.to_thread(flags().show, call.params["model"], call.params["name"])
        return _json(found)

    async def delete_flag(call: Call) -> Response:
        reason = call.request.query_params.get("reason")
        found = await asyncio.to_thread(
            lambda: flags().delete(
                call.params["model"], call.params["name"], actor=call.actor, reason=reason
            )
        )
        return _json(found)

    def change(action: str) -> Any:
        fields: dict[str, Any] = {"reason": str}
        if action == "ramp":
            fields["percent"] = _NUMBER
        if action == "target":
            fields["match"] = (dict, str)

        async def endpoint(call: Call) -> Response:
            body = json_object(await call.body(), fields)
            model, name, reason = call.params["model"], call.params["name"], body.get("reason")
            service = flags()

            def run() -> Any:
                if action == "ramp":
                    require(body, "percent")
                    return service.ramp(
                        model, name, body["percent"], actor=call.actor, reason=reason
                    )
                if action == "target":
                    require(body, "match")
                    return service.target(
                        model, name, body["match"], actor=call.actor, reason=reason
                    )
                return service.kill(model, name, actor=call.actor, reason=reason)

            return _json(await asyncio.to_thread(run))

        return endpoint

    exp_tags, flag_tags = ("experiments",), ("flags",)
    model_query = (
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
    )
    return Contribution(
        [
            Route(
                "GET",
                "/v1/experiments",
                list_experiments,
                "experiments.read",
                "Experiments, newest first",
                query=model_query,
                tags=exp_tags,
            ),
            Route(
                "POST",
                "/v1/experiments",
                start,
                "experiments.manage",
                "Start an A-B experiment (refused: an arm on a missing version, one running)",
                body=_START_BODY,
                tags=exp_tags,
                errors=(400, 404, 409, 422),
            ),
            Route(
                "GET",
                "/v1/experiments/{name}",
                show,
                "experiments.read",
                "One experiment: arms, design, planned sample size, last verdict",
                tags=exp_tags,
                errors=(404,),
            ),
            Route(
                "GET",
                "/v1/experiments/{name}/report",
                judge_now,
                "experiments.read",
                "The experiment judged now (per-arm CIs, SRM, guardrails, recommendation)",
                tags=exp_tags,
                errors=(404,),
            ),
            Route(
                "POST",
                "/v1/experiments/{name}/report",
                save_report,
                "experiments.manage",
                "Judge and save the report; a first ship / do-not-ship is audited",
                tags=exp_tags,
                errors=(404,),
            ),
            Route(
                "POST",
                "/v1/experiments/{name}/stop",
                stop,
                "experiments.manage",
                "Stop an experiment: the winner's (or control's) version serves everyone",
                body=_STOP_BODY,
                tags=exp_tags,
                errors=(400, 404, 409, 422),
            ),
            Route(
                "GET",
                "/v1/flags",
                list_flags,
                "flags.read",
                "Feature flags",
                query=model_query,
                tags=flag_tags,
            ),
            Route(
                "POST",
                "/v1/flags",
                create_flag,
                "flags.manage",
                "Create a feature flag on a model's route",
                body=_FLAG_BODY,
                tags=flag_tags,
                errors=(400, 404, 409, 422),
            ),
            Route(
                "GET",
                "/v1/flags/{model}/{name}",
                show_flag,
                "flags.read",
                "A flag and its history",
                tags=flag_tags,
                errors=(404,),
            ),
            Route(
                "DELETE",
                "/v1/flags/{model}/{name}",
                delete_flag,
                "flags.manage",
                "Delete a flag (its rule leaves the route; history stays)",
                tags=flag_tags,
                errors=(404,),
            ),
            *(
                Route(
                    "POST",
                    f"/v1/flags/{{model}}/{{name}}/{action}",
                    change(action),
                    "flags.manage",
                    summary,
                    tags=flag_tags,
                    errors=(400, 404, 409, 422),
                )
                for action, summary in (
                    ("ramp", "Ramp a flag to a percentage of matching keys"),
                    ("target", "Target a flag at requests matching attributes"),
                    ("kill", "Kill switch: the flag's rule leaves the route at once"),
                )
            ),
        ]
    )
