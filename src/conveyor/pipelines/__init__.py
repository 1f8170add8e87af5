"""Pipelines: steps with declared inputs and outputs, retries, timeouts, schedules and triggers."""
