"""Promotion through gates: champion moves only to a version whose gates passed, or by force."""

from __future__ import annotations

import pytest
from registry_support import Doubler

from conveyor.checks.persist import save_report
from conveyor.checks.result import CheckResult, Report
from conveyor.errors import GateFailedError, InvalidInputError
from conveyor.registry import Registry
from conveyor.registry.promotion import gate_subject


def _gated(registry: Registry, number: int, *, passed: bool, warn: bool = False) -> Report:
    checks = [
        CheckResult(
            "metric_floor",
            passed,
            observed=0.91 if passed else 0.62,
            threshold=0.8,
            detail="roc_auc 0.91 >= 0.8" if passed else "roc_auc 0.62 < floor 0.8",
        ),
    ]
    if warn:
        checks.append(
            CheckResult("fairness.group_size", False, detail="group b: 12 rows", severity="warning")
        )
    report = Report.of(gate_subject("fraud"), checks, kind="gate", subject_version=str(number))
    save_report(registry.store, report)
    return report


def test_champion_needs_passing_gates(registry: Registry) -> None:
    for i in range(3):
        registry.register("fraud", Doubler(float(i)))

    with pytest.raises(GateFailedError, match="fraud@1 has no gate report"):
        registry.promote("fraud", 1, actor="ana")

    _gated(registry, 1, passed=True)
    promotion = registry.promote("fraud", 1, actor="ana", reason="first champion")
    assert promotion.report is not None and promotion.report.verdict == "passed"
    assert not promotion.forced and registry.get("fraud", "champion").number == 1

    failed = _gated(registry, 2, passed=False)
    with pytest.raises(GateFailedError, match=r"metric_floor \(roc_auc 0.62 < floor 0.8\)") as exc:
        registry.promote("fraud", 2, actor="bo")
    assert exc.value.report is not None and exc.value.report.id == failed.id
    assert exc.value.context["failed"] == ["metric_floor"]
    # set_alias is gated the same way: there is no back door.
    with pytest.raises(GateFailedError):
        registry.set_alias("fraud", "champion", 2, actor="bo")
    assert registry.get("fraud", "champion").number == 1

    with pytest.raises(InvalidInputError, match="reason"):
        registry.promote("fraud", 2, actor="bo", force=True)
    forced = registry.promote("fraud", 2, actor="bo", force=True, reason="hotfix; rerun later")
    assert forced.forced and forced.report is not None and forced.report.verdict == "failed"
    last = registry.alias_history("fraud", "champion", limit=1)[0]
    assert last.forced and last.reason == "hotfix; rerun later" and last.actor == "bo"

    # A warning admits; the newest report is the one that counts.
    _gated(registry, 3, passed=False)
    _gated(registry, 3, passed=True, warn=True)
    assert registry.gate_report("fraud@3").verdict == "passed with warnings"  # type: ignore[union-attr]
    assert registry.promote("fraud", "fraud@3", actor="cy").version.number == 3

    # Rollback is never gated: it is how an incident is stopped.
    assert registry.rollback("fraud", "champion", actor="oncall").to_version_id == forced.version.id


def test_other_aliases_are_free_and_gating_is_configurable(registry: Registry) -> None:
    registry.register("fraud", Doubler(1.0))
    registry.set_alias("fraud", "challenger", 1, actor="ci")
    open_registry = Registry(registry.store, registry.artifacts, gated_aliases=())
    open_registry.set_alias("fraud", "champion", 1, actor="ana")
    strict = Registry(registry.store, registry.artifacts, gated_aliases={"challenger"})
    with pytest.raises(GateFailedError):
        strict.set_alias("fraud", "challenger", 1, actor="ci")
    registry.register("other", Doubler(2.0))
    with pytest.raises(InvalidInputError, match="belongs to model"):
        registry.promote("fraud", "other@1", actor="ana")


def test_promoting_the_current_champion_again_records_nothing(registry: Registry) -> None:
    registry.register("fraud", Doubler(1.0))
    _gated(registry, 1, passed=True)
    first = registry.promote("fraud", 1, actor="ana", reason="first")
    assert not first.unchanged
    again = registry.promote("fraud", 1, actor="bo", reason="again")
    assert again.unchanged and again.to_dict()["move"] is None
    history = registry.alias_history("fraud", "champion")
    assert len(history) == 1


def test_missing_versions_are_named_with_a_way_forward(registry: Registry) -> None:
    from conveyor.errors import NotFoundError

    registry.register("fraud-detector", Doubler(1.0))
    with pytest.raises(NotFoundError) as nosuch:
        registry.resolve("fraud-detectr")
    message = str(nosuch.value)
    assert "any version" not in message and "has no version" in message
    assert "did you mean 'fraud-detector'?" in message and "conveyor models list" in message
    with pytest.raises(NotFoundError, match=r"there is no fraud-detector@7 \(conveyor models"):
        registry.resolve("fraud-detector@7")
    with pytest.raises(InvalidInputError, match="names no version after '@'"):
        registry.resolve("fraud-detector@")
