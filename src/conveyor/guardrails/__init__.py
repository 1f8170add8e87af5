"""Guardrails: checks on what goes to a model and what comes back (PII and secrets,
prompt injection, policy rules, groundedness, JSON schemas), each with an action."""
