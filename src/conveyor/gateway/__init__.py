"""The LLM gateway: an OpenAI-compatible API in front of model providers, with routing,
fallbacks, streaming, budgets, caching and guardrails (see ``docs/gateway.md``)."""
