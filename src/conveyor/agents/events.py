"""The MCP gateway's event kinds (declared in its capability).

``mcp.call`` (telemetry): one per tool call through the gateway, answered or refused: the
tool as listed, its server and its own name there, who called (key, user, conversation),
how it ended (``ok``; ``error_result``: the tool answered with an error; ``refused``: the
gateway did not send it, ``code`` says why; ``failed``: the server did not answer, timed
out or crashed), latency, attempts (retries), the checks' decisions (secrets found and
what was done), and the arguments' and result's SHA-256 digests (16 hex characters) and
sizes, never their text; whether the result was truncated.
"""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["AGENTS_EVENTS", "MCP_CALL"]

_OPT_STR = (str, type(None))

MCP_CALL = EventKind(
    "mcp.call",
    "telemetry",
    {
        "tool": str,
        "server": _OPT_STR,
        "upstream_tool": _OPT_STR,
        "key": _OPT_STR,
        "user": _OPT_STR,
        "conversation": _OPT_STR,
        "status": str,
        "code": _OPT_STR,
        "error": _OPT_STR,
        "attempts": int,
        "decisions": list,
        "arguments_digest": _OPT_STR,
        "arguments_bytes": int,
        "result_digest": _OPT_STR,
        "result_bytes": int,
        "truncated": bool,
        "latency_ms": (int, float),
    },
    "a tool call through the MCP gateway: the tool, its server, the caller (key, user, "
    "conversation), how it ended (ok, error_result, refused with a code, failed), latency, "
    "attempts, the checks' decisions, and the digests and sizes of its arguments and result",
)

AGENTS_EVENTS = (MCP_CALL,)
