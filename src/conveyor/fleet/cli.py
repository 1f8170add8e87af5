"""``conveyor fleet config | up | down | status``.

::

    conveyor fleet config --balancer haproxy --servers 4 --port 8080   # writes the config
    conveyor fleet up --servers 4                  # 4 servers, ready, then the balancer
    conveyor fleet status --json                   # each server's readiness, the balancer's
    conveyor fleet down                            # servers drain (SIGTERM), balancer stops

Options override ``fleet:`` in conveyor.yaml for this command. ``config`` and ``up``
record a ``fleet.configured`` audit event (role deployer: ``fleet.manage``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

__all__ = ["fleet_app"]

fleet_app = typer.Typer(
    help="A serving fleet: N model servers behind nginx or HAProxy on this host.",
    no_args_is_help=True,
)

BalancerOpt = Annotated[
    str | None, typer.Option("--balancer", help="haproxy or nginx (default: fleet.balancer).")
]
ServersOpt = Annotated[
    int | None, typer.Option("--servers", "-n", help="Servers (default: fleet.servers).")
]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="The balancer's port (default: fleet.port).")
]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="The balancer's interface (default: fleet.host).")
]
ServerPortOpt = Annotated[
    int | None,
    typer.Option("--server-port", help="The first server's port (default: fleet.server_port)."),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Workers per server (default: fleet.workers, serving.workers)."),
]


def _overrides(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None}


def _record(proj: Any, who: str, fleet: Any) -> None:
    from conveyor.fleet.events import FLEET_CONFIGURED

    proj.events.record(
        FLEET_CONFIGURED,
        subject=fleet.plan.balancer,
        actor=who,
        payload={"balancer": fleet.plan.balancer, "servers": len(fleet.plan.members)},
    )


@fleet_app.command("config")
@errors
def config_cmd(
    balancer: BalancerOpt = None,
    servers: ServersOpt = None,
    port: PortOpt = None,
    host: HostOpt = None,
    server_port: ServerPortOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the load balancer's config (checked by the balancer itself) and print its path."""
    from conveyor.fleet.manager import Fleet

    with open_project(project) as proj:
        who = authorized(proj, "fleet.manage")
        fleet = Fleet.plan_for(
            proj.root,
            _overrides(
                balancer=balancer, servers=servers, port=port, host=host, server_port=server_port
            ),
        )
        path = fleet.write_config()
        _record(proj, who, fleet)
    if as_json:
        echo_json({"balancer": fleet.plan.balancer, "config": str(path), "url": fleet.url})
    else:
        typer.echo(f"wrote {path} ({fleet.plan.balancer}, {len(fleet.plan.members)} servers)")


@fleet_app.command("up")
@errors
def up_cmd(
    balancer: BalancerOpt = None,
    servers: ServersOpt = None,
    port: PortOpt = None,
    host: HostOpt = None,
    server_port: ServerPortOpt = None,
    workers: WorkersOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the servers, wait until each is ready, then start the balancer in front."""
    from conveyor.fleet.manager import Fleet, backend_notes

    with open_project(project) as proj:
        who = authorized(proj, "fleet.manage")
        for note in backend_notes(proj.spec):
            typer.echo(f"note: {note}", err=True)
        fleet = Fleet.plan_for(
            proj.root,
            _overrides(
                balancer=balancer,
                servers=servers,
                port=port,
                host=host,
                server_port=server_port,
                workers=workers,
            ),
        )
        root = proj.root
    status = fleet.up()
    with open_project(root) as proj:
        _record(proj, who, fleet)
    if any(s["status"] == "empty" for s in status["servers"]):
        typer.echo(
            "note: nothing is deployed, so no server is ready and the balancer sends no "
            "traffic yet: `conveyor deploy NAME@VERSION`",
            err=True,
        )
    if as_json:
        echo_json(status)
    else:
        typer.echo(
            f"{fleet.plan.balancer} at {fleet.url} in front of {len(fleet.plan.members)} "
            f"servers ({fleet.workers} workers each); logs in {fleet.dir / 'logs'}"
        )


@fleet_app.command("down")
@errors
def down_cmd(
    kill: Annotated[
        bool, typer.Option("--kill", help="SIGKILL the servers instead of draining them.")
    ] = False,
    project: ProjectOpt = None,
) -> None:
    """Drain and stop every server (SIGTERM), then the balancer."""
    from conveyor.fleet.manager import Fleet

    with open_project(project) as proj:
        authorized(proj, "fleet.manage")
        root = proj.root
    fleet = Fleet.load(root)
    fleet.down(drain=not kill)
    typer.echo(f"stopped {len(fleet.plan.members)} servers and {fleet.plan.balancer}")


@fleet_app.command("status")
@errors
def status_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Each server's process and readiness, and the balancer's."""
    from conveyor.config import load_spec
    from conveyor.fleet.manager import Fleet

    status = Fleet.load(load_spec(project).root).status()
    if as_json:
        echo_json(status)
        return
    b = status["balancer"]
    typer.echo(
        f"{b['kind']} {b['url']}: {'up' if b['running'] else 'down'}"
        f"{', ready' if b['ready'] else ''}"
    )
    for s in status["servers"]:
        typer.echo(
            f"  {s['name']} {s['url']} pid {s['pid']}: "
            f"{'running' if s['running'] else 'stopped'}, {s['status']}"
        )
