"""Promotion through gates: a gated alias (``champion``) only moves to a version that passed.

A version's gates run elsewhere (:func:`conveyor.training.gates.validate_candidate`)
and are saved as a ``Report`` of kind ``gate`` with subject ``model:NAME`` and
subject version ``N``. Moving a gated alias reads the newest such report::

    registry.promote("fraud", 4, actor="ana")          # refused unless v4's gates passed
    registry.promote("fraud", 4, actor="ana", force=True, reason="hotfix, gates rerun later")

A report that passed (warnings allowed) admits the version; a failed one,
or no report at all, refuses it with :class:`~conveyor.errors.GateFailedError`
naming the failed checks. ``force=True`` needs a reason and is recorded as a
forced move in the alias history and the event log. Rolling back to the
previous holder is never gated: it is how an incident is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import GateFailedError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.registry.versions import AliasMove, ModelVersion
    from conveyor.store.database import MetadataStore

__all__ = [
    "DEFAULT_GATED_ALIASES",
    "GATE_REPORT_KIND",
    "Promotion",
    "PromotionMixin",
    "failed_checks",
    "gate_subject",
    "latest_gate_report",
]

GATE_REPORT_KIND = "gate"
DEFAULT_GATED_ALIASES: frozenset[str] = frozenset({"champion"})


def gate_subject(name: str) -> str:
    """The report subject a model's gate reports are saved under."""
    return f"model:{name}"


def failed_checks(report: Report) -> str:
    """The failed checks of ``report``, named with their detail, for an error message."""
    return ", ".join(f"{c.name} ({c.detail})" if c.detail else c.name for c in report.failures)


def latest_gate_report(store: MetadataStore, name: str, number: int) -> Report | None:
    """The newest gate report of ``name@number``, or None when its gates never ran."""
    from conveyor.checks.persist import list_reports

    page = list_reports(
        store,
        subject=gate_subject(name),
        subject_version=str(number),
        kind=GATE_REPORT_KIND,
        limit=1,
    )
    return page.items[0] if page.items else None


@dataclass(frozen=True, slots=True)
class Promotion:
    """An alias move through the gates: the move and the report that admitted it."""

    #: None when the alias already held the version: nothing moved, nothing was recorded.
    move: AliasMove | None
    version: ModelVersion
    report: Report | None
    forced: bool

    @property
    def unchanged(self) -> bool:
        return self.move is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "move": None if self.move is None else self.move.to_dict(),
            "unchanged": self.unchanged,
            "version": self.version.ref,
            "report": None if self.report is None else self.report.id,
            "verdict": None if self.report is None else self.report.verdict,
            "forced": self.forced,
        }


class PromotionMixin:
    """The gate half of :class:`conveyor.registry.Registry`."""

    store: MetadataStore
    gated_aliases: frozenset[str]

    if TYPE_CHECKING:

        def resolve(self, ref: str | ModelVersion) -> ModelVersion: ...

        def get(self, name: str, number_or_alias: int | str = "latest") -> ModelVersion: ...

        def aliases(self, name: str) -> dict[str, int]: ...

        def set_alias(
            self,
            name: str,
            alias: str,
            version: int | str | ModelVersion,
            *,
            actor: str | None,
            reason: str | None = None,
            forced: bool = False,
            expected_version: int | None = None,
        ) -> AliasMove: ...

    def gate_report(self, version: ModelVersion | str) -> Report | None:
        """The newest gate report of ``version`` (a ModelVersion or ``name@N``)."""
        found = self.resolve(version)
        return latest_gate_report(self.store, found.model, found.number)

    def promote(
        self,
        name: str,
        version: int | str | ModelVersion,
        *,
        alias: str = "champion",
        actor: str | None,
        reason: str | None = None,
        force: bool = False,
        expected_version: int | None = None,
    ) -> Promotion:
        """Move ``alias`` to ``version`` if its gates passed (or ``force`` with a reason)."""
        found = self._version_of(name, version)
        report = latest_gate_report(self.store, found.model, found.number)
        if expected_version is None and self.aliases(found.model).get(alias) == found.number:
            # Already there: a second promotion records no 1 -> 1 move in the history.
            return Promotion(None, found, report, force)
        move = self.set_alias(
            name,
            alias,
            found,
            actor=actor,
            reason=reason,
            forced=force,
            expected_version=expected_version,
        )
        return Promotion(move, found, report, force)

    def _admit(self, name: str, alias: str, version: Any, forced: bool) -> None:
        """Refuse moving a gated alias to a version whose gates did not pass."""
        if alias not in self.gated_aliases or forced:
            return
        found = self._version_of(name, version)
        report = latest_gate_report(self.store, found.model, found.number)
        hint = (
            f"or move {alias!r} anyway with promote(..., force=True, reason=...) "
            "(set_alias: forced=True; CLI: --force --reason)"
        )
        if report is None:
            raise GateFailedError(
                f"{found.ref} has no gate report, so it cannot become {alias!r}: "
                f"run its gates first (conveyor models gates {found.ref}), {hint}",
                model=name,
                version=found.number,
                alias=alias,
            )
        if not report.passed:
            raise GateFailedError(
                f"{found.ref} failed its gates (report {report.id}): {failed_checks(report)}; "
                "fix the "
                f"candidate, {hint}",
                report=report,
                model=name,
                version=found.number,
                alias=alias,
                failed=[c.name for c in report.failures],
            )

    def _version_of(self, name: str, version: int | str | ModelVersion) -> ModelVersion:
        from conveyor.registry.versions import ModelVersion, version_number

        number = version_number(version)
        if isinstance(version, ModelVersion):
            found = version
        elif number is not None:
            found = self.get(name, number)
        elif isinstance(version, str):
            found = self.resolve(version)
        else:
            raise InvalidInputError(
                f"expected a version number, 'name@N' or a version id, got {version!r}",
                field="version",
            )
        if found.model != name:
            raise InvalidInputError(
                f"version {found.ref} belongs to model {found.model!r}, not {name!r}",
                field="version",
            )
        return found
