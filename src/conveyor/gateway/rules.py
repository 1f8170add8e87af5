"""Routing rules: which deployments an alias sends a request to, by who asks (team, tier,
key, role) and how complex the request is.

::

    gateway:
      models:
        fast: [mini]
        smart: [gpt4o, sonnet]
        chat:
          deployments: [mini, llama]          # the default, when no rule matches
          rules:
            - {name: research, when: {teams: [research]}, to: smart}
            - {name: premium, when: {tiers: [gold]}, deployments: [gpt4o, mini]}
            - {name: hard, when: {complexity: complex}, to: smart}
            - {name: easy, when: {complexity: simple}, to: fast}

An alias's rules are tried in order; the first whose ``when`` holds routes the request,
else the alias's own deployments do. A ``when`` holds when each condition given holds
(and), a list holding when any of its values does (or); an empty ``when`` always holds.
The conditions:

- ``teams``: the request's ``x-conveyor-team`` header;
- ``tiers``: its ``x-conveyor-tier`` header;
- ``keys``: the name of the API key it came with;
- ``roles``: that key's role (viewer, predictor, deployer, admin);
- ``complexity``: ``simple`` or ``complex``, the prompt classifier's label
  (:mod:`conveyor.gateway.complexity`; computed only when a rule asks, once per request;
  never holds for embeddings).

Headers are what the caller says: a rule by header suits routing for quality or cost, and
a rule by ``keys`` or ``roles`` what must not be claimed. A rule sends the request to
``to`` (another alias: its deployments and weights, not its rules) or to its own
``deployments`` (and ``weights``). Which rule matched and the complexity are in the
``llm.call`` event (``route_rule``, ``complexity``, ``complexity_score``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from conveyor.gateway.settings import ModelSpec

__all__ = ["CompiledRule", "MatchSpec", "RuleSpec", "check_rules", "check_split", "compile_rules"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class MatchSpec(BaseModel):
    """When a rule applies: every condition given holds (see the module)."""

    model_config = _STRICT

    teams: list[str] = Field(
        default_factory=list, description="The x-conveyor-team header is one of these."
    )
    tiers: list[str] = Field(
        default_factory=list, description="The x-conveyor-tier header is one of these."
    )
    keys: list[str] = Field(default_factory=list, description="The API key's name is one of these.")
    roles: list[Literal["viewer", "predictor", "deployer", "admin"]] = Field(
        default_factory=list, description="The API key's role is one of these."
    )
    complexity: Literal["simple", "complex"] | None = Field(
        None, description="The prompt classifier's label (conveyor.gateway.complexity)."
    )


class RuleSpec(BaseModel):
    """A routing rule of an alias: when it applies, and where it sends the request."""

    model_config = _STRICT

    name: str | None = Field(
        None, description="How the llm.call event names it (None: rule-1, rule-2... by place)."
    )
    when: MatchSpec = Field(default_factory=MatchSpec, description="When it applies.")
    to: str | None = Field(
        None, description="Another alias: the request goes where that alias's deployments go."
    )
    deployments: list[str] = Field(
        default_factory=list, description="Or these deployments, in fallback order."
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="A weighted split over ``deployments``."
    )

    @model_validator(mode="after")
    def _target(self) -> RuleSpec:
        if (self.to is None) == (not self.deployments):
            raise ValueError("a rule sends to another alias ('to') or to 'deployments', one")
        if self.weights and not self.deployments:
            raise ValueError("'weights' split the rule's own 'deployments'")
        check_split(self.deployments, self.weights)
        return self


def check_split(deployments: list[str], weights: Mapping[str, float]) -> None:
    """Deployments listed once each, and weights over them (ValueError: what is wrong)."""
    for name, weight in weights.items():
        if name not in deployments:
            raise ValueError(f"weights: {name!r} is not one of the deployments")
        if weight < 0:
            raise ValueError(f"weights: {name!r} has a negative weight")
    if weights and not any(weights.values()):
        raise ValueError("weights: at least one must be above 0")
    if len(set(deployments)) != len(deployments):
        raise ValueError("deployments: a deployment is listed twice")


def check_rules(
    alias: str, rules: list[RuleSpec], aliases: Mapping[str, Any], deployments: Mapping[str, Any]
) -> str | None:
    """What is wrong with ``alias``'s rules given the known aliases and deployments (None:
    nothing)."""
    names: set[str] = set()
    for i, rule in enumerate(rules, 1):
        name = rule.name or f"rule-{i}"
        if name in names:
            return f"model {alias!r}: two rules are named {name!r}"
        names.add(name)
        if rule.to is not None:
            if rule.to == alias:
                return f"model {alias!r}: rule {name!r} sends to the alias itself"
            if rule.to not in aliases:
                return (
                    f"model {alias!r}: rule {name!r} sends to {rule.to!r}, not an alias "
                    f"(known: {', '.join(aliases) or 'none'})"
                )
        for listed in rule.deployments:
            if listed not in deployments:
                return (
                    f"model {alias!r}: rule {name!r}: no deployment {listed!r} "
                    f"(known: {', '.join(deployments) or 'none'})"
                )
    return None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match: its conditions as sets, its target resolved."""

    name: str
    teams: frozenset[str] | None
    tiers: frozenset[str] | None
    keys: frozenset[str] | None
    roles: frozenset[str] | None
    complexity: str | None
    deployments: tuple[str, ...]
    weights: Mapping[str, float]

    def holds(
        self,
        team: str | None,
        tier: str | None,
        key: str | None,
        role: str | None,
        complexity: str | None,
    ) -> bool:
        """Whether the rule applies (``complexity``: the label, computed by the caller only
        when :attr:`complexity` is set)."""
        return (
            (self.teams is None or team in self.teams)
            and (self.tiers is None or tier in self.tiers)
            and (self.keys is None or key in self.keys)
            and (self.roles is None or role in self.roles)
            and (self.complexity is None or complexity == self.complexity)
        )


def _set(values: list[str]) -> frozenset[str] | None:
    return frozenset(values) if values else None


def compile_rules(
    models: Mapping[str, ModelSpec], known: Mapping[str, Any]
) -> dict[str, tuple[CompiledRule, ...]]:
    """Every alias's rules, compiled (aliases without rules are left out). A rule sending
    to an alias that is gone (a stored route deleted) or to a deployment not ``known`` is
    left out."""
    compiled: dict[str, tuple[CompiledRule, ...]] = {}
    for alias, model in models.items():
        if not model.rules:
            continue
        found = []
        for i, rule in enumerate(model.rules, 1):
            if rule.to is not None:
                target = models.get(rule.to)
                if target is None:
                    continue
                deployments, weights = tuple(target.deployments), dict(target.weights)
            else:
                deployments, weights = tuple(rule.deployments), dict(rule.weights)
            if not all(d in known for d in deployments):
                continue
            when = rule.when
            found.append(
                CompiledRule(
                    rule.name or f"rule-{i}",
                    _set(when.teams),
                    _set(when.tiers),
                    _set(when.keys),
                    _set(list(when.roles)),
                    when.complexity,
                    deployments,
                    weights,
                )
            )
        compiled[alias] = tuple(found)
    return compiled
