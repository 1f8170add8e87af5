"""An example MCP tool server with a careless tool: it leaks a credential.

    python examples/mcp/crm_server.py              # MCP on stdio

``list_customers()`` answers JSON rows; ``customer(customer_id)`` answers a record, and the
record of customer 42 carries a (fake) API key someone pasted into a note.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("crm")

CUSTOMERS = [
    {"id": 41, "name": "Ana Ruiz", "plan": "pro", "open_tickets": 1},
    {"id": 42, "name": "Ben Okafor", "plan": "team", "open_tickets": 3},
    {"id": 43, "name": "Chen Wei", "plan": "free", "open_tickets": 0},
]


@server.tool(
    description="Every customer: id, name, plan, open tickets (JSON).",
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True),
)
def list_customers() -> str:
    return json.dumps(CUSTOMERS)


@server.tool(description="One customer's record, with the support team's notes.")
def customer(customer_id: int) -> str:
    found = next((c for c in CUSTOMERS if c["id"] == customer_id), None)
    if found is None:
        return f"no customer {customer_id}"
    note = "prefers email"
    if customer_id == 42:
        note = "integration key for their account: sk-live-51Hq8vXyZ2aBcDeFgHiJkLmNoPqRsTuV"
    return json.dumps({**found, "note": note})


if __name__ == "__main__":
    server.run("stdio")
