"""Governance as a capability: API keys (table, commands), the rate limiter's seam."""

from conveyor.capability import Capability, Command, Tables
from conveyor.governance.events import GOVERNANCE_EVENTS
from conveyor.governance.ratelimit import RATELIMIT

CAPABILITY = Capability(
    "governance",
    "API keys, roles and actions, rate limits, audit",
    tables=Tables(
        "conveyor.governance:migrations",
        "conveyor.governance.tables",
        "conveyor_governance_version",
        "0001",
    ),
    seams=(RATELIMIT,),
    services={"keys": "conveyor.governance.keys:ApiKeys.for_project"},
    cli=(
        Command("conveyor.cli.keys:keys_app", "keys"),
        Command("conveyor.cli.audit:audit", "audit"),
    ),
    routes="conveyor.web.governance:routes",
    events=GOVERNANCE_EVENTS,
    actions={"keys.manage": "admin", "audit.read": "deployer", "metrics.read": "viewer"},
)
