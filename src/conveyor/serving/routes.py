"""Route policies as data, and the pure function that decides where one request goes.

::

    policy = RoutePolicy.canary(stable=3, candidate=4, percent=10)
    decision = decide(policy, model="fraud", key="user-42", attributes={})
    decision.version, decision.arm      # (3, "stable") for 90 % of users, always the same

A :class:`RoutePolicy` is what ``conveyor route set`` stores (JSON in the
``routes`` table); :func:`decide` reads nothing else. Order of a decision:

1. Flag rules, in order: a rule applies when every ``match`` attribute
   equals the request's, and then only for ``percent`` % of sticky keys
   (a hash of model, flag name and key, so a user stays in or out).
2. Weights: with a key, rendezvous (highest-random-weight) hashing: each
   arm scores ``-ln(u) / weight`` with ``u`` a hash of (model, key, arm
   label) and the lowest score wins, so each arm's share is its weight's
   share, and raising one arm's weight moves users only *into* that arm.
   Without a key, one uniform draw against the cumulative weights.
3. Shadows: every shadow version other than the chosen one.

Arms are identified by their label (``arm`` or, unnamed, ``v<version>``),
not their position, so reordering arms or swapping the version behind a
named arm keeps every user's assignment.

Hashes are blake2b (stable across processes and Python versions, unlike
``hash()``). :meth:`RoutePolicy.compiled` precomputes everything that does
not depend on the request (hash personalisations, thresholds, and every
possible :class:`Decision` object), so a call costs one to three blake2b
digests and allocates no Decision.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from conveyor.errors import InvalidInputError

__all__ = ["Arm", "CompiledRoute", "Decision", "FlagRule", "RoutePolicy", "decide"]

_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
# 53 random bits -> a float in (0, 1): never 0 (ln(0)) and never 1 (ln(1) = 0 ties).
_UNIT = 2.0**-53


class _PolicyError(ValueError):
    """A cross-field check failed; ``field`` is the path it names (``versions[1].weight``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _invalid(exc: ValidationError, what: str) -> InvalidInputError:
    """Pydantic's errors as one InvalidInputError naming every bad field by its path."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        where = _path(err["loc"])
        if isinstance(cause, _PolicyError):
            problems.append((_join(where, cause.field), cause.message))
        elif isinstance(cause, InvalidInputError) and "problems" in cause.context:
            # A nested Arm or FlagRule built through its own __init__: prefix its paths.
            problems += [
                (_join(where, p["field"]), p["message"]) for p in cause.context["problems"]
            ]
        else:
            problems.append((where or what, err["msg"]))
    return InvalidInputError(
        f"invalid {what}: " + "; ".join(f"{f}: {m}" for f, m in problems),
        field=problems[0][0],
        problems=[{"field": f, "message": m} for f, m in problems],
    )


def _join(prefix: str, field: str) -> str:
    if not prefix:
        return field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Data(BaseModel):
    """Frozen, no unknown keys; constructing one with bad values raises InvalidInputError."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid(exc, _what(type(self))) from None


def _what(cls: type) -> str:
    return {"RoutePolicy": "route policy", "Arm": "arm", "FlagRule": "flag rule"}.get(
        cls.__name__, cls.__name__
    )


class Arm(_Data):
    """One serving version and its share of the traffic (weights are relative)."""

    version: int = Field(ge=1, description="The model version number this arm serves.")
    weight: float = Field(
        default=100.0, ge=0, allow_inf_nan=False, description="Relative share; 0 drains the arm."
    )
    arm: str | None = Field(
        default=None, pattern=_NAME.pattern, description="Name (needed for A-B tests)."
    )

    @property
    def label(self) -> str:
        """The arm's identity in hashing and in decisions: its name, or ``v<version>``."""
        return self.arm if self.arm is not None else f"v{self.version}"


class FlagRule(_Data):
    """Send matching requests (and ``percent`` % of their keys) to ``version``."""

    name: str = Field(pattern=_NAME.pattern)
    match: dict[str, str] = Field(default_factory=dict)
    percent: float = Field(default=100.0, ge=0, le=100, allow_inf_nan=False)
    version: int = Field(ge=1)


class RoutePolicy(_Data):
    """Where a model's traffic goes: the JSON stored per model in ``routes``.

    ``mode`` is ``fixed`` (one version), ``canary`` (two or more weighted
    versions) or ``ab`` (two or more *named* arms, the assignment logged).
    """

    mode: Literal["fixed", "canary", "ab"]
    versions: list[Arm] = Field(min_length=1)
    sticky_header: str | None = Field(
        default=None, description="Request header whose value keeps a user on one arm."
    )
    shadow: list[int] = Field(
        default_factory=list, description="Versions that also get each request, unanswered."
    )
    flags: list[FlagRule] = Field(default_factory=list)
    cache: bool = True

    _compiled: CompiledRoute | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> RoutePolicy:
        arms = self.versions
        if self.mode == "fixed" and len(arms) != 1:
            raise _PolicyError(
                "versions", f"a fixed route has exactly one version, got {len(arms)}"
            )
        if self.mode in ("canary", "ab") and len(arms) < 2:
            raise _PolicyError(
                "versions",
                f"a {self.mode} route splits traffic between at least two versions, got "
                f"{len(arms)} (use mode 'fixed' for one)",
            )
        if self.mode == "ab":
            for i, a in enumerate(arms):
                if a.arm is None:
                    raise _PolicyError(f"versions[{i}].arm", "every arm of an A-B test is named")
        if self.mode != "fixed" and sum(a.weight for a in arms) <= 0:
            raise _PolicyError("versions", "the weights sum to 0: no arm would get traffic")
        seen: dict[str, int] = {}
        for i, a in enumerate(arms):
            if a.label in seen:
                raise _PolicyError(
                    f"versions[{i}].arm",
                    f"arm {a.label!r} is also versions[{seen[a.label]}]; arm names are unique "
                    "(name arms that serve the same version)",
                )
            seen[a.label] = i
        serving = {a.version for a in arms}
        for i, v in enumerate(self.shadow):
            if v < 1:
                raise _PolicyError(f"shadow[{i}]", f"version numbers start at 1, got {v}")
            if v in serving:
                raise _PolicyError(
                    f"shadow[{i}]", f"version {v} is a serving arm; a shadow only mirrors traffic"
                )
            if v in self.shadow[:i]:
                raise _PolicyError(f"shadow[{i}]", f"version {v} is listed twice")
        names: set[str] = set()
        for i, f in enumerate(self.flags):
            if f.name in names:
                raise _PolicyError(f"flags[{i}].name", f"flag {f.name!r} is listed twice")
            names.add(f.name)
        if self.sticky_header is not None and not _HEADER.match(self.sticky_header):
            raise _PolicyError(
                "sticky_header", f"{self.sticky_header!r} is not an HTTP header name"
            )
        return self

    # -- constructors ----------------------------------------------------------

    @classmethod
    def fixed(cls, version: int, **options: Any) -> RoutePolicy:
        """All traffic to ``version``."""
        return cls(mode="fixed", versions=[Arm(version=version)], **options)

    @classmethod
    def canary(cls, stable: int, candidate: int, percent: float, **options: Any) -> RoutePolicy:
        """``percent`` % of traffic to ``candidate`` (arm ``canary``), the rest to ``stable``."""
        if not isinstance(percent, int | float) or not 0 <= percent <= 100:
            raise InvalidInputError(
                f"canary percent must be between 0 and 100, got {percent!r}", field="percent"
            )
        if stable == candidate:
            raise InvalidInputError(
                f"a canary of version {candidate} against itself: pick another stable version",
                field="candidate",
            )
        return cls(
            mode="canary",
            versions=[
                Arm(version=stable, weight=100 - percent, arm="stable"),
                Arm(version=candidate, weight=percent, arm="canary"),
            ],
            **options,
        )

    @classmethod
    def from_dict(cls, data: Any) -> RoutePolicy:
        """A policy from its JSON document (InvalidInputError naming the field)."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"a route policy is a JSON object, got {type(data).__name__}", field="policy"
            )
        return cls(**{str(k): v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> RoutePolicy:
        import orjson

        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"route policy is not JSON: {exc}", field="policy") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # -- reading -----------------------------------------------------------------

    def serving_versions(self) -> tuple[int, ...]:
        """Versions that answer requests: the arms' and the flags', in order, once each."""
        return tuple(
            dict.fromkeys([a.version for a in self.versions] + [f.version for f in self.flags])
        )

    def all_versions(self) -> tuple[int, ...]:
        """Every version the policy names (serving, flags and shadows): what a server loads."""
        return tuple(dict.fromkeys([*self.serving_versions(), *self.shadow]))

    def compiled(self) -> CompiledRoute:
        """The precomputed form :func:`decide` runs (built once per policy object)."""
        # The private dict directly: pydantic's __getattr__ for private attributes
        # costs ~2 us, as much as a whole decision.
        compiled: CompiledRoute | None = (self.__pydantic_private__ or {}).get("_compiled")
        if compiled is None:
            compiled = self._compiled = CompiledRoute(self)
        return compiled


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes: the version to answer with and why.

    ``arm`` is the arm's label, or ``flag:<name>`` when a flag rule sent it;
    ``shadow`` the versions that get a copy; ``sticky`` whether a key decided it.
    """

    version: int
    arm: str
    flag: str | None
    shadow: tuple[int, ...]
    sticky: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arm": self.arm,
            "flag": self.flag,
            "shadow": list(self.shadow),
            "sticky": self.sticky,
        }


def _person(kind: bytes, name: str) -> bytes:
    # blake2b's 16-byte personalisation: one independent hash function per arm or flag.
    return hashlib.blake2b(kind + b"\0" + name.encode(), digest_size=16).digest()


class CompiledRoute:
    """A :class:`RoutePolicy` turned into what :meth:`decide` needs on the hot path."""

    __slots__ = ("_arms", "_cumulative", "_fixed", "_flags", "policy")

    def __init__(self, policy: RoutePolicy) -> None:
        self.policy = policy
        shadow = tuple(policy.shadow)

        def both(version: int, arm: str, flag: str | None) -> tuple[Decision, Decision]:
            rest = tuple(v for v in shadow if v != version)
            return (
                Decision(version, arm, flag, rest, False),
                Decision(version, arm, flag, rest, True),
            )

        live = [a for a in policy.versions if a.weight > 0 or policy.mode == "fixed"]
        # (personalisation, heaviest weight / weight, (random decision, sticky decision))
        # per arm with traffic. Relative to the heaviest arm, so the heaviest has a
        # finite factor of 1 even when weights are tiny (1 / 1e-320 is infinite).
        heaviest = max((a.weight for a in live), default=0.0)
        self._arms = tuple(
            (
                _person(b"arm", a.label),
                heaviest / a.weight if a.weight > 0 else 1.0,
                both(a.version, a.label, None),
            )
            for a in live
        )
        self._fixed = self._arms[0][2] if len(self._arms) == 1 else None
        total = sum(a.weight for a in live)
        running, cumulative = 0.0, []
        for a in live:
            running += a.weight
            cumulative.append(running / total if total > 0 else 1.0)
        cumulative[-1] = 1.0  # rounding must not leave a draw of 0.9999999 unassigned
        self._cumulative = tuple(cumulative)
        # (name, match items, percent / 100, personalisation, decisions)
        self._flags = tuple(
            (
                f.name,
                tuple(f.match.items()),
                f.percent / 100.0,
                _person(b"flag", f.name),
                both(f.version, f"flag:{f.name}", f.name),
            )
            for f in policy.flags
        )

    def decide(
        self,
        *,
        model: str,
        key: str | None,
        attributes: Mapping[str, str],
        rand: float | None = None,
    ) -> Decision:
        """Where this request goes (see the module docstring for the order)."""
        data = None if key is None else f"{model}\0{key}".encode()
        sticky = key is not None
        for _name, match, share, person, decisions in self._flags:
            if match and not all(attributes.get(k) == v for k, v in match):
                continue
            if share >= 1.0:
                return decisions[sticky]
            if share <= 0.0:
                continue
            if data is not None:
                if _uniform(data, person) < share:
                    return decisions[True]
            else:
                if rand is None:
                    rand = random.random()
                if rand < share:
                    return decisions[False]
                # Conditioned on missing the flag, the draw is uniform on [share, 1):
                # rescale it so the weights below still get an unbiased draw.
                rand = (rand - share) / (1.0 - share)
        if self._fixed is not None:
            return self._fixed[sticky]
        if data is not None:
            best = self._arms[0][2]  # an arm of negligible weight scores inf and never wins
            best_score = math.inf
            for person, inverse, decisions in self._arms:
                score = -math.log(_uniform(data, person)) * inverse
                if score < best_score:
                    best, best_score = decisions, score
            return best[True]
        if rand is None:
            rand = random.random()
        for bound, (_p, _i, decisions) in zip(self._cumulative, self._arms, strict=True):
            if rand < bound:
                return decisions[False]
        return self._arms[-1][2][False]


def _uniform(data: bytes, person: bytes) -> float:
    """A stable uniform draw in (0, 1) from ``data`` under one personalisation."""
    bits = int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "little")
    return ((bits >> 11) + 0.5) * _UNIT


def decide(
    policy: RoutePolicy | CompiledRoute,
    *,
    model: str,
    key: str | None,
    attributes: Mapping[str, str],
    rand: float | None = None,
) -> Decision:
    """Where one request for ``model`` goes under ``policy``.

    ``key`` is the sticky header's value (None: not sticky); ``attributes``
    the request's attributes flag rules match on; ``rand`` a uniform draw in
    [0, 1) for non-sticky requests (default: ``random.random()``).
    """
    route = policy if isinstance(policy, CompiledRoute) else policy.compiled()
    return route.decide(model=model, key=key, attributes=attributes, rand=rand)
