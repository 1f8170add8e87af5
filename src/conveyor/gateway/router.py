"""Where a request goes: model aliases to deployments, weighted splits, retries, fallbacks,
per-deployment circuit breakers and upstream ``Retry-After``.

::

    router = Router(gateway_of(project.spec))
    call = CallRecord("fast")
    answer = await router.chat(body, call)          # or router.stream / router.embeddings
    call.deployment, call.assigned, call.failures   # who answered, the split's draw, the rest

A request names a model alias (``fast``) or a deployment. The alias's deployments are
tried in their order; with ``weights`` the first one is drawn by weight (``assigned``),
the others follow in order. A deployment is skipped while its circuit breaker is open
(``failures`` consecutive ``connect``/``timeout``/``server``/``protocol`` failures open it;
one trial call after ``reset_s`` may close it) or while it is cooling down after a 429
(for its ``Retry-After``, else ``retry.cooldown_s``). A connection refused or reset
before any answer is retried on the same deployment (``retry.attempts``, with
exponential backoff and full jitter); any other failure but ``bad_request`` falls back
to the next deployment at once. Nothing is retried or re-sent once a stream's first
chunk was handed on: a failure then ends the stream (``UpstreamError.streamed``).
When no deployment is left, the last failure is raised; when every one was skipped, an
``UpstreamError`` whose ``retry_after_s`` says when the first one may be tried again.

An alias's routing rules (:mod:`conveyor.gateway.rules`) pick other deployments by the
request's team, tier, key, role or complexity (the :class:`CallRecord`'s ``team``,
``tier``, ``key`` and ``role``; the prompt classified only when a rule asks); an alias
without rules costs one dictionary lookup more. When a breaker opens, a health probe
(:mod:`conveyor.gateway.probes`) tries the deployment at its reset time, so a recovered
one is closed again without a user's request as the trial.

The routing (aliases, deployments, weights, rules) can be replaced while serving
(:meth:`Router.update`): the policy data changes without a restart; breakers and
providers of deployments that remain are kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.breaker import CircuitBreaker
from conveyor.errors import ConveyorError, NotFoundError
from conveyor.gateway.probes import Prober
from conveyor.gateway.rules import CompiledRule, compile_rules
from conveyor.gateway.settings import PROVIDERS, GatewaySpec
from conveyor.gateway.types import Body, Chunk, Deployment, Provider, UpstreamError

if TYPE_CHECKING:
    from conveyor.gateway.tracing import UpstreamSpan

__all__ = ["CallRecord", "Router"]

log = logging.getLogger("conveyor.gateway")

#: Failures that count against a deployment's circuit breaker.
_BREAKING = frozenset({"connect", "timeout", "server", "protocol"})


@dataclass(slots=True)
class CallRecord:
    """What happened to one request on its way: filled in by the router, read by the API
    for the answer's headers, the ``llm.call`` event and the metrics."""

    model: str
    """The model the request named (an alias or a deployment)."""
    deployment: str | None = None
    """The deployment that answered (None: none did)."""
    upstream_model: str | None = None
    provider: str | None = None
    assigned: str | None = None
    """The deployment the weighted split drew (None: the alias has no split)."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Each deployment tried and failed, or skipped: ``{deployment, kind, status}``
    (kind ``breaker_open`` or ``cooldown`` for a skip)."""
    attempts: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_chunk_at: float | None = None
    team: str | None = None
    """Who asks, for routing rules: the ``x-conveyor-team`` and ``x-conveyor-tier``
    headers, the API key's name and role."""
    tier: str | None = None
    key: str | None = None
    role: str | None = None
    rule: str | None = None
    """The routing rule that chose the deployments (None: the alias's own)."""
    complexity: str | None = None
    """``simple`` or ``complex``, when a rule asked (None: not classified)."""
    complexity_score: float | None = None
    conversation: str | None = None
    """The ``x-conveyor-conversation`` header (on the upstream calls' spans)."""

    @property
    def fallbacks(self) -> int:
        """How many deployments were passed over before the one that answered."""
        return len({f["deployment"] for f in self.failures if f["deployment"] != self.deployment})


class Router:
    """Aliases to deployments to providers, with breakers and cooldowns (see the module)."""

    def __init__(
        self,
        spec: GatewaySpec,
        providers: dict[str, Provider] | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_probe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        #: Provider objects, by provider name, built on first use (or given).
        self._providers: dict[str, Provider] = dict(providers or {})
        self._breakers: dict[str, CircuitBreaker] = {}
        #: Deployment -> when (clock) it may be called again after a 429.
        self._cooled: dict[str, float] = {}
        self._prober = Prober(self, spec.probe, on_probe)
        #: OpenTelemetry's tracer when tracing is on (:mod:`conveyor.gateway.tracing`):
        #: a span per upstream call; None, none and no cost.
        self.tracer: Any = None
        self._span_attributes: dict[str, dict[str, Any]] = {}
        self.spec = spec
        self.update(spec)

    # -- the routing ------------------------------------------------------------------

    def update(self, spec: GatewaySpec) -> None:
        """Route by ``spec`` from now on (the calls under way finish as they started)."""
        self.spec = spec
        self._deployments = {name: spec.deployment(name) for name in spec.deployments}
        self._breakers = {k: v for k, v in self._breakers.items() if k in self._deployments}
        self._rules = compile_rules(spec.models, self._deployments)
        self._prober.spec = spec.probe

    def models(self) -> list[dict[str, Any]]:
        """The names a request may give: aliases, then deployments (OpenAI's model objects,
        with what each routes to)."""
        found: list[dict[str, Any]] = []
        for name, model in self.spec.models.items():
            found.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "conveyor",
                    "deployments": list(model.deployments),
                    "weights": dict(model.weights),
                    **(
                        {"rules": [r.model_dump(exclude_defaults=True) for r in model.rules]}
                        if model.rules
                        else {}
                    ),
                }
            )
        for name, deployment in self._deployments.items():
            found.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": deployment.provider,
                    "model": deployment.model,
                    "breaker": self.breaker(name).state,
                }
            )
        return found

    def known(self, model: str) -> bool:
        return model in self.spec.models or model in self._deployments

    def plan(
        self, model: str, call: CallRecord | None = None, body: Body | None = None
    ) -> tuple[list[str], str | None]:
        """The deployments to try for ``model``, in order, and the split's draw (if any);
        with ``call`` (who asks) and ``body``, the alias's rules apply (the rule that
        matched, and the complexity if classified, noted on ``call``)."""
        alias = self.spec.models.get(model)
        if alias is None:
            if model in self._deployments:
                return [model], None
            known = ", ".join([*self.spec.models, *self._deployments]) or "none configured"
            raise NotFoundError(f"the model {model!r} does not exist (known: {known})", model=model)
        deployments: Sequence[str] = alias.deployments
        weights: Mapping[str, float] = alias.weights
        rules = self._rules.get(model) if call is not None else None
        if rules:
            assert call is not None
            matched = _match(rules, call, body)
            if matched is not None:
                call.rule = matched.name
                deployments, weights = matched.deployments, matched.weights
        order = list(deployments)
        if not weights:
            return order, None
        names = [n for n in order if weights.get(n, 0) > 0]
        drawn = self._rng.choices(names, weights=[weights[n] for n in names])[0]
        order.remove(drawn)
        return [drawn, *order], drawn

    def breaker(self, deployment: str) -> CircuitBreaker:
        found = self._breakers.get(deployment)
        if found is None:
            b = self.spec.breaker
            prober = self._prober

            def changed(breaker: CircuitBreaker) -> None:
                prober.changed(deployment, breaker)

            found = CircuitBreaker(
                f"LLM deployment {deployment}",
                failures=b.failures,
                reset_s=b.reset_s,
                max_reset_s=b.max_reset_s,
                on_change=changed,
                clock=self._clock,
            )
            self._breakers[deployment] = found
        return found

    def tracks(self, deployment: str, breaker: CircuitBreaker) -> bool:
        """Whether ``breaker`` is still ``deployment``'s (not dropped by :meth:`update`)."""
        return self._breakers.get(deployment) is breaker

    def provider(self, name: str) -> Provider:
        """The provider object called ``name`` (built on first use from its settings)."""
        found = self._providers.get(name)
        if found is None:
            from conveyor.capability import load

            spec = self.spec.providers[name]
            found = load(PROVIDERS[spec.kind])(spec.settings())
            self._providers[name] = found
        return found

    async def aclose(self) -> None:
        """Stop the health probes; close every provider's connections."""
        await self._prober.aclose()
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing the LLM provider %r failed", provider)

    # -- calling ----------------------------------------------------------------------

    async def chat(self, body: Body, call: CallRecord) -> Body:
        """A chat completion, not streamed, from the first deployment that answers."""
        return await self._answer("chat", body, call)

    async def embeddings(self, body: Body, call: CallRecord) -> Body:
        """Embeddings from the first deployment that answers."""
        return await self._answer("embeddings", body, call)

    async def _answer(self, operation: str, body: Body, call: CallRecord) -> Body:
        order, call.assigned = self.plan(call.model, call, body)
        last: UpstreamError | None = None
        for name in order:
            target = self._ready(name, call)
            if target is None:
                continue
            provider, deployment = target
            sent = {**body, "model": deployment.model}
            op = getattr(provider, operation)
            attempt = 0
            while True:
                call.attempts += 1
                span = (
                    None if self.tracer is None else self._span(operation, deployment, sent, call)
                )
                try:
                    answer: Body = await op(sent, deployment)
                except UpstreamError as exc:
                    if span is not None:
                        span.failed(exc)
                    last = exc
                    if await self._failed(name, exc, call, attempt):
                        attempt += 1
                        continue
                    break
                except BaseException as exc:
                    if span is not None:
                        span.failed(exc)
                    raise
                if span is not None:
                    span.answered(answer)
                self._answered(name, deployment, call)
                return answer
        raise self._exhausted(call, order, last)

    async def stream(self, body: Body, call: CallRecord) -> AsyncGenerator[Chunk]:
        """A streamed chat completion's chunks from the first deployment whose stream
        starts; once a chunk is handed on, a failure ends the stream (``streamed``)."""
        order, call.assigned = self.plan(call.model, call, body)
        last: UpstreamError | None = None
        for name in order:
            target = self._ready(name, call)
            if target is None:
                continue
            provider, deployment = target
            sent = {**body, "model": deployment.model}
            attempt = 0
            while True:
                call.attempts += 1
                span = None if self.tracer is None else self._span("chat", deployment, sent, call)
                chunks = provider.stream(sent, deployment)
                try:
                    first: Chunk | None = await anext(chunks)
                except StopAsyncIteration:
                    first = None
                except UpstreamError as exc:
                    await _close(chunks)
                    if span is not None:
                        span.failed(exc)
                    last = exc
                    if await self._failed(name, exc, call, attempt):
                        attempt += 1
                        continue
                    break
                except BaseException as exc:
                    await _close(chunks)
                    if span is not None:
                        span.failed(exc)
                    raise
                call.first_chunk_at = time.perf_counter()
                self._answered(name, deployment, call, success=False)
                try:
                    if first is not None:
                        if span is None:
                            yield first
                            async for chunk in chunks:
                                yield chunk
                        else:
                            span.first_chunk()
                            span.chunk(first)
                            yield first
                            async for chunk in chunks:
                                span.chunk(chunk)
                                yield chunk
                except UpstreamError as exc:
                    exc.streamed = True
                    if span is not None:
                        span.failed(exc)
                    await self._failed(name, exc, call, attempt, retry=False)
                    raise
                except BaseException as exc:  # the client went away (GeneratorExit), a bug
                    if span is not None:
                        span.failed(exc)
                    raise
                finally:
                    await _close(chunks)
                    if span is not None:
                        span.end()
                self.breaker(name).success()
                return
        raise self._exhausted(call, order, last)

    # -- bookkeeping ------------------------------------------------------------------

    def _span(
        self, operation: str, deployment: Deployment, body: Body, call: CallRecord
    ) -> UpstreamSpan:
        """The span of one upstream call (tracing on: :mod:`conveyor.gateway.tracing`)."""
        from conveyor.gateway.tracing import UpstreamSpan, provider_attributes

        found = self._span_attributes.get(deployment.provider)
        if found is None:
            spec = self.spec.providers[deployment.provider]
            found = self._span_attributes[deployment.provider] = provider_attributes(spec)
        return UpstreamSpan(self.tracer, operation, deployment, found, body, call, call.attempts)

    def _ready(self, name: str, call: CallRecord) -> tuple[Provider, Deployment] | None:
        """The deployment's provider, when it may be called now (else the skip recorded)."""
        until = self._cooled.get(name)
        if until is not None:
            if self._clock() < until:
                call.failures.append({"deployment": name, "kind": "cooldown", "status": None})
                return None
            self._cooled.pop(name, None)
        if not self.breaker(name).allow():
            call.failures.append({"deployment": name, "kind": "breaker_open", "status": None})
            return None
        deployment = self._deployments[name]
        try:
            return self.provider(deployment.provider), deployment
        except ConveyorError as exc:  # a provider that cannot start (a key not set...)
            log.error("LLM provider %s of %s cannot start: %s", deployment.provider, name, exc)
            self.breaker(name).failure(exc)
            call.failures.append({"deployment": name, "kind": "config", "status": None})
            return None

    def _answered(
        self, name: str, deployment: Deployment, call: CallRecord, *, success: bool = True
    ) -> None:
        call.deployment = name
        call.upstream_model = deployment.model
        call.provider = deployment.provider
        if success:
            self.breaker(name).success()

    async def _failed(
        self, name: str, exc: UpstreamError, call: CallRecord, attempt: int, *, retry: bool = True
    ) -> bool:
        """Record ``exc``; whether to call the same deployment again (after a backoff)."""
        call.failures.append({"deployment": name, "kind": exc.kind, "status": exc.status})
        log.warning("LLM deployment %s failed (%s): %s", name, exc.kind, exc.message)
        if exc.kind in _BREAKING:
            self.breaker(name).failure(exc.message)
        elif exc.kind == "rate_limited":
            wait = exc.retry_after_s
            self._cooled[name] = self._clock() + (
                self.spec.retry.cooldown_s if wait is None else wait
            )
        else:  # bad_request: the upstream answered; the request is what is wrong
            self.breaker(name).success()
            raise exc
        r = self.spec.retry
        if not retry or exc.streamed or exc.kind != "connect" or attempt >= r.attempts:
            return False
        if not self.breaker(name).allow():
            return False
        backoff = min(r.max_backoff_s, r.backoff_s * (2**attempt))
        await asyncio.sleep(self._rng.uniform(0, backoff))  # full jitter
        return True

    def _exhausted(
        self, call: CallRecord, order: list[str], last: UpstreamError | None
    ) -> UpstreamError:
        if last is not None:
            return last
        waits = []
        for name in order:
            until = self._cooled.get(name)
            waits.append(
                max(0.0, until - self._clock())
                if until is not None
                else self.breaker(name).retry_in()
            )
        cooling = any(f["kind"] == "cooldown" for f in call.failures)
        return UpstreamError(
            "rate_limited" if cooling else "server",
            f"no deployment of {call.model!r} may be called now: "
            + ", ".join(f"{f['deployment']} ({f['kind']})" for f in call.failures),
            deployment=call.model,
            retry_after_s=min(waits) if waits else None,
        )


def _match(
    rules: tuple[CompiledRule, ...], call: CallRecord, body: Body | None
) -> CompiledRule | None:
    """The first rule that holds for ``call`` (the prompt classified when one asks)."""
    for rule in rules:
        if rule.complexity is not None and call.complexity is None and body is not None:
            messages = body.get("messages")
            if messages is not None:
                from conveyor.gateway.complexity import Complexity

                label, score = Complexity.default().classify(messages)
                call.complexity, call.complexity_score = label, round(score, 4)
        if rule.holds(call.team, call.tier, call.key, call.role, call.complexity):
            return rule
    return None


async def _close(chunks: Any) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            log.debug("closing an upstream stream failed", exc_info=True)
