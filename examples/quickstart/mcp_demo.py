"""The quickstart's MCP step: Conveyor's MCP gateway in front of two example tool servers
(``examples/mcp``), driven by a scripted agent loop with the official ``mcp`` client.

- ``weather``: slow, and fails one call in three; ``climate_report`` takes 5 s;
- ``crm``: its ``customer`` tool leaks an API key in one record.

1. the agent lists the tools: one catalogue, names prefixed by server;
2. ``weather__forecast`` fails upstream, is retried (read-only and idempotent), answers;
3. ``weather__climate_report`` runs past its 1 s timeout: a clean ``timeout`` error;
4. ``crm__customer`` for customer 42: the API key in the answer is caught, the answer
   withheld (``secret_blocked``);
5. ``crm__list_customers``: JSON rows turned into a Markdown table by an interceptor;
6. with Conveyor's own tools (the built-in server ``conveyor``), the agent reads the alerts
   and rolls ``fraud-detector``'s route back, recorded with its key as the actor;
7. the conversation's budget of tool calls trips, naming itself;
8. every call is an ``mcp.call`` event: ``conveyor mcp calls`` reports them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

import conveyor

EXAMPLES = Path(__file__).resolve().parents[1] / "mcp"


def mcp_spec() -> str:
    """The ``mcp:`` section of the quickstart's conveyor.yaml."""
    python = sys.executable
    return f"""
mcp:
  servers:
    weather:
      command: ["{python}", "{EXAMPLES / "weather_server.py"}"]
      retries: 2
      backoff_s: 0.05
    crm:
      command: ["{python}", "{EXAMPLES / "crm_server.py"}"]
  tools:
    weather__climate_report: {{timeout_s: 1}}
  budgets:
    - {{name: conversation-calls, scope: conversation, period: day, max_calls: 8}}
  interceptors:
    - {{kind: markdown, tools: ["crm__list_customers"]}}
"""


def run_mcp(root: Path, console: Console, *, step: str) -> dict[str, Any]:
    """Serve the project's app with its MCP gateway and run the agent loop against it."""
    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer
    from conveyor.testing.wait import wait_until

    with (root / "conveyor.yaml").open("a") as fh:
        fh.write(mcp_spec())
    with conveyor.Project.open(root) as project:
        # an on-call agent: it may roll a model back (deployer), as its human would
        token, _ = ApiKeys(project.store, project.events).create("agent", "deployer")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = server.url

            def ready() -> bool:
                import httpx

                got = httpx.get(
                    f"{url}/v1/mcp/servers", headers={"authorization": f"Bearer {token}"}
                )
                states = {s["server"]: s["state"] for s in got.json().get("servers", [])}
                return states.get("weather") == states.get("crm") == "ready"

            wait_until(ready, message="the example tool servers are up", timeout=60)
            story = asyncio.run(_agent(url, token, console, step))
            project.events.flush()
            from datetime import UTC, datetime, timedelta

            from conveyor.agents.report import calls_report

            rows = calls_report(project, since=datetime.now(UTC) - timedelta(hours=1))
            console.print(
                "   conveyor mcp calls: "
                + ", ".join(f"{r['tool']} {r['calls']} ({r['retries']} retried)" for r in rows)
            )
            story["calls"] = rows
            return story
        finally:
            server.stop()


async def _agent(url: str, token: str, console: Console, step: str) -> dict[str, Any]:
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client

    headers = {"authorization": f"Bearer {token}", "x-conveyor-conversation": "support-7"}
    found: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as agent,
    ):
        if True:  # the agent's session
            tools = sorted(t.name for t in (await agent.list_tools()).tools)
            servers: dict[str, int] = {}
            for name in tools:
                server = name.split("__")[0]
                servers[server] = servers.get(server, 0) + 1
            console.print(
                f"[green]{step}[/] MCP gateway: the agent sees {len(tools)} tools of "
                + ", ".join(f"{s} ({n})" for s, n in sorted(servers.items()))
            )
            found["tools"] = tools

            forecast = await agent.call_tool("weather__forecast", {"city": "Lyon"})
            text = forecast.content[0].text
            console.print(f"   weather__forecast failed upstream, retried: {text!r}")
            found["forecast"] = text

            async def refused(tool: str, arguments: dict[str, Any]) -> Any:
                try:
                    await agent.call_tool(tool, arguments)
                except MCPError as exc:
                    return exc
                raise AssertionError(f"{tool} was not refused")

            timeout = await refused("weather__climate_report", {"city": "Lyon"})
            console.print(f"   {timeout.data['code']}: {timeout.message}")
            leak = await refused("crm__customer", {"customer_id": 42})
            console.print(f"   {leak.data['code']}: {leak.message}")
            found["refusals"] = [timeout.data["code"], leak.data["code"]]

            table = (await agent.call_tool("crm__list_customers", {})).content[0].text
            console.print("   crm__list_customers as a Markdown table (an interceptor):")
            for line in table.splitlines()[:3]:
                console.print(f"     {line}")
            found["table"] = table

            # Conveyor's own tools: the agent looks at the alerts, then rolls back.
            alerts = await agent.call_tool("conveyor__list_alerts", {"state": "all"})
            incidents = json.loads(alerts.content[0].text)["alerts"]
            rolled = await agent.call_tool(
                "conveyor__rollback",
                {"model": "fraud-detector", "reason": "the agent read the drift alert"},
            )
            back = json.loads(rolled.content[0].text)["rolled_back"]
            versions = [a["version"] for a in back["policy"]["versions"]]
            console.print(
                f"   conveyor__list_alerts: {len(incidents)} incident(s); conveyor__rollback: "
                f"fraud-detector back to v{versions} (revision {back['revision']}), recorded "
                f"as {back['actor']}"
            )
            found["rollback"] = back

            budget = None
            for turn in range(1, 20):
                try:
                    await agent.call_tool("crm__customer", {"customer_id": 41})
                except MCPError as exc:
                    budget = (turn, exc)
                    break
            assert budget is not None, "the budget never tripped"
            console.print(
                f"   call {budget[0]} more: {budget[1].data['code']}: {budget[1].message}"
            )
            found["budget"] = budget[1].data
    return found
