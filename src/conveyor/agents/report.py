"""What the tool calls did over a period, from their ``mcp.call`` events."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["calls_report"]


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def calls_report(
    project: Project, *, since: datetime, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per tool: calls, how they ended (ok, error_result, refused, failed), refusals by
    code, retries, truncated results, p50 and p95 latency; the most called first."""
    rows: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for event in project.events.iter(kind="mcp.call", since=since, until=until):
        payload = event.payload
        tool = str(payload.get("tool"))
        row = rows.setdefault(
            tool,
            {
                "tool": tool,
                "server": payload.get("server"),
                "calls": 0,
                "ok": 0,
                "error_result": 0,
                "refused": 0,
                "failed": 0,
                "codes": {},
                "retries": 0,
                "truncated": 0,
            },
        )
        row["calls"] += 1
        status = payload.get("status")
        if status in ("ok", "error_result", "refused", "failed"):
            row[status] += 1
        if payload.get("code"):
            row["codes"][payload["code"]] = row["codes"].get(payload["code"], 0) + 1
        row["retries"] += max(0, int(payload.get("attempts") or 0) - 1)
        row["truncated"] += bool(payload.get("truncated"))
        latencies.setdefault(tool, []).append(float(payload.get("latency_ms") or 0.0))
    for tool, row in rows.items():
        row["p50_ms"] = _quantile(latencies[tool], 0.5)
        row["p95_ms"] = _quantile(latencies[tool], 0.95)
    return sorted(rows.values(), key=lambda r: (-r["calls"], r["tool"]))
