"""Python interceptors the MCP gateway's tests name (``agents_hooks:...``)."""

from __future__ import annotations

from typing import Any

#: Every call a hook saw, for the tests to read.
SEEN: list[dict[str, Any]] = []


def shout(call: dict[str, Any]) -> dict[str, Any] | None:
    """Before: upper-case an echo's text; block a text saying 'forbidden'."""
    SEEN.append(call)
    text = call["arguments"].get("text")
    if not isinstance(text, str):
        return None
    if "forbidden" in text:
        return {"action": "block", "reason": "the text says forbidden"}
    return {"action": "transform", "arguments": {"text": text.upper()}}


async def wrap(call: dict[str, Any]) -> dict[str, Any]:
    """After (async): wrap the output in brackets."""
    return {"action": "transform", "text": f"[{call['result']['text']}]"}


def broken(call: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the hook broke")
