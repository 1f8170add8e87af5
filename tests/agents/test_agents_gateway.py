"""The MCP gateway on the served app, called with the official ``mcp`` client over
streamable HTTP, in front of real tool servers (``conveyor.testing.mcp_tools_server``: two
started as subprocesses on stdio, one reached over HTTP): one catalogue with names
prefixed by server; calls passed through; unknown tools, bad arguments, secrets and
forbidden tools refused with stable codes before any server sees them; a huge result
truncated with a marker; an idempotent tool retried, a slow one timed out; a crashed
server failing its call at once, then restarted; access rules per key; every call an
``mcp.call`` event."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until

SERVER = [sys.executable, "-m", "conveyor.testing.mcp_tools_server"]


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    """The tool server over streamable HTTP, in its own process."""
    port = worker_port()
    proc = subprocess.Popen(
        [*SERVER, "--name", "remote", "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_until(up, message="the remote tool server listens", timeout=30)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, remote: str) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("mcpgw")
    init_project(root, name="mcp")
    spec = {
        "servers": {
            "one": {
                "command": [*SERVER, "--name", "one"],
                "timeout_s": 10,
                "retries": 2,
                "backoff_s": 0.01,
                "restart_backoff_s": 0.1,
            },
            "two": {"command": [*SERVER, "--name", "two"]},
            "far": {"url": remote},
        },
        "tools": {"one__slow": {"timeout_s": 0.5}},
        "access": {
            "keys": {"bot": {"allow": ["one__*"], "deny": ["one__leak"]}},
            "routes": {"readonly": {"allow": ["*__add", "*__echo"]}},
        },
        "max_result_bytes": 4096,
    }
    with (root / "conveyor.yaml").open("a") as fh:
        fh.write("\nmcp: " + json.dumps(spec) + "\n")
    project = Project.open(root, env={})
    keys = ApiKeys(project.store, project.events)
    tokens = {
        name: keys.create(name, role)[0]
        for name, role in (("app", "predictor"), ("bot", "predictor"), ("viewer", "viewer"))
    }
    running = ThreadedServer(create_app(project))
    running.start()
    try:
        url = running.url
        wait_until(
            lambda: (
                _servers(url, tokens["viewer"])
                == {"one": "ready", "two": "ready", "far": "ready", "conveyor": "ready"}
            ),
            message="the three tool servers are up",
            timeout=60,
        )
        yield {"url": url, "project": project, **tokens}
    finally:
        running.stop()
        project.close()


def _servers(url: str, token: str) -> dict[str, str]:
    import httpx

    got = httpx.get(f"{url}/v1/mcp/servers", headers={"authorization": f"Bearer {token}"})
    return (
        {s["server"]: s["state"] for s in got.json()["servers"]} if got.status_code == 200 else {}
    )


def _run(served: dict[str, Any], work: Any, key: str = "app") -> Any:
    """``work(client)`` with the official client connected to the gateway as ``key``."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> Any:
        headers = {"authorization": f"Bearer {served[key]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(f"{served['url']}/mcp", http_client=http)
            async with Client(transport) as client:
                return await work(client)

    return asyncio.run(main())


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def _calls(served: dict[str, Any], count: int) -> list[dict[str, Any]]:
    project: Project = served["project"]

    def found() -> list[dict[str, Any]] | None:
        project.events.flush()
        items = project.events.query(kind="mcp.call", limit=1000).items
        payloads = [e.payload for e in items]
        return payloads[-count:] if len(payloads) >= count else None

    return wait_until(found, message=f"{count} mcp.call events", timeout=10)


def test_one_catalogue_over_three_servers(served: dict[str, Any]) -> None:
    async def work(client: Any) -> Any:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        echoes = [
            _text(await client.call_tool(name, {"text": "hi"}))
            for name in ("one__echo", "two__echo", "far__echo")
        ]
        added = await client.call_tool("one__add", {"a": 2, "b": 3})
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        prompt = await client.get_prompt("two__summarize", {"topic": "MCP"})
        return tools, echoes, added, resources, prompts, prompt

    tools, echoes, added, resources, prompts, prompt = _run(served, work)
    for server in ("one", "two", "far"):
        assert {f"{server}__echo", f"{server}__add", f"{server}__slow"} <= set(tools)
    assert tools["one__add"].annotations.read_only_hint  # the server's hints pass through
    assert echoes == ["one: hi", "two: hi", "remote: hi"]
    assert _text(added) == "5.0" and not added.is_error
    assert resources == ["notes://readme"]  # the same URI on three servers: listed once
    assert {"one__summarize", "two__summarize", "far__summarize"} <= set(prompts)
    assert "Summarize MCP" in prompt.messages[0].content.text
    events = _calls(served, 4)
    assert [e["tool"] for e in events] == ["one__echo", "two__echo", "far__echo", "one__add"]
    assert all(e["status"] == "ok" and e["latency_ms"] > 0 for e in events)
    assert events[0]["server"] == "one" and events[0]["upstream_tool"] == "echo"
    assert events[0]["arguments_digest"] and events[0]["result_bytes"] > 0


def _refusal(served: dict[str, Any], tool: str, arguments: dict[str, Any], key: str = "app") -> Any:
    from mcp import MCPError

    async def work(client: Any) -> Any:
        with pytest.raises(MCPError) as refused:
            await client.call_tool(tool, arguments)
        return refused.value

    return _run(served, work, key)


def test_bad_calls_are_refused_before_any_server_sees_them(served: dict[str, Any]) -> None:
    unknown = _refusal(served, "one__nope", {})
    assert unknown.data["code"] == "unknown_tool" and "one__echo" in unknown.message
    bad = _refusal(served, "one__add", {"a": "two", "b": 3})
    assert bad.data["code"] == "invalid_arguments" and bad.data["path"] == "a"
    assert "'two' is not of type 'number'" in bad.message
    missing = _refusal(served, "one__add", {"a": 1})
    assert missing.data["code"] == "invalid_arguments" and "'b' is a required" in missing.message
    secret = _refusal(served, "one__echo", {"text": "my key is AKIAIOSFODNN7EXAMPLE"})
    assert secret.data["code"] == "secret_blocked" and "API_KEY" in secret.data["labels"]
    events = _calls(served, 4)
    assert [e["code"] for e in events] == [
        "unknown_tool",
        "invalid_arguments",
        "invalid_arguments",
        "secret_blocked",
    ]
    assert all(e["status"] == "refused" and e["attempts"] == 0 for e in events)


def test_what_comes_back_is_checked(served: dict[str, Any]) -> None:
    leaked = _refusal(served, "two__leak", {})
    assert leaked.data["code"] == "secret_blocked"  # the fake AWS key never reaches the agent

    async def work(client: Any) -> Any:
        return await client.call_tool("two__big", {"kb": 64})

    big = _run(served, work)
    text = _text(big)
    assert len(text.encode()) < 4096 + 100
    assert text.endswith(f"[... truncated by the gateway: {64 * 1024 - 4096} more bytes]")
    (event,) = _calls(served, 1)
    assert event["truncated"] is True and event["status"] == "ok"


def test_retries_timeouts_and_a_crashed_server(served: dict[str, Any]) -> None:
    async def work(client: Any) -> Any:
        flaky = await client.call_tool("one__flaky", {"key": "k1", "failures": 2})
        return flaky

    flaky = _run(served, work)
    assert _text(flaky) == "ok after 3 calls"  # idempotent: retried twice
    (event,) = _calls(served, 1)
    assert event["attempts"] == 3 and event["status"] == "ok"
    slow = _refusal(served, "one__slow", {"seconds": 5})
    assert slow.data["code"] == "timeout" and "0.5 s" in slow.message
    crashed = _refusal(served, "one__crash", {})
    assert crashed.data["code"] == "server_down" and "'one'" in crashed.message

    def back() -> bool:
        return _servers(served["url"], served["viewer"]).get("one") == "ready"

    wait_until(back, message="server one restarted", timeout=30)
    assert _run(served, lambda c: c.call_tool("one__echo", {"text": "again"})).content[0].text == (
        "one: again"
    )


def test_access_rules_per_key(served: dict[str, Any]) -> None:
    async def work(client: Any) -> Any:
        return sorted(t.name for t in (await client.list_tools()).tools)

    names = _run(served, work, key="bot")
    assert names and all(n.startswith("one__") for n in names) and "one__leak" not in names
    forbidden = _refusal(served, "two__echo", {"text": "x"}, key="bot")
    assert forbidden.data["code"] == "forbidden_tool" and "'bot'" in forbidden.message


def test_a_route_is_a_narrower_endpoint(served: dict[str, Any]) -> None:
    """access.routes: /mcp/readonly lists and calls only what its rule and the key's allow."""
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client

    async def main(key: str) -> Any:
        headers = {"authorization": f"Bearer {served[key]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{served['url']}/mcp/readonly", http_client=http)) as c,
        ):
            names = sorted(t.name for t in (await c.list_tools()).tools)
            with pytest.raises(MCPError) as refused:
                await c.call_tool("one__leak", {})
            return names, refused.value

    names, refused = asyncio.run(main("app"))
    assert names == ["far__add", "far__echo", "one__add", "one__echo", "two__add", "two__echo"]
    assert refused.data["code"] == "forbidden_tool" and "on route 'readonly'" in refused.message
    bot_names, _ = asyncio.run(main("bot"))  # the key's rule applies too
    assert bot_names == ["one__add", "one__echo"]


def test_the_endpoint_needs_a_key(served: dict[str, Any]) -> None:
    import httpx

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert httpx.post(f"{served['url']}/mcp", json=body).status_code == 401
    viewer = httpx.post(
        f"{served['url']}/mcp", json=body, headers={"authorization": f"Bearer {served['viewer']}"}
    )
    assert viewer.status_code == 403  # a viewer reads reports, calls no tool


def test_the_cli_lists_tests_and_reports(served: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import conveyor.cli  # noqa: F401  (the CLI loads before a capability's CLI module)
    from conveyor.agents.cli import mcp_app

    root = str(served["project"].root)
    runner = CliRunner(env={"CONVEYOR_API_KEY": served["app"]})
    tools = runner.invoke(mcp_app, ["tools", "--key", "bot", "--json", "-C", root])
    assert tools.exit_code == 0, tools.output
    names = [r["tool"] for r in json.loads(tools.stdout)["items"]]
    assert "one__echo" in names and "two__echo" not in names
    done = runner.invoke(mcp_app, ["test", "one__echo", '{"text": "cli"}', "-C", root])
    assert done.exit_code == 0 and "one: cli" in done.stdout, done.output
    refused = runner.invoke(mcp_app, ["test", "one__add", '{"a": 1}', "-C", root])
    assert refused.exit_code == 1 and "invalid_arguments" in refused.output
    calls = runner.invoke(mcp_app, ["calls", "--since", "1h", "--json", "-C", root])
    assert calls.exit_code == 0, calls.output
    rows = {r["tool"]: r for r in json.loads(calls.stdout)["items"]}
    assert rows["one__echo"]["ok"] >= 2 and rows["one__add"]["refused"] >= 1


def test_a_servers_new_tool_reaches_a_listening_client(served: dict[str, Any]) -> None:
    """A server announces a changed tool list; the gateway lists it again and tells its own
    clients (subscriptions/listen), who find the new tool and call it."""

    async def work(client: Any) -> Any:
        async with client.listen(tools_list_changed=True) as changes:
            await client.call_tool("two__grow", {"name": "fresh"})
            async with asyncio.timeout(20):
                async for _ in changes:
                    names = {t.name for t in (await client.list_tools()).tools}
                    if "two__fresh" in names:
                        break
            return await client.call_tool("two__fresh", {"text": "hello"})

    assert _text(_run(served, work)) == "fresh: hello"
