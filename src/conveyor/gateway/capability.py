"""The LLM gateway as a capability."""

from conveyor.capability import Capability, Command, Tables
from conveyor.gateway.events import GATEWAY_EVENTS

CAPABILITY = Capability(
    "gateway",
    "an OpenAI-compatible LLM gateway: model aliases routed to OpenAI-compatible, Anthropic "
    "and local providers, with weighted splits, fallbacks, retries, circuit breakers and "
    "streaming",
    # serving: the server app the API is mounted on, whose route notices it shares
    requires=("governance", "serving"),
    settings="conveyor.gateway.settings:SECTIONS",
    tables=Tables(
        "conveyor.gateway:migrations", "conveyor.gateway.tables", "conveyor_gateway_version"
    ),
    cli=(
        Command("conveyor.gateway.cli:llm_app", "llm"),
        Command("conveyor.gateway.review_cli:review_app", "review"),
    ),
    routes="conveyor.gateway.http:routes",
    events=GATEWAY_EVENTS,
    actions={
        "llm.call": "predictor",  # chat, embeddings, the models list, feedback on a call
        "llm.read": "viewer",  # reports: quality
        "llm.manage": "deployer",  # routes and budgets
        "llm.review": "deployer",  # the review queue: read (conversations) and decide
    },
)
