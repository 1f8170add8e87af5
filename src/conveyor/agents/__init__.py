"""Agents over MCP: the MCP gateway (conveyor.agents.gateway), its tool servers and
their isolation."""
