"""A fleet server's worker: the model server's app, draining on SIGTERM for its balancer.

Every ``conveyor serve`` drains (:class:`conveyor.serving.drain.Draining`, where the
steps are described); a fleet server's worker sizes its drain from the balancer it
sits behind rather than from ``serving.drain``: readiness fails for at least the
balancer's detection time (``fleet.detect_s``: its ``fall`` checks), then the server
stops once no request came for ``fleet.quiet_s``, at most ``fleet.drain_s``.
"""

from __future__ import annotations

from typing import Any

from conveyor.serving.drain import Draining

__all__ = ["Draining", "worker_app"]


def worker_app() -> Any:
    """One worker of a fleet server (uvicorn factory): the model server's app over the
    project named by ``CONVEYOR_SERVE_PROJECT``, draining on SIGTERM."""
    import os

    from conveyor.fleet.settings import fleet_of
    from conveyor.project import Project
    from conveyor.serving.drain import draining_app
    from conveyor.serving.server import PROJECT_ENV

    proj = Project.open(os.environ[PROJECT_ENV])
    fleet = fleet_of(proj.spec)
    if fleet.balancer == "haproxy":
        return draining_app(proj, min_s=fleet.detect_s, quiet_s=fleet.quiet_s, max_s=fleet.drain_s)
    # nginx never reads readiness: it keeps sending until the server stops listening, and
    # then sends what is refused elsewhere. Waiting longer would only delay that.
    return draining_app(proj, min_s=0.0, quiet_s=fleet.quiet_s, max_s=min(fleet.drain_s, 1.0))
