from __future__ import annotations

import math

import pytest

from conveyor.checks import CheckResult, Report, floor, run_gates
from conveyor.checks.render import print_report, report_table
from conveyor.errors import GateFailedError, InvalidInputError


def test_verdict_counts_errors_not_warnings() -> None:
    report = Report.of(
        "model:m",
        [
            CheckResult("auc", True, 0.91, 0.85),
            CheckResult("small_group", False, 12, 30, severity="warning"),
        ],
    )
    assert report.passed and report.verdict == "passed with warnings"
    assert [c.name for c in report.warnings] == ["small_group"]
    report.add(CheckResult("latency", False, 80.0, 50.0))
    assert not report.passed and report.verdict == "failed"
    assert [c.name for c in report.failures] == ["latency"]


def test_raise_for_failure_names_failed_checks() -> None:
    report = Report.of("model:m", [CheckResult("auc", False, 0.7, 0.85)])
    with pytest.raises(GateFailedError, match=r"auc \(observed 0.7, needed 0.85\)") as info:
        report.raise_for_failure()
    assert info.value.report is report
    assert Report.of("x", [CheckResult("ok", True)]).raise_for_failure().passed


def test_json_round_trip_keeps_values() -> None:
    import numpy as np

    report = Report.of(
        "dataset:t",
        [
            CheckResult("rows", True, np.int64(5), {"min": 1}, "fine"),
            CheckResult("nan", False, float("nan"), [1, 2], severity="warning"),
            CheckResult("flag", np.bool_(True)),
        ],
        kind="data",
        subject_version="3",
    )
    again = Report.from_dict(__import__("orjson").loads(report.to_json()))
    assert again.to_dict() == report.to_dict()
    assert again.checks[0].observed == 5 and again.checks[1].observed is None
    assert again.checks[2].passed is True


def test_bad_checks_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="passed must be a bool"):
        CheckResult("x", "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="severity"):
        CheckResult("x", True, severity="fatal")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="CheckResult"):
        Report("s").add("not a check")  # type: ignore[arg-type]


def test_gate_runner_keeps_a_crashing_gate_as_a_failure() -> None:
    def good(ctx: dict) -> CheckResult:
        return floor("auc", ctx["auc"], 0.85)

    def several(ctx: dict) -> list[CheckResult]:
        return [CheckResult("a", True), CheckResult("b", True)]

    def broken(ctx: dict) -> CheckResult:
        raise KeyError("holdout")

    report = run_gates("model:m", [good, broken, several], {"auc": 0.9})
    assert [c.name for c in report] == ["auc", "broken", "a", "b"]
    assert report.checks[1].passed is False
    assert "KeyError" in report.checks[1].detail
    assert report.verdict == "failed"


@pytest.mark.parametrize(
    ("observed", "threshold", "direction", "passed"),
    [
        (0.9, 0.85, "maximize", True),
        (0.85, 0.85, "maximize", True),
        (0.8, 0.85, "maximize", False),
        (40.0, 50.0, "minimize", True),
        (60.0, 50.0, "minimize", False),
    ],
)
def test_floor(observed: float, threshold: float, direction: str, passed: bool) -> None:
    check = floor("m", observed, threshold, direction=direction)
    assert check.passed is passed
    assert ("meets" if passed else "misses") in check.detail
    assert not math.isnan(check.observed)


def test_rendering_shows_every_check_and_the_verdict() -> None:
    from rich.console import Console

    report = Report.of(
        "model:m", [CheckResult("auc", True, 0.91, 0.85), CheckResult("p95", False, 80.0, 50.0)]
    )
    console = Console(record=True, width=120)
    console.print(report_table(report))
    text = console.export_text()
    assert (
        "FAILED" in text and "PASS" in text and "FAIL" in text and "auc" in text and "0.91" in text
    )
    console = Console(record=True, width=120)
    print_report(report, console, as_json=True)
    assert '"verdict": "failed"' in console.export_text()
