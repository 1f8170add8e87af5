"""``conveyor mcp``: the MCP gateway's servers, tools, calls, a test call, and the gateway
as a stdio server for local clients.

::

    conveyor mcp servers                       # start each server here: state, tools, isolation
    conveyor mcp tools [--key NAME]            # the catalogue (as that key sees it)
    conveyor mcp test files__read '{"path": "a.txt"}'
    conveyor mcp calls --since 1h              # per tool: calls, errors, refusals, latency
    conveyor mcp serve --stdio                 # the gateway on stdin/stdout (local clients)

The HTTP endpoint needs no command: ``conveyor serve`` mounts it at ``mcp.path``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
)

__all__ = ["mcp_app"]

mcp_app = typer.Typer(help="The MCP gateway: tool servers, their tools and calls.")


async def _with_gateway(project: Any, work: Any) -> Any:
    from conveyor.agents.gateway import McpGateway
    from conveyor.agents.settings import ledger_of, mcp_of

    def record(event: dict[str, Any]) -> None:
        project.events.record("mcp.call", subject=event["tool"], payload=event)

    spec = mcp_of(project.spec)
    gateway = McpGateway(
        spec,
        project.root,
        record=record,
        limiter=project.backend("ratelimit") if spec.limits.any else None,
        ledger=ledger_of(project, spec) if spec.budgets else None,
        project=project,
    )
    await gateway.start()
    try:
        return await work(gateway)
    finally:
        await gateway.stop()


@mcp_app.command("servers")
@errors
def servers_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Start each configured tool server from this process (as the server would), list
    its tools, and report its state, transport, restarts and the isolation applied."""
    import asyncio

    async def work(gateway: Any) -> list[dict[str, Any]]:
        return gateway.status()  # type: ignore[no-any-return]

    with open_project(project) as proj:
        rows = asyncio.run(_with_gateway(proj, work))
    if as_json:
        echo_list(rows)
        return
    if not rows:
        typer.echo("no MCP servers: add mcp.servers to conveyor.yaml")
        return
    from rich.table import Table

    table = Table("server", "transport", "state", "tools", "isolation", "last error")
    for row in rows:
        isolation = row["isolation"] or {}
        table.add_row(
            row["server"],
            row["transport"],
            row["state"],
            str(row["tools"]),
            str(isolation.get("level", "-")),
            row["last_error"] or "",
        )
    console().print(table)


@mcp_app.command("tools")
@errors
def tools_cmd(
    key: Annotated[str | None, typer.Option(help="List as this key name sees them.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The gateway's catalogue: every tool under the name clients call it by, its server,
    whether a failed call is retried, its timeout."""
    import asyncio

    from conveyor.agents.gateway import Caller

    async def work(gateway: Any) -> list[dict[str, Any]]:
        listed = {t.name for t in gateway.tools_for(Caller(key=key))}
        return [
            {
                "tool": e.name,
                "server": e.server,
                "upstream_tool": e.tool.name,
                "retried": e.retryable,
                "timeout_s": e.timeout_s,
                "description": (e.tool.description or "").splitlines()[0:1],
            }
            for n, e in sorted(gateway.catalogue.items())
            if n in listed
        ]

    with open_project(project) as proj:
        rows = asyncio.run(_with_gateway(proj, work))
    for row in rows:
        row["description"] = row["description"][0] if row["description"] else ""
    if as_json:
        echo_list(rows)
        return
    if not rows:
        typer.echo("no tools")
        return
    from rich.table import Table

    table = Table("tool", "server", "retried", "timeout", "description")
    for row in rows:
        table.add_row(
            row["tool"],
            row["server"],
            "yes" if row["retried"] else "no",
            f"{row['timeout_s']:g} s",
            row["description"],
        )
    console().print(table)


@mcp_app.command("test")
@errors
def call_cmd(
    tool: Annotated[str, typer.Argument(help="The tool, by its catalogue name.")],
    arguments: Annotated[str, typer.Argument(help="The arguments, a JSON object.")] = "{}",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call one tool through the gateway from this process (its servers started here):
    every check applies and the call is recorded. Exit 1 when it failed or was refused."""
    import asyncio
    import json

    from conveyor.agents.gateway import Caller, ToolError
    from conveyor.errors import InvalidInputError

    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"arguments are not JSON: {exc}", field="arguments") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError("arguments are a JSON object", field="arguments")

    async def work(gateway: Any) -> dict[str, Any]:
        try:
            result = await gateway.call(tool, parsed, Caller(key="cli"))
        except ToolError as exc:
            return {"tool": tool, "error": exc.message, "code": exc.code}
        return {"tool": tool, **result.model_dump(mode="json", exclude_none=True)}

    with open_project(project) as proj:
        authorized(proj, "mcp.call")
        found = asyncio.run(_with_gateway(proj, work))
    if as_json:
        echo_json(found)
    elif "error" in found:
        typer.secho(f"{found['code']}: {found['error']}", fg=typer.colors.RED, err=True)
    else:
        for item in found.get("content") or ():
            typer.echo(item.get("text", item))
    if "error" in found or found.get("isError") or found.get("is_error"):
        raise typer.Exit(1)


@mcp_app.command("calls")
@errors
def calls_cmd(
    since: Annotated[str, typer.Option(help="An age (1h) or an ISO time.")] = "1d",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tool calls over a period, per tool: calls, errors, refusals by code, retries,
    truncated results, median and p95 latency."""
    from datetime import UTC, datetime

    from conveyor.agents.report import calls_report
    from conveyor.durations import parse_moment

    start = parse_moment(since, datetime.now(UTC), option="since")
    with open_project(project) as proj:
        rows = calls_report(proj, since=start)
    if as_json:
        echo_list(rows)
        return
    if not rows:
        typer.echo("no MCP calls in the period")
        return
    from rich.table import Table

    columns = [
        "tool",
        "calls",
        "ok",
        "error_result",
        "refused",
        "failed",
        "retries",
        "p50_ms",
        "p95_ms",
    ]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console().print(table)


@mcp_app.command("serve")
@errors
def serve_cmd(
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP on stdin/stdout.")] = False,
    key: Annotated[
        str | None, typer.Option(help="The key name whose access rules apply (mcp.access).")
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """The gateway as an MCP server on stdin/stdout, for a local client that starts it
    (Claude Desktop, an IDE). Over HTTP, `conveyor serve` mounts it at mcp.path."""
    import asyncio

    if not stdio:
        typer.echo("over HTTP: `conveyor serve` mounts the gateway at mcp.path; --stdio here")
        raise typer.Exit(2)
    from conveyor.agents.gateway import Caller
    from conveyor.agents.http import build_server

    async def work(gateway: Any) -> None:
        from mcp.server.stdio import stdio_server

        server = build_server(gateway, caller_of=lambda ctx: Caller(key=key or "stdio"))
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    with open_project(project) as proj:
        authorized(proj, "mcp.call")
        asyncio.run(_with_gateway(proj, work))
