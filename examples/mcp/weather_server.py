"""An example MCP tool server that is slow and fails now and then, as real ones do.

    python examples/mcp/weather_server.py          # MCP on stdio

``forecast(city)`` answers in up to 0.2 s and fails one call in three (it is read-only and
idempotent, so the gateway retries it); ``climate_report(city)`` takes 5 s (longer than
the gateway lets it: a timeout).
"""

from __future__ import annotations

import random
import time

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("weather")
_calls = {"forecast": 0}


@server.tool(
    description="Tomorrow's forecast for a city.",
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True),
)
def forecast(city: str) -> str:
    _calls["forecast"] += 1
    time.sleep(random.random() * 0.2)
    if _calls["forecast"] % 3 == 1:
        raise RuntimeError("upstream weather service unavailable")
    return f"{city}: 14°C, light rain in the afternoon"


@server.tool(description="A long climate report for a city (slow).")
def climate_report(city: str) -> str:
    time.sleep(5)
    return f"{city}: a temperate oceanic climate"


if __name__ == "__main__":
    server.run("stdio")
