"""An agent's LLM call through the gateway and the tool calls it triggered, in one trace:
the agent sends the same W3C ``traceparent`` with both; the tool call's span
(``execute_tool NAME``, the GenAI conventions' attributes, the outcome, never the
arguments) is a child of the agent's span, as the LLM call's upstream span is of its
request. Read from OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.fake_openai import serve_fake_openai
from conveyor.testing.tracing import span_exporter
from conveyor.testing.wait import wait_until

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    span_exporter()  # before the server starts: it takes its tracers then
    root: Path = tmp_path_factory.mktemp("mcptrace")
    with serve_fake_openai() as fake:
        init_project(root, name="mcptrace")
        gateway = {
            "providers": {"fake": {"kind": "openai", "base_url": fake.url + "/v1"}},
            "deployments": {"a": {"provider": "fake", "model": "gpt-a"}},
            "models": {"fast": ["a"]},
        }
        mcp = {
            "servers": {
                "t": {"command": [sys.executable, "-m", "conveyor.testing.mcp_tools_server"]}
            }
        }
        with (root / "conveyor.yaml").open("a") as fh:
            fh.write("\ngateway: " + json.dumps(gateway) + "\nmcp: " + json.dumps(mcp) + "\n")
        project = Project.open(root, env={})
        token, _ = ApiKeys(project.store, project.events).create("agent", "predictor")
        running = ThreadedServer(create_app(project))
        running.start()
        try:
            yield {"url": running.url, "token": token}
        finally:
            running.stop()
            project.close()


def test_the_llm_call_and_its_tool_calls_share_one_trace(served: dict[str, Any]) -> None:
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = span_exporter()
    headers = {
        "authorization": f"Bearer {served['token']}",
        "traceparent": TRACEPARENT,
        "x-conveyor-conversation": "c-9",
    }
    llm = openai.OpenAI(
        base_url=served["url"] + "/llm/v1",
        api_key=served["token"],
        max_retries=0,
        default_headers={"traceparent": TRACEPARENT},
    )
    llm.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])

    async def tools() -> None:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{served['url']}/mcp", http_client=http)) as agent,
        ):
            for _ in range(100):  # the tool server connects in the background
                if any(t.name == "t__echo" for t in (await agent.list_tools()).tools):
                    break
                await asyncio.sleep(0.1)
            await agent.call_tool("t__echo", {"text": "secret-free"})
            with pytest.raises(MCPError, match="do not match its input schema"):
                await agent.call_tool("t__add", {"a": "x"})  # refused: invalid arguments

    asyncio.run(tools())

    def spans() -> list[Any] | None:
        found = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE, 16)]
        names = {s.name for s in found}
        return found if {"execute_tool t__echo", "execute_tool t__add"} <= names else None

    found = wait_until(spans, message="the tool calls' spans", timeout=10)
    by_name = {s.name: s for s in found}
    echo = by_name["execute_tool t__echo"]
    assert echo.kind == SpanKind.CLIENT and echo.parent.span_id == int(PARENT, 16)
    attributes = dict(echo.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "t__echo"
    assert attributes["gen_ai.conversation.id"] == "c-9"
    assert attributes["conveyor.mcp.server"] == "t" and attributes["conveyor.mcp.status"] == "ok"
    assert "secret-free" not in json.dumps({k: str(v) for k, v in attributes.items()})
    refused = by_name["execute_tool t__add"]
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.attributes["error.type"] == "invalid_arguments"
    # the LLM call the agent made before is in the same trace
    assert any(s.name.startswith("chat ") for s in found), [s.name for s in found]
