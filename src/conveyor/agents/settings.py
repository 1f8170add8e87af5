"""The MCP gateway's section of ``conveyor.yaml``: ``mcp:``, the tool servers it fronts and
how their calls are controlled.

::

    mcp:
      path: /mcp                       # the streamable HTTP endpoint on the server app
      naming: prefix                   # prefix: server__tool always; collision: only on a clash
      servers:
        files:                         # a local server: a subprocess speaking MCP on stdio
          command: [python, -m, my_files_server]
          env: {ROOT: /data}
          secrets: [GITHUB_TOKEN]      # passed from the gateway's environment, nothing else
          isolation: {level: sandbox, memory_mb: 512}
          timeout_s: 30
        search:                        # a remote server over streamable HTTP
          url: http://10.0.0.7:9000/mcp
          headers: {authorization: "Bearer ..."}
      tools:                           # per tool (catalogue name), over the server's defaults
        files__read: {timeout_s: 5, idempotent: true, cost: 0.001}
      access:                          # which tools a key may list and call (globs)
        default: {allow: ["*"]}
        keys: {support-bot: {allow: ["search__*"], deny: ["files__delete"]}}
      max_result_bytes: 65536          # bigger results are truncated, with a marker
      secrets: block                   # the secret scanner on arguments and results

Every field can be set from the environment (``CONVEYOR_MCP__PATH=/tools/mcp``).
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.agents.control import CallBudgetSpec, CallLimitsSpec
from conveyor.agents.interceptors import InterceptorSpec
from conveyor.agents.isolation import IsolationSpec

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "AccessSpec", "McpSpec", "ServerSpec", "ToolSpec", "ledger_of", "mcp_of"]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class ServerSpec(BaseModel):
    """One upstream MCP server: a local command (stdio) or a remote URL (streamable HTTP)."""

    model_config = _STRICT

    command: list[str] | None = Field(
        None, min_length=1, description="A local server: the command started, on stdio."
    )
    url: str | None = Field(None, description="A remote server: its streamable HTTP URL.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of a local server (values)."
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of the gateway's environment variables passed to a local server "
        "(its only secrets: nothing else of the environment reaches it).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers of a remote server's requests."
    )
    isolation: IsolationSpec = Field(
        default_factory=IsolationSpec,
        description="How a local server is confined (conveyor.agents.isolation).",
    )
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Seconds a tool call may take.")
    connect_timeout_s: float = Field(
        20.0, gt=0, le=600, description="Seconds to start or reach the server and list its tools."
    )
    concurrency: int = Field(
        16, ge=1, le=10_000, description="Calls in flight to this server at most."
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a failed call to an idempotent tool (declared in tools, or "
        "the server's idempotentHint on a tool that is not destructive); never others.",
    )
    backoff_s: float = Field(0.1, ge=0, le=60, description="The first retry's delay (doubling).")
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="Failed calls in a row that open the server's breaker."
    )
    breaker_reset_s: float = Field(
        10.0, gt=0, le=3600, description="Seconds an open breaker refuses calls before a trial."
    )
    restart_backoff_s: float = Field(
        0.5, gt=0, le=60, description="A crashed local server is restarted after this (doubling)."
    )
    enabled: bool = Field(True, description="False: configured but not started.")
    lifetime: Literal["long", "per_call"] = Field(
        "long",
        description="long: one process serves every call (restarted if it dies); per_call: "
        "a process of its own for each call, gone after it (nothing survives between "
        "calls; each start costs its time; a remote server: a session per call).",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> ServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("a server has a command (stdio) or a url (streamable HTTP), not both")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"url {self.url!r} must be http:// or https://")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"


class ToolSpec(BaseModel):
    """Settings of one tool, by its catalogue name, over its server's."""

    model_config = _STRICT

    timeout_s: float | None = Field(None, gt=0, le=3600, description="Its own timeout.")
    idempotent: bool | None = Field(
        None, description="Whether a failed call may be retried (None: the server's hint)."
    )
    cost: float = Field(0.0, ge=0, description="What a call costs, for budgets (any unit).")


class RuleSpec(BaseModel):
    """Tools allowed and denied (globs over catalogue names; deny wins)."""

    model_config = _STRICT

    allow: list[str] = Field(default_factory=lambda: ["*"], description="Globs allowed.")
    deny: list[str] = Field(default_factory=list, description="Globs denied (over allow).")

    def permits(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.allow)


class AccessSpec(BaseModel):
    """Which tools each key lists and calls: ``keys`` by key name, else ``default``."""

    model_config = _STRICT

    default: RuleSpec = Field(default_factory=RuleSpec, description="Every key without its own.")
    keys: dict[str, RuleSpec] = Field(default_factory=dict, description="By key name.")
    routes: dict[str, RuleSpec] = Field(
        default_factory=dict,
        description="More endpoints, PATH/NAME (/mcp/support), each a narrower view of the "
        "catalogue: a tool is listed and callable there when the key's rule and the "
        "route's both allow it.",
    )

    def rule(self, key: str | None) -> RuleSpec:
        return self.keys.get(key or "", self.default)

    def permits(self, name: str, key: str | None, route: str | None) -> bool:
        """Whether ``key`` may call tool ``name`` on ``route`` (None: the main endpoint)."""
        if not self.rule(key).permits(name):
            return False
        return route is None or route not in self.routes or self.routes[route].permits(name)


class McpSpec(BaseModel):
    """``mcp:``: the MCP gateway."""

    model_config = _STRICT

    path: str = Field("/mcp", description="Where the streamable HTTP endpoint is mounted.")
    naming: Literal["prefix", "collision"] = Field(
        "prefix",
        description="prefix: every tool is SERVER__TOOL; collision: a tool keeps its name "
        "unless two servers have it, then both are prefixed.",
    )
    separator: str = Field("__", min_length=1, max_length=4, description="Between server and tool.")
    servers: dict[str, ServerSpec] = Field(
        default_factory=dict, description="The upstream MCP servers, by name."
    )
    tools: dict[str, ToolSpec] = Field(
        default_factory=dict, description="Per tool settings, by catalogue name."
    )
    access: AccessSpec = Field(
        default_factory=AccessSpec, description="Tools each key may list and call."
    )
    max_result_bytes: int = Field(
        65_536,
        ge=1024,
        le=64 * 1024 * 1024,
        description="A tool result's text past this is cut, with a marker saying how much was.",
    )
    max_argument_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1024 * 1024, description="Largest arguments a call may send."
    )
    limits: CallLimitsSpec = Field(
        default_factory=CallLimitsSpec,
        description="Calls a minute per key, user and conversation (conveyor.agents.control).",
    )
    budgets: list[CallBudgetSpec] = Field(
        default_factory=list,
        description="Calls or cost per key, user, conversation or overall, per day, month or "
        "in total, held under concurrency (conveyor.agents.control).",
    )
    budgets_url: str | None = Field(
        None,
        description="Where budgets are counted: redis://... (else the project's store).",
    )
    budget_lease: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="Budget leases: each worker reserves this share of a budget at a time and "
        "spends it in memory (0: every call reserves in the ledger: some 5 ms on SQLite).",
    )
    conveyor_tools: bool = Field(
        True,
        description="Conveyor's own operations as tools of a built-in server 'conveyor' "
        "(models, gate reports, drift, alerts, RAG search, deploy, canary, rollback), each "
        "gated by the caller's role (conveyor.agents.conveyor_tools).",
    )
    interceptors: list[InterceptorSpec] = Field(
        default_factory=list,
        description="Hooks before and after calls, in order: python, exec, http, and the "
        "built-in injection, project and markdown (conveyor.agents.interceptors).",
    )
    secrets: Literal["block", "redact", "off"] = Field(
        "block",
        description="The guardrails' secret detectors on arguments and results: block the "
        "call, redact what matched, or off.",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = "/" + value.strip("/")
        if value in ("/", "/v1", "/v2", "/ui") or not re.match(r"^(/[A-Za-z0-9._-]+)+$", value):
            raise ValueError(f"path {value!r} is not a free path of the app")
        return value

    @model_validator(mode="after")
    def _names(self) -> McpSpec:
        names = [b.name for b in self.budgets]
        if len(set(names)) != len(names):
            raise ValueError("budgets: two budgets have the same name")
        if self.conveyor_tools and "conveyor" in self.servers:
            raise ValueError(
                "servers: 'conveyor' is the built-in server of Conveyor's own tools; name "
                "yours otherwise, or set conveyor_tools: false"
            )
        for route in self.access.routes:
            if not _NAME.match(route):
                raise ValueError(f"access.routes: {route!r}: letters, digits, _ and -")
        for name in self.servers:
            if not _NAME.match(name) or self.separator in name:
                raise ValueError(
                    f"server name {name!r}: letters, digits, _ and -, without {self.separator!r}"
                )
        return self


SECTIONS: dict[str, Any] = {
    "mcp": (
        McpSpec,
        Field(
            default_factory=McpSpec,
            description="The MCP gateway: the tool servers it fronts, and the control of "
            "their calls.",
        ),
    ),
}


def ledger_of(project: Any, spec: McpSpec) -> Any:
    """Where ``mcp.budgets`` are counted: the LLM gateway's budget ledger, in Redis
    (``mcp.budgets_url``) or the project's store, with leases (``mcp.budget_lease``)."""
    ledger: Any
    if spec.budgets_url:
        from conveyor.gateway.ledger_redis import RedisBudgets

        ledger = RedisBudgets(spec.budgets_url)
    else:
        from conveyor.gateway.budgets import SqlBudgets

        ledger = SqlBudgets(project.store)
    if spec.budget_lease > 0:
        from conveyor.gateway.leases import LeasedLedger

        ledger = LeasedLedger(ledger, spec.budget_lease, 600.0)
    return ledger


def mcp_of(spec: ProjectSpec) -> McpSpec:
    """The ``mcp:`` section (defaults when the spec has none)."""
    found = getattr(spec, "mcp", None)
    return found if isinstance(found, McpSpec) else McpSpec()
