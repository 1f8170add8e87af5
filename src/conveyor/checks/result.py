"""One notion of a check: ``CheckResult`` and ``Report``.

A data expectation, a model validation gate, a canary step analysis, a bias
test and an SLO all produce the same :class:`CheckResult`; a :class:`Report`
is a list of them about one subject, with an overall verdict. Reports are
persisted by :mod:`conveyor.checks.persist` and shown the same way everywhere
by :mod:`conveyor.checks.render`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from conveyor.errors import GateFailedError, InvalidInputError

__all__ = ["CheckResult", "Report", "Severity", "Verdict"]

Severity = Literal["error", "warning"]
Verdict = Literal["passed", "passed with warnings", "failed"]
_SEVERITIES = ("error", "warning")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check.

    ``observed`` is what was measured and ``threshold`` what it was held to
    (numbers, strings, or small JSON-able structures). A failed check of
    severity ``warning`` is reported but does not fail the report.
    """

    name: str
    passed: bool
    observed: Any = None
    threshold: Any = None
    detail: str = ""
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError("a check needs a name", field="name")
        if self.severity not in _SEVERITIES:
            raise InvalidInputError(
                f"check {self.name!r}: severity must be one of {_SEVERITIES}, "
                f"got {self.severity!r}",
                field="severity",
            )
        # bool(numpy.bool_) is fine; anything else truthy is a bug in the check.
        object.__setattr__(self, "passed", _as_bool(self.passed, self.name))

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``warn`` (a failed warning-level check)."""
        if self.passed:
            return "pass"
        return "warn" if self.severity == "warning" else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "observed": _jsonable(self.observed),
            "threshold": _jsonable(self.threshold),
            "detail": self.detail,
            "severity": self.severity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=data["name"],
            passed=data["passed"],
            observed=data.get("observed"),
            threshold=data.get("threshold"),
            detail=data.get("detail", ""),
            severity=data.get("severity", "error"),
        )


@dataclass(slots=True)
class Report:
    """Checks about one subject (``model:fraud``, ``dataset:transactions``...)."""

    subject: str
    checks: list[CheckResult] = field(default_factory=list)
    kind: str = "checks"
    subject_version: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(self, *checks: CheckResult) -> Report:
        for check in checks:
            if not isinstance(check, CheckResult):
                raise InvalidInputError(
                    f"a report holds CheckResult objects, got {type(check).__name__}",
                    field="checks",
                )
            self.checks.append(check)
        return self

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    @property
    def passed(self) -> bool:
        """True when no error-severity check failed (warnings do not fail)."""
        return all(c.passed or c.severity == "warning" for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def verdict(self) -> Verdict:
        if not self.passed:
            return "failed"
        return "passed with warnings" if self.warnings else "passed"

    def raise_for_failure(self) -> Report:
        """Raise :class:`GateFailedError` naming the failed checks; return self if passed."""
        if not self.passed:
            names = ", ".join(
                f"{c.name} (observed {c.observed!r}, needed {c.threshold!r})" for c in self.failures
            )
            raise GateFailedError(
                f"{self.kind} report for {self.subject} failed: {names}",
                report=self,
                report_id=self.id,
                failed=[c.name for c in self.failures],
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "subject_version": self.subject_version,
            "created_at": self.created_at.isoformat(),
            "passed": self.passed,
            "verdict": self.verdict,
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, indent: bool = False) -> str:
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.to_dict(), option=option).decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        created = data.get("created_at")
        return cls(
            subject=data["subject"],
            checks=[CheckResult.from_dict(c) for c in data.get("checks", [])],
            kind=data.get("kind", "checks"),
            subject_version=data.get("subject_version"),
            id=data.get("id") or uuid.uuid4().hex,
            created_at=datetime.fromisoformat(created) if created else datetime.now(UTC),
        )

    @classmethod
    def of(cls, subject: str, checks: Iterable[CheckResult], **fields: Any) -> Report:
        return cls(subject=subject, **fields).add(*checks)


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise InvalidInputError(
        f"check {name!r}: passed must be a bool, got {type(value).__name__} {value!r}",
        field="passed",
    )


def _jsonable(value: Any) -> Any:
    """Plain JSON types for observed/threshold (numpy scalars, tuples, NaN)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        return _jsonable(item())
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
