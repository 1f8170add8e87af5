"""The MCP gateway: one catalogue over many tool servers, and every call controlled.

A call, in order (each refusal an MCP error with a stable ``data.code``, nothing sent):

1. **the tool**: its catalogue name resolved to a server and its own name (unknown:
   ``unknown_tool``, naming the tools the key may call);
2. **access**: the key's allow/deny globs (``forbidden_tool``);
3. **arguments**: at most ``max_argument_bytes`` (``too_large``), valid against the tool's
   input schema (``invalid_arguments``, with the path of the bad field);
4. **secrets** in the arguments (the guardrails' detectors): blocked (``secret_blocked``)
   or redacted;
5. **the server**: its breaker (``server_degraded`` while open), at most ``concurrency``
   calls in flight (the rest wait their turn within the timeout), the call with its
   timeout (``timeout``); a tool that may be retried (idempotent: declared in
   ``mcp.tools``, or the server's ``idempotentHint`` on a tool not ``destructiveHint``) is
   retried ``retries`` times with a doubling backoff on a failure, a timeout or an error
   result; a server that crashed fails its calls at once (``server_down``) and restarts;
6. **the result**: secrets in it blocked or redacted; text past ``max_result_bytes`` cut,
   with a marker saying how much was.

Every call is an ``mcp.call`` event (server, tool, caller, status, latency, attempts, the
arguments' and result's digests and sizes, what the checks decided) and counts in
``conveyor_mcp_calls{server, tool, status}`` and ``conveyor_mcp_call_seconds{server}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.agents.upstream import ServerDown, Upstream

if TYPE_CHECKING:
    from conveyor.agents.settings import McpSpec

__all__ = ["Caller", "Entry", "McpGateway", "ToolError"]

log = logging.getLogger("conveyor.agents")

# JSON-RPC error codes (MCP's): the request's params are wrong; the server failed.
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class ToolError(Exception):
    """A call the gateway refused or could not complete: ``code`` is stable
    (``unknown_tool``, ``forbidden_tool``, ``invalid_arguments``, ``too_large``,
    ``secret_blocked``, ``server_down``, ``server_degraded``, ``timeout``)."""

    def __init__(self, code: str, message: str, *, rpc: int = INVALID_PARAMS, **data: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.rpc = rpc
        self.data = {"code": code, **data}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the key's name and role, and the user and conversation it says."""

    key: str | None = None
    role: str | None = None
    user: str | None = None
    conversation: str | None = None
    #: The endpoint it came by (mcp.access.routes; None: the main one).
    route: str | None = None
    #: The W3C trace context the request came with (traceparent, tracestate): the call's
    #: span joins that trace, as the LLM call that asked for the tool does.
    trace: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Entry:
    """A tool of the catalogue: its name there, its server, and how it is called."""

    name: str
    server: str
    tool: Any  # the server's mcp Tool
    timeout_s: float
    retryable: bool
    cost: float
    _validator: Any = field(default=None, repr=False)

    def listed(self, *, keep_schema: bool = True) -> Any:
        """The tool as the gateway lists it: the server's, under its catalogue name
        (without its output schema when an interceptor may rewrite its output)."""
        update: dict[str, Any] = {"name": self.name}
        if not keep_schema:
            update["output_schema"] = None
        return self.tool.model_copy(update=update)

    def validate(self, arguments: dict[str, Any]) -> None:
        if self._validator is None:
            from jsonschema import Draft202012Validator

            schema = self.tool.input_schema or {"type": "object"}
            self._validator = Draft202012Validator(schema)
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            path = "/".join(str(p) for p in first.path) or "(arguments)"
            raise ToolError(
                "invalid_arguments",
                f"arguments of {self.name!r} do not match its input schema at {path}: "
                f"{first.message}",
                path=path,
            )


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class McpGateway:
    """The upstream servers, the catalogue over them, and the control of each call."""

    def __init__(
        self,
        spec: McpSpec,
        root: Path,
        *,
        record: Callable[[dict[str, Any]], None] | None = None,
        registry: Any = None,
        environ: dict[str, str] | None = None,
        limiter: Any = None,
        ledger: Any = None,
        project: Any = None,
    ) -> None:
        self.spec = spec
        #: Conveyor's own operations as tools (the built-in server), given a project.
        self.project = project
        self.builtin: dict[str, Any] = {}
        if project is not None and spec.conveyor_tools:
            from conveyor.agents.conveyor_tools import conveyor_tools

            self.builtin = {t.name: t for t in conveyor_tools()}
        self.root = root
        self.record = record
        self.upstreams = {
            name: Upstream(name, server, root, environ=environ, on_change=self._changed)
            for name, server in spec.servers.items()
            if server.enabled
        }
        self.catalogue: dict[str, Entry] = {}
        self.listeners: list[Callable[[], None]] = []
        self._limits = {
            name: asyncio.Semaphore(s.spec.concurrency) for name, s in self.upstreams.items()
        }
        from conveyor.breaker import CircuitBreaker

        self.breakers = {
            name: CircuitBreaker(
                f"mcp:{name}", failures=s.spec.breaker_failures, reset_s=s.spec.breaker_reset_s
            )
            for name, s in self.upstreams.items()
        }
        self._secrets: Any = None
        if spec.secrets != "off":
            from conveyor.guardrails.detectors import build

            self._secrets = build("secrets")
        self._metrics = _Metrics(registry) if registry is not None else None
        #: OpenTelemetry's tracer when the process traces (conveyor.gateway.tracing's rule).
        self.tracer: Any = None
        from conveyor.agents.control import CallBudgets, CallLimits
        from conveyor.agents.interceptors import build_hooks

        self.hooks = build_hooks(list(spec.interceptors))

        self.limits = (
            CallLimits(spec.limits, limiter) if spec.limits.any and limiter is not None else None
        )
        self.budgets = (
            CallBudgets(spec.budgets, ledger) if spec.budgets and ledger is not None else None
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, wait_s: float | None = None) -> None:
        """Start every server; wait for each up to its connect timeout (or ``wait_s``). A
        server that does not come up is down, and keeps being retried: not fatal."""
        from conveyor.gateway.tracing import tracer

        self.tracer = tracer()  # None when the process has no tracing: no span, no import
        for upstream in self.upstreams.values():
            upstream.start()
        self._rebuild()  # the built-in tools at once; each server's as it connects
        if wait_s == 0:
            return
        await asyncio.gather(
            *(
                u.ready(wait_s if wait_s is not None else u.spec.connect_timeout_s)
                for u in self.upstreams.values()
            )
        )
        self._rebuild()

    async def stop(self) -> None:
        await asyncio.gather(*(u.stop() for u in self.upstreams.values()))
        for hook in self.hooks:
            with contextlib.suppress(Exception):
                await hook.aclose()
        if self.budgets is not None:
            with contextlib.suppress(Exception):
                await self.budgets.drain()

    def _changed(self, upstream: Upstream) -> None:
        self._rebuild()
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener()

    # -- the catalogue -----------------------------------------------------------------

    def _rebuild(self) -> None:
        spec = self.spec
        counts: dict[str, int] = {}
        for upstream in self.upstreams.values():
            for tool in upstream.tools:
                counts[tool.name] = counts.get(tool.name, 0) + 1
        found: dict[str, Entry] = {}
        for name, upstream in self.upstreams.items():
            for tool in upstream.tools:
                prefixed = spec.naming == "prefix" or counts[tool.name] > 1
                listed = f"{name}{spec.separator}{tool.name}" if prefixed else tool.name
                settings = spec.tools.get(listed)
                hints = tool.annotations
                idempotent = (
                    settings.idempotent
                    if settings is not None and settings.idempotent is not None
                    else bool(
                        hints is not None and hints.idempotent_hint and not hints.destructive_hint
                    )
                )
                found[listed] = Entry(
                    name=listed,
                    server=name,
                    tool=tool,
                    timeout_s=(settings.timeout_s if settings and settings.timeout_s else None)
                    or upstream.spec.timeout_s,
                    retryable=idempotent,
                    cost=settings.cost if settings is not None else 0.0,
                )
        from conveyor.agents.conveyor_tools import SERVER

        for tool in self.builtin.values():  # always prefixed: no server's tool shadows them
            listed = f"{SERVER}{spec.separator}{tool.name}"
            found[listed] = Entry(
                name=listed,
                server=SERVER,
                tool=tool.tool(),
                timeout_s=60.0,
                retryable=False,
                cost=0.0,
            )
        self.catalogue = found

    def tools_for(self, caller: Caller) -> list[Any]:
        """The tools ``caller``'s key may call, as listed to it."""
        access = self.spec.access
        return [
            e.listed(keep_schema=not self.reshaped(n))
            for n, e in sorted(self.catalogue.items())
            if access.permits(n, caller.key, caller.route)
        ]

    def entry(self, name: str, caller: Caller) -> Entry:
        access = self.spec.access
        found = self.catalogue.get(name)
        if found is None:
            known = [
                n for n in sorted(self.catalogue) if access.permits(n, caller.key, caller.route)
            ]
            server, sep, _ = name.partition(self.spec.separator)
            near = [n for n in known if sep and n.startswith(server + sep)]
            where = f"tools of {server!r}" if near else "tools"
            shown = near or known
            listed = ", ".join(shown[:30]) + (" ..." if len(shown) > 30 else "")
            raise ToolError(
                "unknown_tool", f"no tool {name!r}; {where}: {listed or 'none'}", tool=name
            )
        if not access.permits(name, caller.key, caller.route):
            where = f" on route {caller.route!r}" if caller.route else ""
            raise ToolError(
                "forbidden_tool",
                f"key {caller.key!r} may not call {name!r}{where} (mcp.access)",
                tool=name,
                key=caller.key,
                route=caller.route,
            )
        return found

    # -- resources and prompts ---------------------------------------------------------

    def resources(self) -> list[Any]:
        """Every server's resources (a URI two servers share: the first server's)."""
        seen: dict[str, Any] = {}
        for upstream in self.upstreams.values():
            for resource in upstream.resources:
                seen.setdefault(str(resource.uri), resource)
        return list(seen.values())

    async def read_resource(self, uri: str) -> Any:
        for upstream in self.upstreams.values():
            if any(str(r.uri) == uri for r in upstream.resources):
                try:
                    client = upstream.connected()
                except ServerDown as exc:
                    raise ToolError("server_down", exc.message, rpc=INTERNAL_ERROR) from None
                return await client.read_resource(uri)
        raise ToolError("unknown_resource", f"no resource {uri!r}", uri=uri)

    def _prompt_names(self) -> dict[str, tuple[Upstream, Any]]:
        spec = self.spec
        counts: dict[str, int] = {}
        for upstream in self.upstreams.values():
            for prompt in upstream.prompts:
                counts[prompt.name] = counts.get(prompt.name, 0) + 1
        found = {}
        for name, upstream in self.upstreams.items():
            for prompt in upstream.prompts:
                prefixed = spec.naming == "prefix" or counts[prompt.name] > 1
                found[f"{name}{spec.separator}{prompt.name}" if prefixed else prompt.name] = (
                    upstream,
                    prompt,
                )
        return found

    def prompts(self) -> list[Any]:
        return [p.model_copy(update={"name": n}) for n, (_, p) in self._prompt_names().items()]

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> Any:
        found = self._prompt_names().get(name)
        if found is None:
            raise ToolError("unknown_prompt", f"no prompt {name!r}", prompt=name)
        upstream, prompt = found
        try:
            client = upstream.connected()
        except ServerDown as exc:
            raise ToolError("server_down", exc.message, rpc=INTERNAL_ERROR) from None
        return await client.get_prompt(prompt.name, arguments)

    # -- a call ------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any] | None, caller: Caller) -> Any:
        """Call the tool ``name`` for ``caller`` (see the module); the MCP CallToolResult.
        With tracing on, one span ``execute_tool NAME`` in the caller's trace."""
        if self.tracer is None:
            return await self._traced(name, arguments, caller, None)
        from opentelemetry import propagate, trace

        parent = propagate.extract(dict(caller.trace)) if caller.trace else None
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "extension",
        }
        if caller.conversation:
            attributes["gen_ai.conversation.id"] = caller.conversation
        with self.tracer.start_as_current_span(
            f"execute_tool {name}",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            return await self._traced(name, arguments, caller, span)

    async def _traced(
        self, name: str, arguments: dict[str, Any] | None, caller: Caller, span: Any
    ) -> Any:
        started = time.perf_counter()
        event: dict[str, Any] = {
            "tool": name,
            "server": None,
            "upstream_tool": None,
            "key": caller.key,
            "user": caller.user,
            "conversation": caller.conversation,
            "status": "error",
            "code": None,
            "attempts": 0,
            "decisions": [],
            "arguments_digest": None,
            "arguments_bytes": 0,
            "result_digest": None,
            "result_bytes": 0,
            "truncated": False,
            "error": None,
        }
        try:
            result = await self._call(name, arguments or {}, caller, event)
            event["status"] = "error_result" if result.is_error else "ok"
            return result
        except ToolError as exc:
            event["status"] = "refused" if exc.rpc == INVALID_PARAMS else "failed"
            event["code"], event["error"] = exc.code, exc.message
            raise
        finally:
            event["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            self._observe(event)
            if span is not None:
                _describe_span(span, event)

    async def _call(
        self, name: str, arguments: dict[str, Any], caller: Caller, event: dict[str, Any]
    ) -> Any:
        entry = self.entry(name, caller)
        event["server"], event["upstream_tool"] = entry.server, entry.tool.name
        raw = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
        event["arguments_digest"], event["arguments_bytes"] = _digest(raw), len(raw)
        if len(raw) > self.spec.max_argument_bytes:
            raise ToolError(
                "too_large",
                f"arguments of {len(raw)} bytes; at most {self.spec.max_argument_bytes}",
            )
        entry.validate(arguments)
        arguments = self._scan_arguments(arguments, raw, event)
        arguments = await self._before(entry, arguments, caller, event)
        await self._limit(caller)
        held = await self.budgets.reserve(name, entry.cost, caller) if self.budgets else []
        try:
            result = await self._control(entry, arguments, caller, event)
            result = await self._after(entry, arguments, result, caller, event)
            return self._measured(result, event)
        finally:
            if held:
                assert self.budgets is not None
                await self.budgets.settle(held, event["attempts"] > 0)

    async def _limit(self, caller: Caller) -> None:
        if self.limits is None:
            return
        from conveyor.errors import RateLimitedError

        try:
            if getattr(self.limits.limiter, "local", False):
                self.limits.take(caller)
            else:
                await asyncio.to_thread(self.limits.take, caller)
        except RateLimitedError as exc:
            raise ToolError(
                "rate_limited",
                exc.message,
                retry_after=round(float(exc.context.get("retry_after") or 0), 3),
            ) from None

    async def _control(
        self, entry: Entry, arguments: dict[str, Any], caller: Caller, event: dict[str, Any]
    ) -> Any:
        if entry.server not in self.upstreams:  # the built-in server: Conveyor's own tools
            return await self._builtin(entry, arguments, caller, event)
        upstream = self.upstreams[entry.server]
        breaker = self.breakers[entry.server]
        attempts = 1 + (upstream.spec.retries if entry.retryable else 0)
        backoff = upstream.spec.backoff_s
        last: Any = None
        for attempt in range(1, attempts + 1):
            if not breaker.allow():
                raise ToolError(
                    "server_degraded",
                    f"MCP server {entry.server!r} is failing and bypassed for now: "
                    f"{breaker.last_error}",
                    rpc=INTERNAL_ERROR,
                    server=entry.server,
                )
            event["attempts"] = attempt  # sent (or tried: a server down fails it at once)
            try:
                last = await self._once(entry, upstream, arguments)
            except ToolError as exc:
                breaker.failure(exc.message)
                if attempt == attempts or (exc.code == "server_down" and not entry.retryable):
                    raise
            else:
                if not last.is_error:
                    breaker.success()
                    break
                breaker.success()  # the server answered: an error of the tool's own
                if attempt == attempts:
                    break
            await asyncio.sleep(backoff)
            backoff *= 2
        return self._finish(last, event)

    async def _builtin(
        self, entry: Entry, arguments: dict[str, Any], caller: Caller, event: dict[str, Any]
    ) -> Any:
        """One of Conveyor's own operations: the caller's role checked against its action
        (as over HTTP), run in a thread with the caller's key as the actor."""
        import mcp.types as types

        from conveyor.errors import ConveyorError
        from conveyor.governance.roles import allows, needed_role

        tool = self.builtin[entry.tool.name]
        if caller.role is not None and not allows(caller.role, tool.action):
            raise ToolError(
                "forbidden",
                f"{entry.name!r} needs the role {needed_role(tool.action)!r} or higher "
                f"({tool.action}); key {caller.key!r} has {caller.role!r}",
                required_role=needed_role(tool.action),
                action=tool.action,
            )
        actor = f"key:{caller.key}" if caller.key else "mcp"
        event["attempts"] = 1
        try:
            found = await asyncio.wait_for(
                asyncio.to_thread(tool.run, self.project, arguments, actor), entry.timeout_s
            )
        except ConveyorError as exc:
            raise ToolError(exc.code, exc.message, **exc.context) from None
        text = orjson.dumps(found, default=str).decode()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=orjson.loads(text),
        )

    async def _once(self, entry: Entry, upstream: Upstream, arguments: dict[str, Any]) -> Any:
        from mcp import MCPError

        limit = self._limits[entry.server]
        deadline = time.monotonic() + entry.timeout_s
        try:
            async with asyncio.timeout(entry.timeout_s):
                async with limit:
                    client = upstream.connected()
                    left = max(0.001, deadline - time.monotonic())
                    return await client.call_tool(
                        entry.tool.name, arguments, read_timeout_seconds=left
                    )
        except ServerDown as exc:
            raise ToolError(
                "server_down", exc.message, rpc=INTERNAL_ERROR, server=entry.server
            ) from None
        except TimeoutError:
            raise ToolError(
                "timeout",
                f"{entry.name!r} did not answer within {entry.timeout_s:g} s",
                rpc=INTERNAL_ERROR,
                server=entry.server,
            ) from None
        except MCPError as exc:
            if "timed out" in exc.message:
                raise ToolError(
                    "timeout",
                    f"{entry.name!r} did not answer within {entry.timeout_s:g} s",
                    rpc=INTERNAL_ERROR,
                    server=entry.server,
                ) from None
            if "closed" in exc.message.lower():
                upstream.broken(exc.message)
                raise ToolError(
                    "server_down",
                    f"MCP server {entry.server!r} went away during the call ({exc.message}); "
                    "it is restarting",
                    rpc=INTERNAL_ERROR,
                    server=entry.server,
                ) from None
            raise ToolError(
                "upstream_error",
                f"MCP server {entry.server!r}: {exc.message}",
                rpc=INTERNAL_ERROR,
                server=entry.server,
            ) from None

    # -- checks on what goes in and out --------------------------------------------------

    def _scan_arguments(
        self, arguments: dict[str, Any], raw: bytes, event: dict[str, Any]
    ) -> dict[str, Any]:
        if self._secrets is None:
            return arguments
        text = raw.decode()
        found = self._secrets.scan(text)
        if not found:
            return arguments
        self._secret_found(found, "arguments", event)
        return orjson.loads(_redact(text, found))  # type: ignore[no-any-return]

    def _secret_found(self, found: list[Any], where: str, event: dict[str, Any]) -> None:
        """The decision recorded; ToolError ``secret_blocked`` when the policy blocks."""
        labels = sorted({f.label for f in found})
        event["decisions"].append(
            {"check": "secrets", "where": where, "labels": labels, "action": self.spec.secrets}
        )
        if self.spec.secrets == "block":
            what = (
                "the arguments hold a secret ({}): not sent to the tool"
                if where == "arguments"
                else "the tool's result holds a secret ({}): withheld"
            )
            raise ToolError(
                "secret_blocked",
                what.format(", ".join(labels)),
                rpc=INVALID_PARAMS if where == "arguments" else INTERNAL_ERROR,
                labels=labels,
            )

    def _finish(self, result: Any, event: dict[str, Any]) -> Any:
        from mcp.types import TextContent

        texts = [c for c in result.content if isinstance(c, TextContent)]
        joined = "".join(c.text for c in texts)
        if self._secrets is not None and joined:
            found = self._secrets.scan(joined)
            if found:
                self._secret_found(found, "result", event)
                scan = self._secrets.scan

                def redact(text: str) -> str:
                    return _redact(text, scan(text))

                content = [
                    c.model_copy(update={"text": redact(c.text)})
                    if isinstance(c, TextContent)
                    else c
                    for c in result.content
                ]
                structured = _map_strings(result.structured_content, redact)
                result = result.model_copy(
                    update={"content": content, "structured_content": structured}
                )
        return result

    def _measured(self, result: Any, event: dict[str, Any]) -> Any:
        """The result cut to ``max_result_bytes``; its digest and size in the event."""
        result, event["truncated"] = _truncate(result, self.spec.max_result_bytes)
        raw = orjson.dumps(result.model_dump(mode="json", exclude_none=True))
        event["result_digest"], event["result_bytes"] = _digest(raw), len(raw)
        return result

    # -- interceptors --------------------------------------------------------------------

    def _hook_call(
        self, phase: str, entry: Entry, arguments: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        return {
            "phase": phase,
            "tool": entry.name,
            "server": entry.server,
            "arguments": arguments,
            "caller": {"key": caller.key, "user": caller.user, "conversation": caller.conversation},
        }

    async def _before(
        self, entry: Entry, arguments: dict[str, Any], caller: Caller, event: dict[str, Any]
    ) -> dict[str, Any]:
        for hook in self.hooks:
            if not hook.applies(entry.name, "before"):
                continue
            verdict = await hook(self._hook_call("before", entry, arguments, caller))
            self._decided(hook.name, "before", verdict, event)
            if verdict.action == "transform" and verdict.arguments is not None:
                entry.validate(verdict.arguments)  # what the hook made must still fit
                arguments = verdict.arguments
        return arguments

    async def _after(
        self,
        entry: Entry,
        arguments: dict[str, Any],
        result: Any,
        caller: Caller,
        event: dict[str, Any],
    ) -> Any:
        from mcp.types import TextContent

        for hook in self.hooks:
            if not hook.applies(entry.name, "after"):
                continue
            call = self._hook_call("after", entry, arguments, caller)
            call["result"] = {
                "text": "".join(c.text for c in result.content if isinstance(c, TextContent)),
                "structured": result.structured_content,
                "is_error": result.is_error,
            }
            verdict = await hook(call)
            self._decided(hook.name, "after", verdict, event)
            if verdict.action == "transform" and verdict.text is not None:
                result = result.model_copy(
                    update={
                        "content": [TextContent(type="text", text=verdict.text)],
                        "structured_content": None,
                    }
                )
        return result

    @staticmethod
    def _decided(name: str, phase: str, verdict: Any, event: dict[str, Any]) -> None:
        if verdict.action == "allow":
            return
        event["decisions"].append(
            {"check": name, "where": phase, "action": verdict.action, "reason": verdict.reason}
        )
        if verdict.action == "block":
            raise ToolError(
                "interceptor_blocked",
                f"blocked by interceptor {name!r} ({phase} the call): "
                f"{verdict.reason or 'no reason given'}",
                rpc=INTERNAL_ERROR if phase == "after" else INVALID_PARAMS,
                interceptor=name,
                reason=verdict.reason,
            )

    def reshaped(self, name: str) -> bool:
        """Whether an interceptor may rewrite ``name``'s output (its output schema is then
        not promised to clients)."""
        return any(h.applies(name, "after") for h in self.hooks)

    # -- telemetry -----------------------------------------------------------------------

    def _observe(self, event: dict[str, Any]) -> None:
        try:
            if self._metrics is not None:
                self._metrics.observe(event)
            if self.record is not None:
                self.record(event)
        except Exception:  # telemetry never fails a call
            log.exception("recording an mcp.call event failed")

    def status(self) -> list[dict[str, Any]]:
        from conveyor.agents.conveyor_tools import SERVER

        rows = []
        if self.builtin:
            rows.append(
                {
                    "server": SERVER,
                    "transport": "built-in",
                    "state": "ready",
                    "tools": len(self.builtin),
                    "resources": 0,
                    "prompts": 0,
                    "restarts": 0,
                    "last_error": None,
                    "isolation": None,
                    "stderr": None,
                    "breaker": "closed",
                }
            )
        for name, upstream in sorted(self.upstreams.items()):
            row = upstream.status()
            row["breaker"] = self.breakers[name].state
            rows.append(row)
        return rows


def _describe_span(span: Any, event: dict[str, Any]) -> None:
    """The call's outcome on its span (never its arguments or result)."""
    from opentelemetry.trace import Status, StatusCode

    for key, value in (
        ("conveyor.mcp.server", event["server"]),
        ("conveyor.mcp.upstream_tool", event["upstream_tool"]),
        ("conveyor.mcp.status", event["status"]),
        ("conveyor.mcp.attempts", event["attempts"]),
        ("conveyor.mcp.truncated", event["truncated"]),
    ):
        if value is not None:
            span.set_attribute(key, value)
    if event["status"] in ("refused", "failed"):
        span.set_attribute("error.type", event["code"] or "error")
        span.set_status(Status(StatusCode.ERROR, event["error"]))
    elif event["status"] == "error_result":
        span.set_attribute("error.type", "tool_error")
        span.set_status(Status(StatusCode.ERROR, "the tool answered an error"))


def _redact(text: str, found: list[Any]) -> str:
    for finding in sorted(found, key=lambda f: f.start, reverse=True):
        text = text[: finding.start] + f"<{finding.label}>" + text[finding.end :]
    return text


def _truncate(result: Any, limit: int) -> tuple[Any, bool]:
    """Text content past ``limit`` bytes cut, with a marker; (result, whether it was)."""
    from mcp.types import TextContent

    total = 0
    content = []
    cut = False
    for item in result.content:
        if isinstance(item, TextContent):
            raw = item.text.encode()
            if total + len(raw) > limit:
                keep = max(0, limit - total)
                kept = raw[:keep].decode(errors="ignore")
                dropped = len(raw) - len(kept.encode())
                item = item.model_copy(
                    update={
                        "text": kept + f"\n[... truncated by the gateway: {dropped} more bytes]"
                    }
                )
                cut = True
            total += len(item.text.encode())
        content.append(item)
    if not cut:
        return result, False
    # the structured content's strings cut alike: still valid against the output schema
    left = [limit]

    def cut_string(text: str) -> str:
        raw = text.encode()
        keep = max(0, left[0])
        left[0] -= len(raw)
        if len(raw) <= keep:
            return text
        kept = raw[:keep].decode(errors="ignore")
        return (
            kept + f"\n[... truncated by the gateway: {len(raw) - len(kept.encode())} more bytes]"
        )

    structured = _map_strings(result.structured_content, cut_string)
    return result.model_copy(update={"content": content, "structured_content": structured}), True


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` (JSON) with ``fn`` applied to every string in it, in document order."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.calls = Counter(
            "conveyor_mcp_calls",
            "Tool calls through the MCP gateway, by server, tool and status.",
            ("server", "tool", "status"),
            registry=registry,
        )
        self.seconds = Histogram(
            "conveyor_mcp_call_seconds",
            "Latency of tool calls through the MCP gateway, by server.",
            ("server",),
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
        )

    def observe(self, event: dict[str, Any]) -> None:
        server = event["server"] or "-"
        self.calls.labels(server, event["tool"], event["status"]).inc()
        self.seconds.labels(server).observe(event["latency_ms"] / 1000)
