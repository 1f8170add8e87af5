"""Route policies and decide(): shares, stickiness, minimal movement, flags, shadows, validation."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import InvalidInputError
from conveyor.serving.routes import Arm, Decision, FlagRule, RoutePolicy, decide

N = 100_000
KEYS = [f"user-{i}" for i in range(N)]
# 5 standard deviations: a correct router fails this with probability < 1e-6 per check.
Z = 5.0


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1 - p)) + 1


def arms(policy: RoutePolicy, keys: list[str], model: str = "fraud") -> list[str]:
    route = policy.compiled()
    return [route.decide(model=model, key=k, attributes={}).arm for k in keys]


def weighted(*pairs: tuple[int, float, str]) -> RoutePolicy:
    return RoutePolicy(
        mode="canary", versions=[Arm(version=v, weight=w, arm=a) for v, w, a in pairs]
    )


DESIGN_EXAMPLE: dict[str, Any] = {
    "mode": "canary",
    "versions": [
        {"version": 3, "weight": 90, "arm": "champion"},
        {"version": 4, "weight": 10, "arm": "canary"},
    ],
    "sticky_header": "x-user-id",
    "shadow": [5],
    "flags": [{"name": "beta", "match": {"tier": "beta"}, "percent": 100, "version": 5}],
    "cache": True,
}


# -- shares -------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(70, 20, 10), (1, 1, 1), (99, 1, 0.5)])
def test_sticky_shares_match_the_weights(weights: tuple[float, float, float]) -> None:
    policy = weighted(*[(i + 1, w, f"a{i}") for i, w in enumerate(weights)])
    counts = Counter(arms(policy, KEYS))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert within_binomial(counts[f"a{i}"], N, w / total), (counts, weights)


def test_random_shares_match_the_weights() -> None:
    policy = weighted((1, 70, "a"), (2, 20, "b"), (3, 10, "c"))
    rng = random.Random(7)
    route = policy.compiled()
    counts = Counter(
        route.decide(model="m", key=None, attributes={}, rand=rng.random()).arm for _ in range(N)
    )
    for arm, p in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        assert within_binomial(counts[arm], N, p), counts
    # The default draw is random.random(): still every arm, in about the right shares.
    default = Counter(decide(policy, model="m", key=None, attributes={}).arm for _ in range(N))
    assert within_binomial(default["c"], N, 0.1), default


def test_a_drained_arm_gets_nothing_and_the_draw_edges_land_on_arms() -> None:
    policy = weighted((1, 50, "a"), (2, 0, "drained"), (3, 50, "b"))
    assert "drained" not in set(arms(policy, KEYS[:20_000]))
    route = policy.compiled()
    assert route.decide(model="m", key=None, attributes={}, rand=0.0).arm == "a"
    assert route.decide(model="m", key=None, attributes={}, rand=0.4999).arm == "a"
    assert route.decide(model="m", key=None, attributes={}, rand=0.5).arm == "b"
    assert route.decide(model="m", key=None, attributes={}, rand=1 - 1e-12).arm == "b"


def test_fixed_sends_everything_to_its_version() -> None:
    policy = RoutePolicy.fixed(7)
    assert {
        d.version
        for d in map(lambda k: decide(policy, model="m", key=k, attributes={}), KEYS[:1000])
    } == {7}
    assert decide(policy, model="m", key=None, attributes={}) == Decision(7, "v7", None, (), False)
    assert decide(policy, model="m", key="u", attributes={}).sticky


# -- stickiness and stability ----------------------------------------------------


@given(key=st.text(max_size=40), model=st.sampled_from(["fraud", "churn", "a/b.c"]))
@settings(max_examples=200, deadline=None)
def test_the_same_key_always_gets_the_same_arm(key: str, model: str) -> None:
    policy = weighted((1, 60, "a"), (2, 30, "b"), (3, 10, "c"))
    first = decide(policy, model=model, key=key, attributes={})
    # A policy rebuilt from its JSON (as a server reloading it would) decides the same.
    again = RoutePolicy.from_dict(policy.to_dict())
    assert decide(again, model=model, key=key, attributes={}) == first
    assert decide(policy, model=model, key=key, attributes={}, rand=0.99) == first
    assert first.sticky


def test_assignments_are_stable_across_processes_and_releases() -> None:
    # blake2b, not hash(): pinned values catch an accidental change of the hash input.
    policy = weighted((1, 50, "a"), (2, 50, "b"))
    assert arms(policy, ["user-0", "user-1", "user-2", "user-3", "user-4", "user-5"]) == PINNED


PINNED = ["a", "b", "a", "b", "a", "b"]


def test_the_model_is_part_of_the_hash() -> None:
    policy = weighted((1, 50, "a"), (2, 50, "b"))
    same = sum(
        a == b
        for a, b in zip(
            arms(policy, KEYS[:20_000], "fraud"), arms(policy, KEYS[:20_000], "churn"), strict=True
        )
    )
    assert within_binomial(same, 20_000, 0.5)


def test_reordering_arms_keeps_every_assignment() -> None:
    forward = weighted((1, 50, "a"), (2, 30, "b"), (3, 20, "c"))
    backward = weighted((3, 20, "c"), (1, 50, "a"), (2, 30, "b"))
    assert arms(forward, KEYS[:20_000]) == arms(backward, KEYS[:20_000])


# -- minimal movement --------------------------------------------------------------


def test_growing_a_canary_keeps_its_users_and_moves_only_the_share_it_must() -> None:
    at_10 = arms(RoutePolicy.canary(3, 4, 10), KEYS)
    at_20 = arms(RoutePolicy.canary(3, 4, 20), KEYS)
    assert all(
        after == "canary" for before, after in zip(at_10, at_20, strict=True) if before == "canary"
    )
    moved = sum(before != after for before, after in zip(at_10, at_20, strict=True))
    assert within_binomial(moved, N, 0.1), moved
    assert within_binomial(at_20.count("canary"), N, 0.2)


def test_changing_one_weight_moves_users_only_into_or_out_of_that_arm() -> None:
    before = arms(weighted((1, 50, "a"), (2, 30, "b"), (3, 20, "c")), KEYS)
    after = arms(weighted((1, 50, "a"), (2, 10, "b"), (3, 20, "c")), KEYS)
    moves = Counter((x, y) for x, y in zip(before, after, strict=True) if x != y)
    assert set(moves) <= {("b", "a"), ("b", "c")}
    # b went from 30 % to 10/80 = 12.5 %: 17.5 % of users had to move, and no more.
    assert within_binomial(sum(moves.values()), N, 0.30 - 0.125)


# -- flags --------------------------------------------------------------------------


def test_flags_match_every_attribute_then_fall_through_to_the_weights() -> None:
    policy = RoutePolicy.from_dict(
        {
            **DESIGN_EXAMPLE,
            "flags": [
                {"name": "eu-beta", "match": {"tier": "beta", "region": "eu"}, "version": 6},
                {"name": "beta", "match": {"tier": "beta"}, "version": 5},
            ],
        }
    )
    eu = decide(policy, model="m", key="u1", attributes={"tier": "beta", "region": "eu", "x": "y"})
    assert (eu.version, eu.arm, eu.flag) == (6, "flag:eu-beta", "eu-beta")
    beta = decide(policy, model="m", key="u1", attributes={"tier": "beta", "region": "us"})
    assert (beta.version, beta.flag, beta.shadow) == (5, "beta", ())  # 5 is also the shadow
    plain = decide(policy, model="m", key="u1", attributes={"tier": "gold"})
    assert plain.flag is None and plain.version in (3, 4) and plain.shadow == (5,)


def test_a_flag_percent_is_a_sticky_share_of_keys() -> None:
    def policy(percent: float) -> RoutePolicy:
        return RoutePolicy.fixed(
            1, flags=[FlagRule(name="beta", match={"tier": "beta"}, percent=percent, version=2)]
        )

    beta = {"tier": "beta"}
    at_30 = [decide(policy(30), model="m", key=k, attributes=beta).version for k in KEYS]
    assert within_binomial(at_30.count(2), N, 0.3)
    # Users in at 30 % stay in at 60 %: the hash, not a fresh draw, decides.
    at_60 = [decide(policy(60), model="m", key=k, attributes=beta).version for k in KEYS]
    assert all(b == 2 for a, b in zip(at_30, at_60, strict=True) if a == 2)
    assert within_binomial(at_60.count(2), N, 0.6)
    # Another flag name is another hash: a different 30 % of users.
    other = RoutePolicy.fixed(1, flags=[FlagRule(name="other", percent=30, version=2)])
    in_other = [decide(other, model="m", key=k, attributes={}).version == 2 for k in KEYS]
    both = sum(a == 2 and b for a, b in zip(at_30, in_other, strict=True))
    assert within_binomial(both, N, 0.09)
    assert {decide(policy(100), model="m", key=k, attributes={}).version for k in KEYS[:500]} == {1}


def test_without_a_key_a_flag_percent_uses_the_draw_and_leaves_the_weights_unbiased() -> None:
    policy = RoutePolicy.from_dict(
        {
            **weighted((1, 50, "a"), (2, 50, "b")).to_dict(),
            "flags": [{"name": "f", "percent": 50, "version": 9}],
        }
    )
    assert decide(policy, model="m", key=None, attributes={}, rand=0.25).flag == "f"
    # 0.6 missed the flag; rescaled to 0.2 it lands on the first arm, 0.9 -> 0.8 on the second.
    assert decide(policy, model="m", key=None, attributes={}, rand=0.6).arm == "a"
    assert decide(policy, model="m", key=None, attributes={}, rand=0.9).arm == "b"
    rng = random.Random(3)
    counts = Counter(
        decide(policy, model="m", key=None, attributes={}, rand=rng.random()).arm for _ in range(N)
    )
    assert within_binomial(counts["flag:f"], N, 0.5)
    assert within_binomial(counts["a"], N, 0.25) and within_binomial(counts["b"], N, 0.25)


# -- shadows and arbitrary policies ------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> RoutePolicy:
    versions = draw(st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True))
    weights = draw(st.lists(st.floats(0, 100), min_size=len(versions), max_size=len(versions)))
    if sum(weights) <= 0:
        weights[0] = 1.0
    others = [v for v in range(1, 13) if v not in versions]
    shadow = draw(st.lists(st.sampled_from(others), max_size=3, unique=True))
    flags = [
        {"name": f"f{i}", "match": m, "percent": p, "version": v}
        for i, (m, p, v) in enumerate(
            draw(
                st.lists(
                    st.tuples(
                        st.dictionaries(
                            st.sampled_from(["tier", "region"]),
                            st.sampled_from(["a", "b"]),
                            max_size=2,
                        ),
                        st.floats(0, 100),
                        st.integers(1, 12),
                    ),
                    max_size=3,
                )
            )
        )
    ]
    return RoutePolicy.from_dict(
        {
            "mode": "fixed" if len(versions) == 1 else "canary",
            "versions": [
                {"version": v, "weight": w} for v, w in zip(versions, weights, strict=True)
            ],
            "shadow": shadow,
            "flags": flags,
        }
    )


@given(
    policy=policies(),
    key=st.one_of(st.none(), st.text(max_size=20)),
    attributes=st.dictionaries(st.sampled_from(["tier", "region"]), st.sampled_from(["a", "b"])),
    rand=st.floats(0, 1, exclude_max=True),
)
@settings(max_examples=300, deadline=None)
def test_any_decision_serves_a_named_version_and_never_shadows_it(
    policy: RoutePolicy, key: str | None, attributes: dict[str, str], rand: float
) -> None:
    d = decide(policy, model="m", key=key, attributes=attributes, rand=rand)
    assert d.version not in d.shadow
    assert set(d.shadow) == set(policy.shadow) - {d.version}
    assert d.version in policy.serving_versions()
    assert d.sticky is (key is not None)
    if d.flag is None:
        serving = {a.version: a for a in policy.versions}
        assert serving[d.version].weight > 0 or policy.mode == "fixed"
    assert policy.all_versions()[: len(policy.versions)] == tuple(
        a.version for a in policy.versions
    )


def test_the_design_example_round_trips() -> None:
    policy = RoutePolicy.from_dict(DESIGN_EXAMPLE)
    assert policy.to_dict() == {
        **DESIGN_EXAMPLE,
        "versions": [{**a, "weight": float(a["weight"])} for a in DESIGN_EXAMPLE["versions"]],
        "flags": [{**f, "percent": 100.0} for f in DESIGN_EXAMPLE["flags"]],
    }
    assert RoutePolicy.from_json(policy.model_dump_json()) == policy
    assert policy.all_versions() == (3, 4, 5)


# -- validation ---------------------------------------------------------------------------

ONE = [{"version": 1}]


def fixed(**extra: Any) -> dict[str, Any]:
    return {"mode": "fixed", "versions": ONE, **extra}


def split(mode: str, *arms: dict[str, Any]) -> dict[str, Any]:
    return {"mode": mode, "versions": list(arms)}


def flag(**rule: Any) -> dict[str, Any]:
    return fixed(flags=[{"name": "f", "version": 2, **rule}])


V1, V2 = {"version": 1}, {"version": 2}
AT_LEAST = "greater than or equal to"


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (split("fixed", V1, V2), "versions", "exactly one"),
        (split("fixed"), "versions", "at least 1"),
        (split("canary", V1), "versions", "at least two"),
        ({"mode": "rollout", "versions": ONE}, "mode", "fixed"),
        (split("canary", {**V1, "weight": -1}, V2), "versions[0].weight", f"{AT_LEAST} 0"),
        (split("canary", {**V1, "weight": 0}, {**V2, "weight": 0}), "versions", "sum to 0"),
        (split("canary", {**V1, "weight": "nan"}, V2), "versions[0].weight", "finite"),
        (split("canary", {**V1, "arm": "x"}, {**V2, "arm": "x"}), "versions[1].arm", "unique"),
        (split("canary", V1, V1), "versions[1].arm", "unique"),
        (split("ab", {**V1, "arm": "a"}, V2), "versions[1].arm", "named"),
        (split("ab", {**V1, "arm": "a"}), "versions", "at least two"),
        (split("fixed", {"version": 0}), "versions[0].version", f"{AT_LEAST} 1"),
        (fixed(shadow=[1]), "shadow[0]", "serving arm"),
        (fixed(shadow=[2, 2]), "shadow[1]", "twice"),
        (flag(percent=101), "flags[0].percent", "less than or equal to 100"),
        (flag(percent=-1), "flags[0].percent", f"{AT_LEAST} 0"),
        (fixed(flags=[{"name": "f", "version": 2}] * 2), "flags[1].name", "twice"),
        (fixed(flags=[{"name": "f"}]), "flags[0].version", "required"),
        (fixed(sticky_header="x user"), "sticky_header", "header"),
        (fixed(colour="red"), "colour", "not permitted"),
        (split("fixed", {**V1, "wieght": 5}), "versions[0].wieght", "not permitted"),
    ],
)
def test_invalid_policies_name_the_field(document: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        RoutePolicy.from_dict(document)
    assert caught.value.context["field"] == field
    assert field in caught.value.message and words in caught.value.message
    assert caught.value.to_dict()["problems"][0]["field"] == field


def test_constructors_and_bad_documents_raise_invalid_input() -> None:
    canary = RoutePolicy.canary(3, 4, 25, sticky_header="x-user-id")
    assert [(a.version, a.weight, a.arm) for a in canary.versions] == [
        (3, 75, "stable"),
        (4, 25, "canary"),
    ]
    with pytest.raises(InvalidInputError, match="percent"):
        RoutePolicy.canary(3, 4, 120)
    with pytest.raises(InvalidInputError, match=r"arm: version"):
        Arm(version=-2)
    with pytest.raises(InvalidInputError) as caught:
        RoutePolicy.from_json("{not json")
    assert caught.value.context["field"] == "policy"
    with pytest.raises(InvalidInputError, match="JSON object"):
        RoutePolicy.from_dict([1, 2])
    with pytest.raises(InvalidInputError, match="shadow"):
        RoutePolicy.canary(3, 4, 10, shadow=[4])
    # Policies are frozen data: a change is a new policy (and a new compiled route).
    with pytest.raises(Exception, match="frozen"):
        canary.mode = "fixed"  # type: ignore[misc]


def test_tiny_weights_still_route_every_sticky_key() -> None:
    # 1 / 5e-324 is infinite: scores are taken relative to the heaviest arm.
    tiny = RoutePolicy.from_dict(
        {
            "mode": "canary",
            "versions": [
                {"version": 1, "weight": 5e-324, "arm": "a"},
                {"version": 2, "weight": 5e-324, "arm": "b"},
            ],
        }
    )
    seen = {decide(tiny, model="m", key=f"u{i}", attributes={}).version for i in range(200)}
    assert seen == {1, 2}
    lopsided = RoutePolicy.from_dict(
        {
            "mode": "canary",
            "versions": [
                {"version": 1, "weight": 5e-324, "arm": "a"},
                {"version": 2, "weight": 100, "arm": "b"},
            ],
        }
    )
    assert {
        decide(lopsided, model="m", key=f"u{i}", attributes={}).version for i in range(200)
    } == {2}
