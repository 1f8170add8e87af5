"""The LLM gateway as a capability."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "gateway",
    "an OpenAI-compatible LLM gateway: providers, routing, fallbacks, streaming, budgets, "
    "caching, guardrails",
    requires=("governance",),
    actions={
        "llm.call": "predictor",  # chat completions, embeddings, the model list
        "llm.manage": "deployer",  # routes, budgets and limits
    },
)
