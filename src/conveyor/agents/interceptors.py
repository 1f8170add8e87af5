"""Interceptors: ordered hooks before and after tool calls that inspect, transform or block.

::

    mcp:
      interceptors:
        - {kind: python, target: "my_hooks:audit", where: before}        # a callable
        - {kind: exec, command: [./check-args.sh], where: before, timeout_s: 2}
        - {kind: http, url: "http://policy:8080/mcp-hook", where: both}
        - {kind: injection, action: block, tools: ["web__*"]}             # tool outputs
        - {kind: project, fields: [id, title, price], tools: ["shop__search"]}
        - {kind: markdown, tools: ["db__query"]}                          # rows -> a table

A hook sees one JSON object::

    {"phase": "before" | "after", "tool": "web__fetch", "server": "web",
     "arguments": {...}, "result": {"text": "...", "structured": {...}} (after only),
     "caller": {"key": ..., "user": ..., "conversation": ...}}

and answers ``null`` (or nothing: go on), ``{"action": "block", "reason": "..."}``, or
``{"action": "transform", "arguments": {...}}`` (before: what the tool gets instead) /
``{"action": "transform", "text": "..."}`` (after: what the caller gets instead). A Python
hook is ``module:function`` (sync or async) taking that object; an ``exec`` hook gets it
on stdin and writes its answer on stdout; an ``http`` hook gets it POSTed and answers it
in JSON. A hook that fails, times out (``timeout_s``) or answers garbage blocks the call
(``on_error: block``, the default: fail closed) or is skipped (``on_error: allow``).
Hooks run in their order; a block stops the call (``interceptor_blocked``, naming the
hook and its reason); each decision is in the ``mcp.call`` event.

Built in: ``injection`` scans a tool's output with the guardrails' injection detector
(indirect prompt injection: a web page, an email, a document telling the model what to
do) and blocks it or flags it; ``project`` keeps only some fields of a JSON output (dot
paths, over objects and lists of them); ``markdown`` turns a JSON list of objects into a
Markdown table, which an LLM reads at a fraction of the tokens.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Hook", "InterceptorSpec", "Verdict", "build_hooks"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class InterceptorSpec(BaseModel):
    """One interceptor of ``mcp.interceptors``."""

    model_config = _STRICT

    kind: Literal["python", "exec", "http", "injection", "project", "markdown"] = Field(
        description="python (a callable), exec (a command), http (an endpoint), or a built-in: "
        "injection, project, markdown."
    )
    name: str | None = Field(None, description="How decisions name it (default: its kind).")
    where: Literal["before", "after", "both"] | None = Field(
        None, description="Before the call, after it, or both (built-ins: after)."
    )
    tools: list[str] = Field(default_factory=lambda: ["*"], description="Globs of the tools.")
    target: str | None = Field(None, description="python: module:function.")
    command: list[str] | None = Field(None, description="exec: the command (JSON on stdin).")
    url: str | None = Field(None, description="http: the endpoint (JSON POSTed).")
    timeout_s: float = Field(2.0, gt=0, le=60, description="How long a hook may take.")
    on_error: Literal["block", "allow"] = Field(
        "block", description="A hook that fails: block the call (fail closed) or go on."
    )
    action: Literal["block", "flag"] = Field(
        "block", description="injection: block the output, or pass it on and flag it."
    )
    fields: list[str] = Field(default_factory=list, description="project: the fields kept.")

    @model_validator(mode="after")
    def _settings(self) -> InterceptorSpec:
        needs = {"python": "target", "exec": "command", "http": "url", "project": "fields"}
        field = needs.get(self.kind)
        if field is not None and not getattr(self, field):
            raise ValueError(f"a {self.kind} interceptor needs {field}")
        return self

    @property
    def phases(self) -> tuple[str, ...]:
        where = self.where or (
            "after" if self.kind in ("injection", "project", "markdown") else "before"
        )
        return ("before", "after") if where == "both" else (where,)


class Verdict(BaseModel):
    """What a hook decided."""

    action: Literal["allow", "block", "transform", "flag"] = "allow"
    reason: str | None = None
    arguments: dict[str, Any] | None = None
    text: str | None = None


class Hook:
    """An interceptor ready to run: ``await hook(call) -> Verdict``."""

    def __init__(self, spec: InterceptorSpec, run: Callable[[dict[str, Any]], Any]) -> None:
        self.spec = spec
        self.name = spec.name or spec.kind
        self._run = run

    def applies(self, tool: str, phase: str) -> bool:
        import fnmatch

        return phase in self.spec.phases and any(
            fnmatch.fnmatchcase(tool, p) for p in self.spec.tools
        )

    async def aclose(self) -> None:
        """Release what the hook holds (an HTTP hook's connections)."""
        close = getattr(self._run, "aclose", None)
        if close is not None:
            await close()

    async def __call__(self, call: dict[str, Any]) -> Verdict:
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                answer = await self._run(call)
            if answer is None or answer == {}:
                return Verdict()
            if isinstance(answer, Verdict):
                return answer
            if not isinstance(answer, dict):
                raise ValueError(f"answered {type(answer).__name__}, not an object")
            return Verdict.model_validate(answer)
        except Exception as exc:
            why = (
                f"did not answer within {self.spec.timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else f"failed: {type(exc).__name__}: {exc}"
            )
            if self.spec.on_error == "allow":
                return Verdict(action="flag", reason=f"interceptor {self.name!r} {why} (skipped)")
            return Verdict(action="block", reason=f"interceptor {self.name!r} {why}")


def _python(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    assert spec.target is not None
    module, _, attr = spec.target.partition(":")
    fn = getattr(importlib.import_module(module), attr)

    async def run(call: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(call)
        return await asyncio.to_thread(fn, call)

    return run


def _exec(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    assert spec.command is not None
    command = list(spec.command)

    async def run(call: dict[str, Any]) -> Any:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate(json.dumps(call).encode())
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {err.decode(errors='replace')[:200]}")
        text = out.decode().strip()
        return json.loads(text) if text else None

    return run


def _http(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    assert spec.url is not None
    url = spec.url
    clients: list[Any] = []

    async def run(call: dict[str, Any]) -> Any:
        import httpx

        if not clients:
            clients.append(httpx.AsyncClient(timeout=spec.timeout_s))
        got = await clients[0].post(url, json=call)
        got.raise_for_status()
        return got.json() if got.content else None

    async def aclose() -> None:
        while clients:
            await clients.pop().aclose()

    run.aclose = aclose  # type: ignore[attr-defined]
    return run


def _injection(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    from conveyor.guardrails.detectors import build

    detector = build("injection")

    async def run(call: dict[str, Any]) -> Any:
        text = (call.get("result") or {}).get("text") or ""
        found = await asyncio.to_thread(detector.scan, text) if text else []
        if not found:
            return None
        score = max(f.score for f in found)
        reason = f"the output of {call['tool']!r} reads as a prompt injection (score {score:.2f})"
        return {"action": spec.action, "reason": reason}

    return run


def _project(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    fields = [f.split(".") for f in spec.fields]

    def pick(value: Any) -> Any:
        if isinstance(value, list):
            return [pick(v) for v in value]
        if not isinstance(value, dict):
            return value
        kept: dict[str, Any] = {}
        for path in fields:
            node: Any = value
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                kept[".".join(path)] = node
        return kept

    async def run(call: dict[str, Any]) -> Any:
        data = _json_of(call)
        if data is None:
            return None
        return {"action": "transform", "text": json.dumps(pick(data), ensure_ascii=False)}

    return run


def _markdown(spec: InterceptorSpec) -> Callable[[dict[str, Any]], Any]:
    async def run(call: dict[str, Any]) -> Any:
        data = _json_of(call)
        if isinstance(data, dict) and len(data) == 1:  # {"result": [...]}, {"rows": [...]}
            data = next(iter(data.values()))
        if not (isinstance(data, list) and data and all(isinstance(r, dict) for r in data)):
            return None
        columns: list[str] = []
        for row in data:
            columns.extend(c for c in row if c not in columns)

        def cell(value: Any) -> str:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            return text.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in data]
        return {"action": "transform", "text": "\n".join(lines)}

    return run


def _json_of(call: dict[str, Any]) -> Any:
    """The output as JSON: its text parsed, else its structured content (a tool returning
    a JSON string has both: ``{"result": "[...]"}`` and the text)."""
    result = call.get("result") or {}
    try:
        return json.loads(result.get("text") or "")
    except ValueError:
        return result.get("structured")


_KINDS = {
    "python": _python,
    "exec": _exec,
    "http": _http,
    "injection": _injection,
    "project": _project,
    "markdown": _markdown,
}


def build_hooks(specs: list[InterceptorSpec]) -> list[Hook]:
    """The hooks of ``mcp.interceptors``, in their order (a python target that does not
    import is an error now, not at the first call)."""
    return [Hook(spec, _KINDS[spec.kind](spec)) for spec in specs]
