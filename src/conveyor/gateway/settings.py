"""The gateway's section of ``conveyor.yaml``: ``gateway:``, its providers, deployments and
model aliases.

::

    gateway:
      prefix: /llm/v1                    # OpenAI's base_url is http://server/llm/v1
      providers:
        vllm: {kind: openai, base_url: "http://10.0.0.5:8000/v1"}
        openai: {kind: openai, base_url: "https://api.openai.com/v1",
                 api_key_env: OPENAI_API_KEY, http2: true}
        claude: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}
      deployments:
        llama: {provider: vllm, model: meta-llama/Llama-3.1-8B-Instruct, timeout_s: 30}
        mini: {provider: openai, model: gpt-4o-mini, first_byte_timeout_s: 5}
        haiku: {provider: claude, model: claude-3-5-haiku-latest}
      models:
        fast: [llama, mini]              # fallback order
        smart:
          deployments: [mini, haiku]     # mini 80%, haiku 20%; then the other as fallback
          weights: {mini: 4, haiku: 1}
      retry: {attempts: 1, backoff_s: 0.05}
      breaker: {failures: 3, reset_s: 5}

A *provider* is one upstream endpoint of a kind (:data:`PROVIDERS`); its other keys are
that kind's settings, checked by its class when the gateway starts. A *deployment* is a
model at a provider; a *model* (an alias) is the ordered deployments a request naming
it may be sent to. A request may also name a deployment itself.
Every field can be set from the environment (``CONVEYOR_GATEWAY__PREFIX=/openai/v1``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.gateway.cache import CacheSpec
from conveyor.gateway.probes import ProbeSpec
from conveyor.gateway.prompts import PromptSpec
from conveyor.gateway.rules import RuleSpec, check_rules, check_split
from conveyor.gateway.tokens import ESTIMATE, Counter, counter_for
from conveyor.gateway.types import Deployment
from conveyor.guardrails.policy import GuardrailsSpec

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "PROVIDERS",
    "SECTIONS",
    "BreakerSpec",
    "BudgetSpec",
    "DeploymentSpec",
    "GatewaySpec",
    "KeyLimitsSpec",
    "LimitsSpec",
    "ModelSpec",
    "PriceSpec",
    "ProviderSpec",
    "RetrySpec",
    "gateway_of",
]

#: Kind of provider -> the class serving it (a lazy import string); each class is built
#: with its provider entry's settings (``kind`` left out): ``Provider(settings: dict)``.
PROVIDERS: dict[str, str] = {
    "openai": "conveyor.gateway.providers.openai:OpenAIProvider",
    "anthropic": "conveyor.gateway.providers.anthropic:AnthropicProvider",
    "local": "conveyor.gateway.providers.local:LocalProvider",
}

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{what} name {name!r}: use 1 to 128 letters, digits or . _ : / -, "
            "starting with a letter or digit"
        )
    return name


class ProviderSpec(BaseModel):
    """One upstream endpoint: its kind, and that kind's settings (base_url, api_key_env,
    timeouts, http2...: see the provider's class)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(description="openai (any OpenAI-compatible API), anthropic or local.")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"provider kind {value!r}: expected one of {', '.join(PROVIDERS)}")
        return value

    def settings(self) -> dict[str, Any]:
        """What the provider's class is built with: every key but ``kind``."""
        return dict(self.model_extra or {})


class DeploymentSpec(BaseModel):
    """A model at a provider, with its timeouts."""

    model_config = _STRICT

    provider: str = Field(description="The provider's name (gateway.providers).")
    model: str = Field(description="The model's name at the provider.")
    timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Seconds for an answer, or between two streamed chunks."
    )
    first_byte_timeout_s: float | None = Field(
        None, gt=0, le=3600, description="Seconds for a stream's first chunk (None: timeout_s)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider-specific options (openai: extra_body, headers; anthropic: "
        "max_tokens, extra).",
    )
    tokenizer: str = Field(
        "auto",
        min_length=1,
        description="How its prompts are counted (budgets' reservations, tokens per "
        "minute): auto (tiktoken cl100k_base for OpenAI's gpt-4 and gpt-3.5 models, else "
        "the estimate), tiktoken:ENCODING, the path of a Hugging Face tokenizer.json, or "
        "estimate (3 bytes a token; conveyor.gateway.tokens).",
    )


class ModelSpec(BaseModel):
    """An alias: the deployments a request naming it may go to, in fallback order."""

    model_config = _STRICT

    deployments: list[str] = Field(min_length=1, description="Deployments, in fallback order.")
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="A weighted split: the first deployment tried is drawn among these by "
        "weight (the draw is in the llm.call event); the rest follow as fallbacks.",
    )
    rules: list[RuleSpec] = Field(
        default_factory=list,
        description="Routing rules, first match wins: by team, tier, key, role or the "
        "prompt's complexity, to another alias or deployments (conveyor.gateway.rules).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | str):  # fast: [a, b] or fast: a
            return {"deployments": [value] if isinstance(value, str) else list(value)}
        return value

    @model_validator(mode="after")
    def _weights(self) -> ModelSpec:
        check_split(self.deployments, self.weights)
        return self


class RetrySpec(BaseModel):
    """Retries on the same deployment, before any byte of an answer reached the client."""

    model_config = _STRICT

    attempts: int = Field(
        1, ge=0, le=10, description="Retries of a connection refused or reset (then fallback)."
    )
    backoff_s: float = Field(0.05, ge=0, le=60, description="The first retry's wait.")
    max_backoff_s: float = Field(2.0, ge=0, le=600, description="The longest wait.")
    cooldown_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How long a rate-limited deployment is skipped when it gave no Retry-After.",
    )


class BreakerSpec(BaseModel):
    """Per-deployment circuit breaker: consecutive failures take it out for a while."""

    model_config = _STRICT

    failures: int = Field(3, ge=1, le=1000, description="Consecutive failures that open it.")
    reset_s: float = Field(5.0, gt=0, le=3600, description="Seconds before one trial call.")
    max_reset_s: float = Field(60.0, gt=0, le=86400, description="The longest cooldown.")


class PriceSpec(BaseModel):
    """What a deployment's tokens cost, in USD per million."""

    model_config = _STRICT

    input: float = Field(ge=0, description="USD per million prompt tokens.")
    output: float = Field(ge=0, description="USD per million completion tokens.")
    cached_input: float | None = Field(
        None,
        ge=0,
        description="USD per million prompt tokens served from the upstream's "
        "prompt cache (None: the input price).",
    )


class BudgetSpec(BaseModel):
    """A spending limit over a period, for each subject of a scope (or one subject)."""

    model_config = _STRICT

    name: str = Field(description="How errors, events and `conveyor llm budgets` name it.")
    scope: Literal["key", "user", "team", "conversation", "model", "global"] = Field(
        description="What it counts per: the API key's name, the request's user, its "
        "x-conveyor-team or x-conveyor-conversation header, the model asked, or all calls."
    )
    subject: str | None = Field(
        None, description="Only this key, user, team... (None: each one has its own budget)."
    )
    period: Literal["day", "month", "total"] = Field(
        "day", description="When it resets (UTC calendar days and months), or never."
    )
    limit_usd: float = Field(gt=0, description="USD it may spend in a period.")
    models: list[str] = Field(
        default_factory=list, description="Only calls to these models count (empty: all)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name("budget", value)


class KeyLimitsSpec(BaseModel):
    """Requests and tokens per minute, and max_tokens, for an API key."""

    model_config = _STRICT

    rpm: int | None = Field(None, ge=1, description="Requests per minute (None: no limit).")
    tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens per minute, prompt and max_tokens counted before "
        "the call (None: no limit).",
    )
    max_tokens: int | None = Field(
        None, ge=1, description="max_tokens given to a request that names none."
    )
    max_tokens_ceiling: int | None = Field(
        None, ge=1, description="The most a request may ask for (more: 400)."
    )


class LimitsSpec(BaseModel):
    """Per-key limits: a default for every key, and overrides by key name."""

    model_config = _STRICT

    default: KeyLimitsSpec = Field(default_factory=KeyLimitsSpec, description="Every key's.")
    keys: dict[str, KeyLimitsSpec] = Field(
        default_factory=dict, description="Key name -> its own limits (replacing the default)."
    )

    def of(self, key: str | None) -> KeyLimitsSpec:
        return self.keys.get(key, self.default) if key is not None else self.default

    @property
    def any(self) -> bool:
        return any(
            limit.rpm or limit.tpm or limit.max_tokens or limit.max_tokens_ceiling
            for limit in (self.default, *self.keys.values())
        )


class GatewaySpec(BaseModel):
    """The LLM gateway: providers, deployments, model aliases, retries and breakers."""

    model_config = _STRICT

    prefix: str = Field(
        "/llm/v1",
        description="Where the OpenAI-compatible API is mounted (a client's base_url is the "
        "server's URL and this); /v1 itself is the model server's.",
    )
    providers: dict[str, ProviderSpec] = Field(
        default_factory=dict, description="Upstream endpoints by name."
    )
    deployments: dict[str, DeploymentSpec] = Field(
        default_factory=dict, description="Models at providers, by name."
    )
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="Aliases (fast, smart) -> deployments, in order."
    )
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retries before a fallback.")
    breaker: BreakerSpec = Field(
        default_factory=BreakerSpec, description="Per-deployment circuit breakers."
    )
    probe: ProbeSpec = Field(
        default_factory=ProbeSpec,
        description="Health probes of a deployment whose breaker is open "
        "(conveyor.gateway.probes).",
    )
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict, description="Deployment -> USD per million tokens."
    )
    budgets: list[BudgetSpec] = Field(
        default_factory=list,
        description="Spending limits per key, user, team, conversation, "
        "model or overall, per day, month or in total.",
    )
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="Requests and tokens per minute, max_tokens."
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        description="The exact cache of chat answers, per key or team (conveyor.gateway.cache).",
    )
    guardrails: GuardrailsSpec = Field(
        default_factory=GuardrailsSpec,
        description="Checks on prompts and answers (injection, PII, secrets, profanity, "
        "topics, groundedness, JSON schemas), policies by model, key or team, flagged calls "
        "held for review (conveyor.guardrails.policy).",
    )
    routes_poll_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often a server reads the routes kept in the store (conveyor llm "
        "route): the way a change reaches it on SQLite, the fallback on PostgreSQL (where a "
        "change is pushed at once).",
    )
    prompts: dict[str, PromptSpec] = Field(
        default_factory=dict,
        description="Prompt templates a request names (extra_body conveyor.prompt): the "
        "system message, then the documents in a stable order, then the conversation: a "
        "prefix providers' prompt caches reuse (conveyor.gateway.prompts).",
    )
    budgets_url: str | None = Field(
        None,
        description="Where budgets are counted: redis://host:port/db[?prefix=...] shares "
        "them through Redis (one Lua script a reservation, about 0.1 ms); unset, the "
        "project's store (a transaction a reservation, some 5 ms on SQLite).",
    )
    budget_lease: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Budget leases: each worker reserves this share of a budget's limit at a "
        "time and spends it in memory, writing what was spent every 0.1 s (0: every call "
        "reserves and settles in the ledger). Refusals near a limit may come early by up to "
        "a slice per worker, never late (conveyor.gateway.leases).",
    )
    reservation_ttl_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="How long a call's budget reservation lives if the call never settles "
        "(a crashed process); the next reservation on its counter releases it.",
    )

    @field_validator("budgets_url")
    @classmethod
    def _budgets_url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0] not in ("redis", "rediss"):
            raise ValueError(f"budgets_url {value!r} must be a redis:// or rediss:// URL")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = "/" + value.strip("/")
        if value in ("/", "/v1", "/v2", "/ui") or not re.match(r"^(/[A-Za-z0-9._-]+)+$", value):
            raise ValueError(
                f"prefix {value!r}: a path such as /llm/v1 (not /, /v1, /v2 or /ui, which "
                "the server's other APIs use)"
            )
        return value

    @model_validator(mode="after")
    def _references(self) -> GatewaySpec:
        for name in self.providers:
            _check_name("provider", name)
        for name, deployment in self.deployments.items():
            _check_name("deployment", name)
            if deployment.provider not in self.providers:
                raise ValueError(
                    f"deployment {name!r}: no provider {deployment.provider!r} "
                    f"(known: {', '.join(self.providers) or 'none'})"
                )
        for name in self.guardrails.models:
            if name not in self.models and name not in self.deployments:
                raise ValueError(f"guardrails.models: no model or deployment {name!r}")
        for name in self.prices:
            if name not in self.deployments:
                raise ValueError(f"prices: no deployment {name!r}")
        names = [budget.name for budget in self.budgets]
        if len(set(names)) != len(names):
            raise ValueError("budgets: two budgets have the same name")
        for name, model in self.models.items():
            _check_name("model", name)
            if name in self.deployments:
                raise ValueError(f"model {name!r} is also a deployment's name")
            for listed in model.deployments:
                if listed not in self.deployments:
                    raise ValueError(
                        f"model {name!r}: no deployment {listed!r} "
                        f"(known: {', '.join(self.deployments) or 'none'})"
                    )
            wrong = check_rules(name, model.rules, self.models, self.deployments)
            if wrong is not None:
                raise ValueError(wrong)
        return self

    def counter(self, model: str) -> Counter:
        """The token counter of a request naming ``model``: its deployments' tokenizer when
        they all share one, else the estimate (an upper bound whichever answers; also for a
        name the gateway does not know)."""
        alias = self.models.get(model)
        names = alias.deployments if alias is not None else [model]
        found: Counter | None = None
        for name in names:
            spec = self.deployments.get(name)
            if spec is None:
                return ESTIMATE
            provider = self.providers.get(spec.provider)
            kind = provider.kind if provider is not None else ""
            counter = counter_for(spec.tokenizer, kind, spec.model)
            if found is not None and counter is not found:
                return ESTIMATE
            found = counter
        return found or ESTIMATE

    def deployment(self, name: str) -> Deployment:
        """The contract's :class:`Deployment` of the deployment called ``name``."""
        spec = self.deployments[name]
        return Deployment(
            name,
            spec.provider,
            spec.model,
            timeout_s=spec.timeout_s,
            first_byte_timeout_s=spec.first_byte_timeout_s,
            options=dict(spec.options),
        )


def check_route(spec: GatewaySpec, alias: str, model: ModelSpec) -> None:
    """A route for ``alias`` the spec can serve: a valid name that is not a deployment's,
    and deployments the spec has (InvalidInputError naming what is wrong)."""
    from conveyor.errors import InvalidInputError

    try:
        _check_name("model", alias)
    except ValueError as exc:
        raise InvalidInputError(str(exc), field="alias") from None
    if alias in spec.deployments:
        raise InvalidInputError(f"{alias!r} is a deployment's name", field="alias")
    unknown = [d for d in model.deployments if d not in spec.deployments]
    if unknown:
        raise InvalidInputError(
            f"route {alias!r}: no deployment {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(spec.deployments) or 'none'})",
            field="deployments",
        )


SECTIONS: dict[str, Any] = {
    "gateway": (
        GatewaySpec,
        Field(
            default_factory=GatewaySpec,
            description="The LLM gateway: providers, deployments, model aliases, retries, "
            "breakers.",
        ),
    ),
}


def gateway_of(spec: ProjectSpec) -> GatewaySpec:
    """The ``gateway:`` section (defaults when the spec has none)."""
    found = getattr(spec, "gateway", None)
    return found if isinstance(found, GatewaySpec) else GatewaySpec()
