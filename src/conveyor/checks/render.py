"""Show a Report as a terminal table (rich) or JSON, the same way everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult, Report

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["print_report", "report_table"]

_STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow"}
_VERDICT_STYLE = {"passed": "green", "passed with warnings": "yellow", "failed": "bold red"}


def report_table(report: Report) -> Table:
    """A rich Table: one row per check, the verdict in the title."""
    from rich.table import Table
    from rich.text import Text

    style = _VERDICT_STYLE[report.verdict]
    version = f"@{report.subject_version}" if report.subject_version else ""
    table = Table(
        title=f"{report.kind} report: {report.subject}{version}: "
        f"[{style}]{report.verdict.upper()}[/]",
        title_justify="left",
        show_lines=False,
    )
    table.add_column("status")
    table.add_column("check")
    table.add_column("observed", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        table.add_row(
            f"[{_STATUS_STYLE[check.status]}]{check.status.upper()}[/]",
            check.name,
            _fmt(check.observed),
            _fmt(check.threshold),
            Text(check.detail or ""),  # values from the data (a column's text), not markup
        )
    return table


def print_report(report: Report, console: Console | None = None, *, as_json: bool = False) -> None:
    """Print as a table, or as indented JSON with ``as_json``."""
    from rich.console import Console

    console = console or Console()
    if as_json:
        console.print_json(report.to_json())
    else:
        console.print(report_table(report))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(check: CheckResult) -> str:
    """One line, for logs: ``PASS auc 0.93 (>= 0.85)``."""
    return f"{check.status.upper()} {check.name} {_fmt(check.observed)} ({_fmt(check.threshold)})"
