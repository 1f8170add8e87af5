"""RAG's routes on the server app: ``POST /v1/rag/{collection}/search`` and ``/context``.

::

    POST /v1/rag/docs/search   {"query": "roll back a model", "k": 5,
                                "filters": {"section": {"in": ["Aliases", "Rollback"]}},
                                "version": "live"}
    POST /v1/rag/docs/context  {"query": "...", "budget_tokens": 800}

Both need the action ``rag.search`` (role viewer and up), with the same keys, rate limits
and request pipeline as the model server. The answer carries the hits (text, score, scores
per stage, citation: document id, source, offsets, section, page), the version served,
the latency of each stage in milliseconds, ``cache_hit`` and ``warnings`` (a query longer
than the encoder reads is truncated and says so). A filter on a field the collection's
chunks do not have is a 422 naming it.

Prometheus: ``conveyor_rag_stage_seconds{collection, endpoint, stage}`` (a histogram per
stage: load, dense, bm25, fusion, rerank, pack, total as the retriever reports them) and
``conveyor_rag_queries{collection, endpoint, cache}`` (hit or miss).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.inflight import requests_in_flight
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.rag.api import RagService
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.pipeline import Call

__all__ = ["RagMetrics", "routes"]

_FILTER = {
    "type": "object",
    "description": "Metadata field -> a value (equality) or {'in': [values]}.",
    "additionalProperties": True,
}
_BODY = {
    "type": "object",
    "required": ["query"],
    "properties": {
        "query": {"type": "string"},
        "k": {"type": "integer", "minimum": 1, "default": 10},
        "filters": _FILTER,
        "version": {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "A version number or an alias (default: live).",
        },
        "budget_tokens": {"type": "integer", "minimum": 1},
    },
}
_KEYS = frozenset(_BODY["properties"])
_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RagMetrics:
    """The per-stage latency histogram and the query counter, on the app's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.stages = Histogram(
            "conveyor_rag_stage_seconds",
            "Time of each retrieval stage (load, dense, bm25, fusion, rerank, pack, total).",
            ("collection", "endpoint", "stage"),
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.queries = Counter(
            "conveyor_rag_queries",
            "Retrieval queries answered, by collection, endpoint and cache hit or miss.",
            ("collection", "endpoint", "cache"),
            registry=registry,
        )

    def observe(
        self, collection: str, endpoint: str, latency: Mapping[str, float], cache_hit: bool
    ) -> None:
        for stage, ms in latency.items():
            self.stages.labels(collection, endpoint, stage).observe(float(ms) / 1000.0)
        self.queries.labels(collection, endpoint, "hit" if cache_hit else "miss").inc()


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInputError('the body is an object: {"query": ...}', field="body")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown field {unknown[0]!r} in the body (known: {', '.join(sorted(_KEYS))})",
            field=unknown[0],
        )
    return body


def routes(context: AppContext) -> Contribution:
    """The search and context routes over the project's collections.

    The query service is built with the app when the spec declares collections; a spec
    that declares none (a server of models only) builds it at the first RAG request
    instead, which keeps the RAG modules out of its start-up: every such request is then
    a 404 naming the collection, and readiness never waits on a collection.
    """
    from conveyor.rag.settings import rag_of
    from conveyor.web.app import Contribution
    from conveyor.web.lazy import Lazy

    def build() -> RagService:
        from conveyor.rag.api import RagService

        return RagService(context.project, metrics=RagMetrics(context.metrics.registry))

    lazy: Lazy[RagService] = Lazy(build)
    service = lazy.get

    if rag_of(context.project.spec).collections:
        service()

    def answering(endpoint: str) -> Any:
        """The handler of one endpoint: the body checked, the query answered off the loop."""

        def answer(*args: Any, **kwargs: Any) -> Any:
            found = service()
            return (found.search if endpoint == "search" else found.context)(*args, **kwargs)

        async def handler(call: Call) -> Response:
            body = _body(await call.body())
            extra = {} if endpoint == "search" else {"budget_tokens": body.get("budget_tokens")}
            question = functools.partial(
                answer,
                call.params["collection"],
                body.get("query"),
                k=body.get("k"),
                filters=body.get("filters"),
                version=body.get("version"),
                actor=call.actor,
                request_id=call.request_id,
                **extra,
            )
            if requests_in_flight() == 1 and service().answers_in_memory(
                call.params["collection"], body.get("version"), endpoint
            ):
                # alone, cheap and nothing to wait on: answered here, without the thread hop
                found = question()
            else:
                found = await asyncio.to_thread(question)
            return Response(orjson.dumps(found), media_type="application/json")

        return handler

    async def shutdown() -> None:
        found = lazy.built
        if found is not None:
            found.close()

    def serves() -> bool:
        # Readiness: a server with no model deployed is ready when a collection is live,
        # as the query path last read it (no SQL per probe; a hung store does not hang
        # the probe). No collection declared: none can answer.
        found = lazy.built
        return found is not None and found.serves()

    table = [
        Route(
            "POST",
            "/v1/rag/{collection}/search",
            answering("search"),
            "rag.search",
            "Search a RAG collection: hybrid retrieval, hits with citations",
            body=_BODY,
            tags=("rag",),
            errors=(404, 422),
        ),
        Route(
            "POST",
            "/v1/rag/{collection}/context",
            answering("context"),
            "rag.search",
            "A prompt's context from a RAG collection, packed within a token budget",
            body=_BODY,
            tags=("rag",),
            errors=(404, 422),
        ),
    ]

    return Contribution(table, shutdown=shutdown, serves=serves)
