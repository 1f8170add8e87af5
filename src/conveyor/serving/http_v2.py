"""The Open Inference Protocol v2 routes of the model server (KServe, Triton, MLServer clients).

::

    GET  /v2                                          server metadata
    GET  /v2/health/live | /v2/health/ready           probes (no key: load balancers send none)
    GET  /v2/models/{m}[/versions/{v}]                model metadata: inputs, and the outputs
                                                      infer really returns
    GET  /v2/models/{m}[/versions/{v}]/ready          model readiness
    POST /v2/models/{m}[/versions/{v}]/infer          inference, JSON or the binary extension

The codec is :mod:`conveyor.serving.protocol_v2`; routing, batching, the
cache and events are the server's, shared with the native API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.serving.http import defer, json_response, request_mode, version_param
from conveyor.web.errors import BadRequest
from conveyor.web.routing import Route

log = logging.getLogger("conveyor.serving")

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.serving.app import Server
    from conveyor.serving.pool import Served
    from conveyor.web.pipeline import Call

__all__ = ["INFER_SCHEMA", "output_metadata", "routes"]

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
#: What an inference request may hold (the JSON part; the binary extension appends tensors).
INFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}


def output_metadata(served: Served) -> list[Any]:
    """The outputs infer returns for ``served``, read from its answer to the warm-up rows.

    A classifier's probabilities are ``predict_proba`` ``[-1, k]`` (FP64), a
    regressor's or a label model's ``predict`` ``[-1]`` in its own datatype;
    without a warm-up (no signature) ``predict`` FP64 is the best guess.
    """
    from conveyor.serving import protocol_v2 as v2

    if served.sample_output is None:
        return [v2.TensorMetadata("predict", "FP64", (-1,))]
    return [
        v2.TensorMetadata(t.name, t.datatype, (-1, *t.shape[1:]))
        for t in v2.outputs_from_predictions(served.sample_output)
    ]


def _serves_other(state: Any) -> bool:
    """Whether a capability besides serving has something to answer (``Contribution.serves``);
    a probe that fails counts as nothing served."""
    for probe in getattr(state, "serves", ()):
        try:
            if probe():
                return True
        except Exception:
            log.warning("a readiness probe failed", exc_info=True)
    return False


def routes(server: Server, state: Any = None) -> list[Route]:
    from conveyor._version import __version__
    from conveyor.serving import protocol_v2 as v2

    async def server_meta(call: Call) -> Response:
        return json_response(v2.server_metadata(__version__, ["binary_tensor_data"]))

    async def live(call: Call) -> Response:
        return json_response({"live": True})

    async def ready(call: Call) -> Response:
        body = server.watcher.health()
        if body["status"] == "empty" and await asyncio.to_thread(_serves_other, state):
            # no model, but another capability answers (a RAG collection is live)
            body = {
                "ready": True,
                "status": "ready",
                "message": "no model is deployed; other capabilities answer (RAG)",
            }
        deps = server.dependencies
        bypassed = deps.health() if deps is not None else {}
        if bypassed:  # still ready (it answers), but says what it is doing without
            body["dependencies"] = bypassed
            if body["status"] == "ready":
                body["status"] = "degraded"
        return json_response(body, 200 if body["ready"] else 503)

    async def _metadata_of(call: Call) -> tuple[str, Served]:
        model = call.params["model"]
        version = version_param(call)
        if version is None:
            version = server.route_of(model).policy.serving_versions()[0]
        else:  # describing a version loads it: the same rule as calling it
            server.check_named_version(call, model, version)
        return model, await server.served(model, version)

    async def model_meta(call: Call) -> Response:
        model, served = await _metadata_of(call)
        route = server.watcher.routes.get(model)
        versions = route.policy.serving_versions() if route else (served.version.number,)
        signature = served.loaded.signature
        inputs = [
            v2.TensorMetadata(c.name, v2.datatype_for_arrow(c.type), (-1,))
            for c in (signature.inputs if signature else ())
        ]
        return json_response(
            v2.model_metadata(
                model, versions, served.version.flavor, inputs, output_metadata(served)
            )
        )

    async def model_ready(call: Call) -> Response:
        model = call.params["model"]
        version = version_param(call)
        route = server.watcher.routes.get(model)
        if version is None and (unavailable := server.watcher.unavailable(model)) is not None:
            raise unavailable  # 503 with the reason: its live revision cannot load here
        ok = route is not None if version is None else server.pool.get(model, version) is not None
        if not ok:
            raise NotFoundError(f"model {model!r} is not ready here", model=model)
        return json_response({"name": model, "ready": True})

    async def infer(call: Call) -> Response:
        model = call.params["model"]
        request_id = call.request_id
        version = version_param(call)
        await server.check_model(model, version)
        body = await call.body()
        try:
            header = v2.parse_header_length(call.request.headers.get(v2.HEADER_LENGTH))
            decoded = v2.decode_infer_request(body, header)
        except InvalidInputError as exc:
            raise BadRequest(exc) from exc
        # Asynchronous: ``"parameters": {"mode": "async"}`` or ``?mode=async`` (a job, 202).
        if decoded.parameters.get("mode") == "async" or request_mode(call) == "async":
            return await defer(state, call, model, version, "v2", body)

        def table_for(served: Served) -> pa.Table:
            # A [n, k] matrix is read in the columns of the version the route chose.
            signature = served.loaded.signature
            try:
                return v2.table_from_inputs(decoded.inputs, signature.names if signature else None)
            except InvalidInputError as exc:
                raise BadRequest(exc) from exc

        output, served, decision, _cached = await server.predict(
            call,
            model,
            table_for,
            dict(decoded.parameters.get("attributes") or {}),
            version,
            decoded.id or request_id,
        )
        span = call.span
        if span is not None:
            span.set_attribute("model", model)
            span.set_attribute("model.version", served.version.number)
            span.set_attribute("route.arm", decision.arm if decision else "direct")
            if decision is not None and decision.flag:
                span.set_attribute("route.flag", decision.flag)
        outputs = decoded.select_outputs(v2.outputs_from_predictions(output))
        content, headers = v2.encode_infer_response(
            model, served.version.number, decoded.id, outputs, binary=decoded.binary_outputs()
        )
        if decision is not None:
            headers["x-conveyor-arm"] = decision.arm
        return Response(content, headers=headers)

    binary = ("application/json", "application/octet-stream")
    tags = ("open inference protocol v2",)
    version = ("/versions/{version}",)
    table = [
        Route("GET", "/v2", server_meta, "serving.read", "Server metadata", tags=tags),
        Route("GET", "/v2/health/live", live, None, "Liveness", tags=tags),
        Route(
            "GET", "/v2/health/ready", ready, None, "Readiness: routed versions loaded", tags=tags
        ),
    ]
    for suffix in ("", *version):
        which = "one version" if suffix else "the routed version"
        table += [
            Route(
                "GET",
                f"/v2/models/{{model}}{suffix}",
                model_meta,
                "serving.read",
                f"Model metadata ({which})",
                tags=tags,
                errors=(404,),
            ),
            Route(
                "GET",
                f"/v2/models/{{model}}{suffix}/ready",
                model_ready,
                "serving.read",
                f"Model readiness ({which})",
                tags=tags,
                errors=(404,),
            ),
            Route(
                "POST",
                f"/v2/models/{{model}}{suffix}/infer",
                infer,
                "serving.predict",
                f"Inference on {which}",
                body=INFER_SCHEMA,
                body_media=binary,
                tags=tags,
                errors=(404,),
                on_failure=server.failed,  # a prediction.failed event per error
            ),
        ]
    return table
