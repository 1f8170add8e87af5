"""The serving fleet's section of ``conveyor.yaml``: ``fleet:``.

::

    fleet:
      balancer: haproxy         # or nginx (Debian packages haproxy / nginx)
      servers: 4                # conveyor serve processes, each with serving.workers workers
      host: 127.0.0.1           # where the balancer listens
      port: 8080
      server_port: 8100         # server i listens on server_port + i
      check_interval_s: 0.25    # active readiness checks (HAProxy): GET /v2/health/ready
      fall: 2                   # failed checks before a server is taken out
      rise: 2                   # passed checks before it is put back
      drain_s: 30               # longest drain of a server told to stop (SIGTERM)
      quiet_s: 0.5              # a drain ends once no request came for this long

Every field can be set from the environment (``CONVEYOR_FLEET__SERVERS=8``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "FleetSpec", "fleet_of"]

Balancer = Literal["haproxy", "nginx"]


class FleetSpec(BaseModel):
    """N model servers behind a load balancer, on this host (``conveyor fleet up``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    balancer: Balancer = Field(
        "haproxy",
        description="The load balancer: haproxy (active readiness checks) or nginx "
        "(passive checks and retries only, as the open-source build has no active ones).",
    )
    servers: int = Field(2, ge=1, le=256, description="Model server processes.")
    workers: int | None = Field(
        None, ge=1, le=64, description="Workers per server (default: serving.workers)."
    )
    host: str = Field("127.0.0.1", description="The interface the balancer listens on.")
    port: int = Field(8080, ge=1, le=65535, description="The balancer's port.")
    server_host: str = Field("127.0.0.1", description="The interface the servers listen on.")
    server_port: int = Field(
        8100, ge=1, le=65535, description="The first server's port; server i uses port + i."
    )
    check_interval_s: float = Field(
        0.25, gt=0, le=60, description="Seconds between two readiness checks of a server."
    )
    fall: int = Field(2, ge=1, le=100, description="Failed checks before a server is taken out.")
    rise: int = Field(2, ge=1, le=100, description="Passed checks before it is put back.")
    max_fails: int = Field(
        3,
        ge=1,
        le=100,
        description="Failed requests (connection refused, reset, timeout) before the balancer "
        "takes a server out on its own (passive check), for fail_timeout_s.",
    )
    fail_timeout_s: float = Field(
        2.0, gt=0, le=600, description="How long a server failed by requests stays out."
    )
    keepalive: int = Field(
        64, ge=0, le=10_000, description="Idle keep-alive connections kept to the servers."
    )
    drain_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Longest drain: a server told to stop (SIGTERM) fails readiness, waits "
        "for the balancer to take it out, then finishes its requests; at most this long.",
    )
    quiet_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="A drain ends once the balancer stopped sending: no request for this long.",
    )
    dir: str = Field(
        ".conveyor/fleet",
        description="Where the balancer's config, the fleet's state and its logs go "
        "(relative to the project).",
    )

    @property
    def detect_s(self) -> float:
        """The longest a balancer takes to see a failed readiness: ``fall`` checks, one
        interval apart, plus the interval in progress."""
        return self.check_interval_s * (self.fall + 1)


SECTIONS: dict[str, Any] = {
    "fleet": (
        FleetSpec,
        Field(
            default_factory=FleetSpec,
            description="conveyor fleet: model servers behind nginx or HAProxy.",
        ),
    ),
}


def fleet_of(spec: ProjectSpec) -> FleetSpec:
    """The ``fleet:`` section (defaults when the spec has none)."""
    found = getattr(spec, "fleet", None)
    return found if isinstance(found, FleetSpec) else FleetSpec()
