"""The gateway's event kinds (declared in its capability) and its Prometheus metrics.

``llm.call`` (telemetry): one per request answered or refused after its model was
known: who called (the key, the body's ``user`` or ``x-conveyor-user``, the
``x-conveyor-team`` and ``x-conveyor-conversation`` headers), the model asked and the deployment
that answered, the split's draw, the routing rule that chose it (``route_rule``) and the
prompt's ``complexity`` (and ``complexity_score``) when a rule asked, the deployments
passed over and why, tokens in, out
and served from the upstream's prompt cache, time to the first chunk, total latency,
and how it ended (``ok``, ``error``, ``cancelled``: the client went away); what the
stages add: the cost (``cost_usd``, None without a price), the cache that answered
(``exact``, ``semantic``, None) and the guardrails' decisions.

Metrics, on the server's registry: ``conveyor_llm_requests{model, status}``,
``conveyor_llm_tokens{model, kind}`` (prompt, completion, cached),
``conveyor_llm_ttft_seconds{model}``, ``conveyor_llm_latency_seconds{model}``,
``conveyor_llm_errors{model, kind}`` (every upstream failure, fallbacks included) and
``conveyor_llm_fallbacks{model}``, ``conveyor_llm_probes{model, result}`` (health probes
of a deployment whose breaker is open); ``model`` is the deployment (or the model asked,
when no deployment answered).
"""

from __future__ import annotations

from typing import Any

from conveyor.capability import EventKind

__all__ = [
    "GATEWAY_EVENTS",
    "GUARDRAIL_DECISION",
    "GUARDRAIL_REVIEWED",
    "GUARDRAIL_REVIEW_QUEUED",
    "LLM_CALL",
    "LLM_EVAL",
    "LLM_FEEDBACK",
    "LLM_ROUTE_DELETED",
    "LLM_ROUTE_SET",
    "GatewayMetrics",
]

_OPT_STR = (str, type(None))
_OPT_NUM = (int, float, type(None))

LLM_CALL = EventKind(
    "llm.call",
    "telemetry",
    {
        "endpoint": str,
        "key": _OPT_STR,
        "user": _OPT_STR,
        "team": _OPT_STR,
        "conversation": _OPT_STR,
        "model": str,
        "deployment": _OPT_STR,
        "provider": _OPT_STR,
        "upstream_model": _OPT_STR,
        "assigned": _OPT_STR,
        "route_rule": _OPT_STR,
        "complexity": _OPT_STR,
        "complexity_score": _OPT_NUM,
        "failures": list,
        "fallbacks": int,
        "attempts": int,
        "stream": bool,
        "prompt_tokens": int,
        "completion_tokens": int,
        "cached_tokens": int,
        "usage_reported": bool,
        "ttft_ms": _OPT_NUM,
        "latency_ms": (int, float),
        "status": str,
        "http_status": int,
        "error": _OPT_STR,
        "cost_usd": _OPT_NUM,
        "cache": _OPT_STR,
        "cache_similarity": _OPT_NUM,
        "prompt": _OPT_STR,
        "prefix": _OPT_STR,
        "prefix_tokens": int,
        "guardrails": list,
        "budgets": list,
        "usage_estimated": bool,
        "review": _OPT_STR,
    },
    "an LLM call through the gateway: the key, user, team and conversation, the model asked "
    "and the deployment that answered (and the weighted split's draw, the routing rule that "
    "chose it and the prompt's complexity when a rule asked), the deployments "
    "passed over and why, tokens in, out and cached (as the upstream counted them, else "
    "estimated), time to the first chunk, latency, how it ended (ok, error, cancelled), "
    "its cost, the cache that answered (and how alike the question was, for the semantic "
    "cache), the guardrails' decisions, and the prompt's template and leading system "
    "messages' digest (its prefix, for the prompt-cache report)",
    optional=frozenset(
        {"budgets", "usage_estimated", "review", "route_rule", "complexity", "complexity_score"}
    ),
)

LLM_FEEDBACK = EventKind(
    "llm.feedback",
    "control",
    {
        "model": _OPT_STR,
        "score": _OPT_NUM,
        "scores": (dict, type(None)),
        "comment": _OPT_STR,
    },
    "feedback on an LLM call, by its request id: a human score (0 to 1) and, when a "
    "reference answer came with the answer received, their BLEU and ROUGE-1/2/L",
)

LLM_EVAL = EventKind(
    "llm.eval",
    "audit",
    {
        "model": str,
        "path": str,
        "examples": int,
        "answered": int,
        "failed": int,
        "bleu": _OPT_NUM,
        "rouge1": _OPT_NUM,
        "rouge2": _OPT_NUM,
        "rougeL": _OPT_NUM,
    },
    "an evaluation set run through the gateway: how many answered, corpus BLEU and mean "
    "ROUGE-1/2/L against the references",
)

LLM_ROUTE_SET = EventKind(
    "llm.route_set",
    "audit",
    {
        "alias": str,
        "revision": int,
        "deployments": list,
        "weights": dict,
        "rules": list,
        "reason": _OPT_STR,
        "previous": (dict, type(None)),
    },
    "a model alias of the gateway routed to new deployments (weights, rules) at run time, "
    "or rolled back, with its revision, the reason given and the route it replaced",
)
LLM_ROUTE_DELETED = EventKind(
    "llm.route_deleted",
    "audit",
    {"alias": str, "previous": dict},
    "a stored route of the gateway deleted: the alias is the spec's again (or gone)",
)

GUARDRAIL_DECISION = EventKind(
    "guardrail.decision",
    "telemetry",
    {
        "policy": str,
        "check": str,
        "detector": str,
        "label": str,
        "action": str,
        "where": str,
        "score": (int, float),
        "span": str,
        "detail": str,
        "key": _OPT_STR,
        "model": str,
    },
    "a guardrail check found something in a prompt or an answer: the policy and check, "
    "what it found (label, score, the span masked: never the value), where, the action "
    "taken, and the call's key and model (the request id links it to its llm.call)",
    optional=frozenset({"detail"}),
)
GUARDRAIL_REVIEW_QUEUED = EventKind(
    "guardrail.review_queued",
    "control",
    {"review_id": str, "model": str, "policy": str, "key": _OPT_STR, "checks": list},
    "a call a guardrail flagged went to the review queue; the caller got a pending-review answer",
)
GUARDRAIL_REVIEWED = EventKind(
    "guardrail.reviewed",
    "audit",
    {
        "review_id": str,
        "verdict": str,
        "model": str,
        "rating": _OPT_STR,
        "score": _OPT_NUM,
        "comment": _OPT_STR,
    },
    "a reviewer approved or rejected a call held for review (who and when: the event's "
    "actor and time), with a rating of the answer (1 to 5, up or down) when given",
)

GATEWAY_EVENTS = (
    LLM_CALL,
    LLM_FEEDBACK,
    LLM_EVAL,
    LLM_ROUTE_SET,
    LLM_ROUTE_DELETED,
    GUARDRAIL_DECISION,
    GUARDRAIL_REVIEW_QUEUED,
    GUARDRAIL_REVIEWED,
)

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    """The gateway's counters and histograms, on the app's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "conveyor_llm_requests",
            "LLM calls answered, by model (deployment) and status (ok, error, cancelled).",
            ("model", "status"),
            registry=registry,
        )
        self.cost = Counter(
            "conveyor_llm_cost_usd",
            "USD of LLM calls priced by gateway.prices, by model (deployment) and key.",
            ("model", "key"),
            registry=registry,
        )
        self.tokens = Counter(
            "conveyor_llm_tokens",
            "Tokens of LLM calls, by model and kind (prompt, completion, cached).",
            ("model", "kind"),
            registry=registry,
        )
        self.ttft = Histogram(
            "conveyor_llm_ttft_seconds",
            "Time to the first streamed chunk, from the request's arrival.",
            ("model",),
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "conveyor_llm_latency_seconds",
            "Time of a whole LLM call, streams included.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "conveyor_llm_errors",
            "Upstream failures (fallbacks included), by deployment and kind.",
            ("model", "kind"),
            registry=registry,
        )
        self.fallbacks = Counter(
            "conveyor_llm_fallbacks",
            "Calls answered by another deployment than the first one planned, by model asked.",
            ("model",),
            registry=registry,
        )
        self.probes = Counter(
            "conveyor_llm_probes",
            "Health probes of deployments whose breaker was open, by deployment and result "
            "(ok, failed).",
            ("model", "result"),
            registry=registry,
        )
        self._children: dict[tuple[str, str], _Children] = {}

    def probed(self, deployment: str, result: str) -> None:
        """Count one health probe (:mod:`conveyor.gateway.probes`)."""
        self.probes.labels(deployment, result).inc()

    def observe(self, payload: dict[str, Any]) -> None:
        """Count one call from its ``llm.call`` payload."""
        model = payload["deployment"] or payload["model"]
        status = payload["status"]
        found = self._children.get((model, status))
        if found is None:  # label lookups cost a lock and a few dicts: once per model
            found = self._children[(model, status)] = _Children(self, model, status)
        found.requests.inc()
        for kind, field in _TOKEN_KINDS:
            count = payload[field]
            if count:
                found.tokens(kind).inc(count)
        if payload["ttft_ms"] is not None:
            found.ttft().observe(payload["ttft_ms"] / 1000.0)
        found.latency.observe(payload["latency_ms"] / 1000.0)
        for failure in payload["failures"]:
            self.errors.labels(failure["deployment"], failure["kind"]).inc()
        if payload["fallbacks"] and payload["deployment"] is not None:
            self.fallbacks.labels(payload["model"]).inc()
        if payload["cost_usd"]:
            self.cost.labels(model, payload["key"] or "").inc(payload["cost_usd"])


_TOKEN_KINDS = (
    ("prompt", "prompt_tokens"),
    ("completion", "completion_tokens"),
    ("cached", "cached_tokens"),
)


class _Children:
    """One model's (and status's) series, looked up once (a token kind's and the TTFT's on
    first use, so what was never observed has no series)."""

    __slots__ = ("_metrics", "_model", "_tokens", "_ttft", "latency", "requests")

    def __init__(self, metrics: GatewayMetrics, model: str, status: str) -> None:
        self._metrics = metrics
        self._model = model
        self._tokens: dict[str, Any] = {}
        self._ttft: Any = None
        self.requests = metrics.requests.labels(model, status)
        self.latency = metrics.latency.labels(model)

    def ttft(self) -> Any:
        if self._ttft is None:
            self._ttft = self._metrics.ttft.labels(self._model)
        return self._ttft

    def tokens(self, kind: str) -> Any:
        found = self._tokens.get(kind)
        if found is None:
            found = self._tokens[kind] = self._metrics.tokens.labels(self._model, kind)
        return found
