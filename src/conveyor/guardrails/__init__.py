"""Guardrails: input and output checks for LLM calls (prompt injection, PII and secrets,
policy rules), each with an action (block, redact, flag for review, log)."""
