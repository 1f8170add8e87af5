"""The event kinds RAG writes (declared in its capability)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = [
    "RAG_ALIAS_MOVED",
    "RAG_DELETED",
    "RAG_EVENTS",
    "RAG_QUERY",
    "RAG_VERSION_BUILT",
]

_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))

RAG_VERSION_BUILT = EventKind(
    "rag.version.built",
    "audit",
    {
        "version": int,
        "status": str,
        "parent": _OPT_INT,
        "documents": int,
        "chunks": int,
        "embedded": int,
        "reused": int,
        "removed": int,
        "parse_failures": int,
        "run_id": _OPT_STR,
    },
    "a collection build ended: a new version (ready, refused by its gate, or failed), with "
    "how many chunks were embedded and how many reused from the parent version",
)
RAG_ALIAS_MOVED = EventKind(
    "rag.alias.moved",
    "audit",
    {
        "alias": str,
        "from_version": _OPT_INT,
        "to_version": int,
        "reason": _OPT_STR,
        "forced": bool,
        "rollback": bool,
    },
    "a collection alias (live) was moved to another version, or rolled back",
)
RAG_DELETED = EventKind(
    "rag.deleted",
    "audit",
    {
        "by": str,
        "key_digest": str,
        "documents": int,
        "chunks": int,
        "versions": int,
    },
    "documents were deleted from a collection by document id or by subject key (GDPR): "
    "their chunks and vectors removed from every stored version and the retrieval cache "
    "invalidated; the key itself is not recorded, only its sha256",
)
RAG_QUERY = EventKind(
    "rag.query",
    "telemetry",
    {
        "version": int,
        "query_digest": str,
        "endpoint": str,
        "k": int,
        "chunk_ids": list,
        "scores": list,
        "latency_ms": dict,
        "cache_hit": bool,
        "truncated": bool,
    },
    "a retrieval: the query's sha256, the chunks returned with their scores, the latency of "
    "each stage and whether the answer came from the retrieval cache",
)

RAG_EVENTS = (RAG_VERSION_BUILT, RAG_ALIAS_MOVED, RAG_DELETED, RAG_QUERY)
