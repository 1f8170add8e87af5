"""The MCP gateway as a capability."""

from conveyor.agents.events import AGENTS_EVENTS
from conveyor.capability import Capability, Command

CAPABILITY = Capability(
    "agents",
    "an MCP gateway: many tool servers behind one endpoint, each call checked, limited, "
    "isolated and logged",
    # serving: the server app the endpoint is mounted on, and the routes its tools move;
    # gateway: its budget ledger and the guardrails' detectors the calls are scanned with;
    # registry, monitoring, rag: what Conveyor's own tools read (conveyor_tools)
    requires=("governance", "serving", "gateway", "registry", "monitoring", "rag"),
    settings="conveyor.agents.settings:SECTIONS",
    cli=(Command("conveyor.agents.cli:mcp_app", "mcp"),),
    routes="conveyor.agents.http:routes",
    events=AGENTS_EVENTS,
    doctor="conveyor.agents.isolation:doctor_check",
    actions={
        "mcp.call": "predictor",  # list and call the tools the key may
        "mcp.read": "viewer",  # the servers' state, the calls' report
    },
)
