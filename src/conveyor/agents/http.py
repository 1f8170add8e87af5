"""The MCP gateway on the server app: the streamable HTTP endpoint (``mcp.path``, default
``/mcp``) behind Conveyor's keys, and its reports.

The endpoint is Conveyor's route (the pipeline authenticates the key, checks the action
``mcp.call`` and counts the request) whose answer hands the request to the official SDK's
streamable HTTP session manager, serving one low-level ``Server`` whose handlers are the
gateway's: tools listed per key, calls controlled (:mod:`conveyor.agents.gateway`),
resources and prompts of every server (a prompt named as tools are). The caller (key,
role, ``x-conveyor-user``, ``x-conveyor-conversation``) rides in the ASGI scope to the
handlers. A refused or failed call is an MCP error whose ``data.code`` is stable.

``GET /v1/mcp/servers`` (``mcp.read``): each server's state, restarts, breaker and the
isolation applied; ``GET /v1/mcp/tools`` (``mcp.call``): the tools the caller may call.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.agents.gateway import Caller, McpGateway, ToolError
from conveyor.agents.settings import ledger_of, mcp_of
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.pipeline import Call

__all__ = ["build_server", "routes"]

_SCOPE_KEY = "conveyor.mcp_caller"


def _caller_of(ctx: Any) -> Caller:
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None) or {}
    found = scope.get(_SCOPE_KEY)
    return found if isinstance(found, Caller) else Caller()


def _key(call: Call) -> Any:
    """The caller's verified API key (None: no keys yet, the project is open)."""
    caller = call.caller
    return getattr(caller, "key", None)


def build_server(gateway: McpGateway, caller_of: Any = _caller_of) -> Any:
    """The SDK's low-level ``Server`` whose handlers are ``gateway``'s."""
    import mcp.types as types
    from mcp import MCPError
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=gateway.tools_for(caller_of(ctx)))

    async def call_tool(ctx: Any, params: Any) -> Any:
        try:
            return await gateway.call(params.name, params.arguments, caller_of(ctx))
        except ToolError as exc:
            raise MCPError(exc.rpc, exc.message, exc.data) from None

    async def list_resources(ctx: Any, params: Any) -> Any:
        return types.ListResourcesResult(resources=gateway.resources())

    async def read_resource(ctx: Any, params: Any) -> Any:
        try:
            return await gateway.read_resource(str(params.uri))
        except ToolError as exc:
            raise MCPError(exc.rpc, exc.message, exc.data) from None

    async def list_prompts(ctx: Any, params: Any) -> Any:
        return types.ListPromptsResult(prompts=gateway.prompts())

    async def get_prompt(ctx: Any, params: Any) -> Any:
        try:
            return await gateway.get_prompt(params.name, params.arguments)
        except ToolError as exc:
            raise MCPError(exc.rpc, exc.message, exc.data) from None

    from mcp.server.subscriptions import (
        InMemorySubscriptionBus,
        ListenHandler,
        PromptsListChanged,
        ResourcesListChanged,
        ToolsListChanged,
    )

    bus = InMemorySubscriptionBus()

    def changed() -> None:
        """The catalogue changed (a server came, went or changed its tools): tell the
        clients listening (``subscriptions/listen``), so they list it again."""
        import asyncio

        async def publish() -> None:
            for event in (ToolsListChanged(), PromptsListChanged(), ResourcesListChanged()):
                await bus.publish(event)

        with contextlib.suppress(RuntimeError):  # no loop running: nobody listens
            asyncio.get_running_loop().create_task(publish())

    gateway.listeners.append(changed)
    return Server(
        "conveyor-mcp-gateway",
        on_subscriptions_listen=ListenHandler(bus),
        instructions="Conveyor's MCP gateway: the tools of several servers, each call "
        "checked, limited and logged.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


class _Handoff(Response):
    """An answer that is the SDK's: the request goes to its session manager as it came."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.status_code = 200  # what the pipeline's access log sees
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.manager.handle_request(scope, receive, send)


def routes(context: AppContext) -> Contribution:
    from conveyor.web.app import Contribution

    project = context.project
    spec = mcp_of(project.spec)
    if importlib.util.find_spec("mcp") is None:
        # the MCP SDK is the mcp extra's: a server installed without it serves no /mcp,
        # unless the spec asks for tool servers, which it cannot serve without it
        if spec.servers:
            from conveyor.errors import MissingDependencyError

            raise MissingDependencyError(
                f"mcp.servers lists {', '.join(spec.servers)}, but the MCP SDK is not "
                "installed: pip install 'conveyor[mcp]'",
                seam="mcp",
                extra="mcp",
            )
        return Contribution(())

    def record(event: dict[str, Any]) -> None:
        project.events.record("mcp.call", subject=event["tool"], payload=event)

    gateway = McpGateway(
        spec,
        project.root,
        record=record,
        registry=context.metrics.registry,
        limiter=project.backend("ratelimit") if spec.limits.any else None,
        ledger=ledger_of(project, spec) if spec.budgets else None,
        project=project,
    )
    holder: dict[str, Any] = {}

    async def start() -> Any:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        manager = StreamableHTTPSessionManager(app=build_server(gateway), security_settings=None)
        # the manager's task group lives in a task of its own (not the request's that
        # happened to start it), entered and left there
        up, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with manager.run():
                up.set()
                await stop.wait()

        task = asyncio.get_running_loop().create_task(run())
        try:
            waiting = asyncio.ensure_future(up.wait())
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not up.is_set():
                waiting.cancel()
                task.result()  # its failure, raised here
            # the servers connect in the background: the app does not wait for them (a
            # tool server that is slow to start, or down, must not hold the model server
            # back); their tools join the catalogue as each connects
            await gateway.start(wait_s=0)
        except BaseException:
            stop.set()  # no half-started manager left running
            with contextlib.suppress(BaseException):
                await task
            raise
        holder.update(manager=manager, task=task, stop=stop)
        return manager

    async def started() -> Any:
        """The SDK's session manager, started on first need: at start-up when the spec
        names tool servers (they connect in the background), otherwise at the first MCP
        request, so a model server nobody calls over MCP never imports the SDK (a third
        of a second of its start-up). One start, in a task of its own: a first caller
        that goes away meanwhile does not cut it short; one that failed is tried again by
        the next caller."""
        manager = holder.get("manager")
        if manager is not None:
            return manager
        starting = holder.get("starting")
        if starting is None:
            starting = holder["starting"] = asyncio.get_running_loop().create_task(start())
            starting.add_done_callback(
                lambda t: (
                    holder.pop("starting", None)
                    if t.cancelled() or t.exception() is not None
                    else None
                )
            )
        return await asyncio.shield(starting)

    async def startup() -> None:
        if spec.servers:
            await started()

    async def shutdown() -> None:
        starting = holder.pop("starting", None)
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting  # a start under way finishes before it is stopped
        task = holder.pop("task", None)
        if task is None:
            return
        await gateway.stop()
        holder.pop("stop").set()
        holder.pop("manager", None)
        with contextlib.suppress(Exception):
            await task

    def endpoint_for(route: str | None) -> Any:
        async def routed(call: Call) -> Response:
            return await endpoint(call, route)

        return routed

    async def endpoint(call: Call, route: str | None = None) -> Response:
        manager = await started()
        key = _key(call)
        headers = dict(call.scope.get("headers") or ())
        call.scope[_SCOPE_KEY] = Caller(
            route=route,
            key=key.name if key is not None else None,
            role=key.role if key is not None else None,
            user=(headers.get(b"x-conveyor-user") or b"").decode() or None,
            conversation=(headers.get(b"x-conveyor-conversation") or b"").decode() or None,
            trace=tuple(
                (name.decode(), headers[name].decode())
                for name in (b"traceparent", b"tracestate")
                if name in headers
            ),
        )
        return _Handoff(manager)

    async def servers(call: Call) -> Response:
        return Response(orjson.dumps({"servers": gateway.status()}), media_type="application/json")

    async def tools(call: Call) -> Response:
        await started()  # the built-in tools are listed once the gateway has started
        key = _key(call)
        listed = gateway.tools_for(Caller(key=key.name if key is not None else None))
        body = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed]
        return Response(orjson.dumps({"tools": body}), media_type="application/json")

    table = [
        Route(
            method,
            path,
            endpoint_for(route),
            "mcp.call",
            summary + (f" (route {route}: a narrower catalogue)" if route else ""),
            tags=("mcp",),
            name=f"{method} {path}",
        )
        for route, path in (
            (None, spec.path),
            *((name, f"{spec.path}/{name}") for name in spec.access.routes),
        )
        for method, summary in (
            ("POST", "MCP (streamable HTTP): a request to the gateway's tools"),
            ("GET", "MCP (streamable HTTP): the server's stream of messages"),
            ("DELETE", "MCP (streamable HTTP): end the session"),
        )
    ]
    table += [
        Route(
            "GET",
            "/v1/mcp/servers",
            servers,
            "mcp.read",
            "The MCP gateway's tool servers: state, restarts, breaker, isolation",
            tags=("mcp",),
        ),
        Route(
            "GET",
            "/v1/mcp/tools",
            tools,
            "mcp.call",
            "The tools the caller's key may call through the MCP gateway",
            tags=("mcp",),
        ),
    ]
    return Contribution(table, startup=startup, shutdown=shutdown)
