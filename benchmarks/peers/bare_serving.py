"""The limit: a bare Starlette endpoint calling the model in the handler, on uvicorn.

    python bare_serving.py MODEL.joblib PORT direct|thread

``direct`` calls ``predict`` on the event loop (what a minimal app
does); ``thread`` moves the call to Starlette's thread pool
(``run_in_threadpool``), as a server that must keep answering does. The body
is Conveyor's native ``{"records": [{...}]}``; decoding is plain ``json``.
"""

from __future__ import annotations

import json
import sys

import joblib
import numpy as np
import uvicorn
from serving_workload import FEATURES
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build(model_path: str, mode: str) -> Starlette:
    model = joblib.load(model_path)
    model.predict(np.zeros((1, len(FEATURES))))  # warm-up

    def infer(body: bytes) -> list[list[float]]:
        records = json.loads(body)["records"]
        x = np.array([[r[f] for f in FEATURES] for r in records], dtype=np.float64)
        return model.predict(x).tolist()  # type: ignore[no-any-return]

    async def predict(request: Request) -> Response:
        body = await request.body()
        if mode == "thread":
            out = await run_in_threadpool(infer, body)
        else:
            out = infer(body)
        return JSONResponse({"predictions": out})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
        ]
    )


def main() -> None:
    model_path, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = build(model_path, mode)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
