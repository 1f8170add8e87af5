"""``conveyor doctor``: is each seam's backend installed, reachable, and migrated?

The probe opens each backend the way a program would (without applying
migrations: the doctor looks, it does not change) and reports what it
found or, when it fails, why, in the words of the typed error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from conveyor.backends import Seam
from conveyor.config import ProjectSpec
from conveyor.errors import ConveyorError

__all__ = ["SeamHealth", "check_seams", "durability_facts"]

# Options that keep a probe read-only.
_PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "store": {"migrate": False},
    "events": {"migrate": False},
}


@dataclass(slots=True)
class SeamHealth:
    seam: str
    url: str
    ok: bool
    backend: str = ""
    detail: str = ""
    latency_ms: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_seams(spec: ProjectSpec, seams: list[str] | None = None) -> list[SeamHealth]:
    """Probe each seam's configured backend; never raises for a backend's failure."""
    from conveyor.capability import seams as all_seams

    known = all_seams()
    return [_probe(spec, known[name]) for name in (seams or list(known))]


def _probe(spec: ProjectSpec, seam: Seam) -> SeamHealth:
    name = seam.name
    url = spec.url(name)
    health = SeamHealth(seam=name, url=str(url), ok=False)
    start = time.perf_counter()
    try:
        health.backend = seam.spec(url).target.rpartition(":")[2]
        backend = seam.open(url, **_PROBE_OPTIONS.get(name, {}))
        try:
            facts = backend.health() if hasattr(backend, "health") else backend.ping()
            health.facts = dict(facts) if isinstance(facts, dict) else {}
        finally:
            backend.close()
    except ConveyorError as exc:
        health.detail = f"{type(exc).__name__}: {exc.message}"
    except Exception as exc:  # an unexpected failure is still a finding, not a crash
        health.detail = f"{type(exc).__name__}: {exc}"
    else:
        health.ok = True
        health.detail = _describe(health.facts)
    if name == "events":
        health.facts.update(durability_facts(spec))
        health.detail = f"{health.detail}; {health.facts['loss_window']}"
    health.latency_ms = round((time.perf_counter() - start) * 1000, 1)
    return health


def durability_facts(spec: ProjectSpec) -> dict[str, Any]:
    """What a ``kill -9`` of a server can lose, from ``events:`` in the spec."""
    events = spec.events
    if events.durability == "acknowledged":
        window = (
            "durability acknowledged: every answered prediction's event is committed "
            "before the answer (a kill -9 loses none that were answered)"
        )
    else:
        ms = round(events.flush_interval_s * 1000)
        window = (
            f"durability buffered: a kill -9 loses the predictions answered in the last "
            f"~{ms} ms plus one commit (events.flush_interval_s); set events.durability: "
            "acknowledged to lose none"
        )
    return {
        "durability": events.durability,
        "flush_interval_s": events.flush_interval_s,
        "loss_window": window,
    }


def _describe(facts: dict[str, Any]) -> str:
    if "heads" in facts:  # the metadata store: one migration chain per owner of tables
        behind = facts.get("behind") or []
        if behind:
            return (
                f"reachable; {len(facts['heads'])} schema chains, behind: {', '.join(behind)}: "
                "first use migrates"
            )
        return f"reachable; {len(facts['heads'])} schema chains at their heads"
    revision, head = facts.get("revision"), facts.get("head")
    if "head" in facts and revision != head:
        return (
            f"reachable; schema at {revision or 'empty'}, code expects {head}: first use migrates"
        )
    if revision:
        return f"reachable; schema at {revision}"
    return "reachable"
