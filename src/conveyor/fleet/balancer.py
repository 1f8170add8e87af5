"""Load-balancer configurations for a serving fleet: HAProxy and nginx, from one plan.

::

    plan = FleetPlan.local(fleet_of(spec), Path(".conveyor/fleet"))
    text = render(plan)                   # haproxy.cfg or nginx.conf, by plan.balancer
    check(plan, path)                     # `haproxy -c` / `nginx -t`: ConfigError if refused
    argv = command(plan, path)            # how to run it in the foreground

What both do:

- **keep-alive upstreams**: idle connections to the servers are kept and reused
  (``keepalive`` per server), closed by the balancer before the server's own
  keep-alive timeout (``serving.keep_alive_s``), so the balancer never sends a request
  on a connection the server is closing;
- **passive checks**: ``max_fails`` failed requests (refused, reset, timed out) take a
  server out for ``fail_timeout_s``, and such a request is sent again to another server
  when the server cannot have started it (connection refused, or closed before any
  answer: a prediction is safe to repeat);
- **active checks** (HAProxy only; nginx's open-source build has none): ``GET
  /v2/health/ready`` every ``check_interval_s``; ``fall`` failures take a server out,
  ``rise`` successes put it back. A server that drains fails its readiness first, so
  HAProxy stops sending before the server stops listening. Behind nginx, a draining
  server keeps answering until it stops listening, and nginx retries what is refused.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from conveyor.fleet.settings import FleetSpec

__all__ = ["READY_PATH", "FleetPlan", "Member", "check", "command", "config_name", "render"]

#: What the balancer asks each server (docs/serving.md: ready only while every live
#: route is loaded, and not while draining).
READY_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class Member:
    """One server of the fleet: where it listens, and how the balancer reaches it."""

    name: str
    #: The interface and port the server binds.
    host: str
    port: int
    #: The address the balancer dials (another host's, or the same).
    address: str
    #: Prepended to the server's command (``ip netns exec NS``: another network namespace).
    prefix: tuple[str, ...] = ()
    #: Environment of the server's process over the fleet's (URLs as that host sees them).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def upstream(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class FleetPlan:
    """Everything a balancer config is made of."""

    spec: FleetSpec
    members: tuple[Member, ...]
    #: The folder of the config, the pid file, nginx's temporary files.
    dir: Path
    #: The servers' keep-alive timeout (``serving.keep_alive_s``): the balancer closes its
    #: idle connections before that.
    server_keep_alive_s: float = 5.0

    @property
    def balancer(self) -> str:
        return self.spec.balancer

    @classmethod
    def local(cls, spec: FleetSpec, folder: Path, server_keep_alive_s: float = 5.0) -> FleetPlan:
        """``spec.servers`` servers on ``spec.server_host``, ports from ``spec.server_port``."""
        members = tuple(
            Member(f"s{i}", spec.server_host, spec.server_port + i, spec.server_host)
            for i in range(spec.servers)
        )
        return cls(spec, members, folder, server_keep_alive_s)


def config_name(balancer: str) -> str:
    return "haproxy.cfg" if balancer == "haproxy" else "nginx.conf"


def render(plan: FleetPlan) -> str:
    """The balancer's configuration text."""
    if not plan.members:
        raise ConfigError("a fleet needs at least one server", field="fleet.servers")
    return _haproxy(plan) if plan.balancer == "haproxy" else _nginx(plan)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _idle_s(plan: FleetPlan) -> float:
    """How long the balancer keeps an idle server connection: under the server's own."""
    return max(0.5, min(plan.server_keep_alive_s - 1.0, plan.server_keep_alive_s * 0.8))


def _haproxy(plan: FleetPlan) -> str:
    s = plan.spec
    inter = _ms(s.check_interval_s)
    lines = [
        "# Written by `conveyor fleet config`: edit conveyor.yaml (fleet:) and write it again.",
        "global",
        f"    pidfile {plan.dir / 'haproxy.pid'}",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout queue 10s",
        f"    timeout http-keep-alive {_ms(_idle_s(plan))}ms",
        "    # A request the server cannot have started (refused, or closed before any",
        "    # answer) goes to another server; a prediction is safe to send again.",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
        "    option http-buffer-request",
        "",
        "frontend conveyor",
        f"    bind {s.host}:{s.port}",
        "    default_backend servers",
        "",
        "backend servers",
        "    balance leastconn",
        "    http-reuse safe",
        f"    option httpchk GET {READY_PATH}",
        "    http-check expect status 200",
        # A server is put back once ready (rise), taken out once it fails readiness (fall)
        # or once requests fail on it (observe layer4: passive), checked faster meanwhile.
        f"    default-server check inter {inter}ms fastinter {max(1, inter // 2)}ms "
        f"downinter {inter}ms fall {s.fall} rise {s.rise} "
        f"observe layer4 error-limit {s.max_fails} on-error mark-down "
        f"pool-purge-delay {_ms(_idle_s(plan))}ms",
    ]
    lines += [f"    server {m.name} {m.upstream}" for m in plan.members]
    return "\n".join(lines) + "\n"


def _nginx(plan: FleetPlan) -> str:
    s = plan.spec
    tmp = plan.dir / "nginx-tmp"
    servers = "\n".join(
        f"        server {m.upstream} max_fails={s.max_fails} "
        f"fail_timeout={max(1, round(s.fail_timeout_s))}s;"
        for m in plan.members
    )
    keepalive = (
        f"        keepalive {s.keepalive};\n"
        f"        keepalive_timeout {_ms(_idle_s(plan))}ms;\n"
        "        keepalive_requests 100000;\n"
        if s.keepalive
        else ""
    )
    return f"""# Written by `conveyor fleet config`: edit conveyor.yaml (fleet:) and write it again.
# nginx's open-source build has no active health checks: a server is taken out by failed
# requests (max_fails within fail_timeout), and a request refused by a server that stopped
# listening is sent to the next one (proxy_next_upstream).
daemon off;
worker_processes auto;
pid {plan.dir / "nginx.pid"};
error_log {plan.dir / "nginx-error.log"} warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 8m;

    upstream conveyor {{
        least_conn;
{servers}
{keepalive}    }}

    server {{
        listen {s.host}:{s.port} backlog=4096;
        keepalive_timeout 60s;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://conveyor;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
            # Refused, reset before an answer, or a 502: another server (a prediction is
            # safe to send again, hence non_idempotent).
            proxy_next_upstream error timeout http_502 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


def _binary(balancer: str) -> str:
    found = shutil.which(balancer) or shutil.which(balancer, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MissingDependencyError(
            f"{balancer} is not installed: `apt-get install {balancer}` "
            f"(or `scripts/services.sh {balancer}`)",
            dependency=balancer,
        )
    return found


def command(plan: FleetPlan, path: Path) -> list[str]:
    """The balancer in the foreground, with the config at ``path``."""
    binary = _binary(plan.balancer)
    if plan.balancer == "haproxy":
        return [binary, "-W", "-db", "-f", str(path)]
    return [binary, "-c", str(path), "-p", str(plan.dir)]


def check(plan: FleetPlan, path: Path) -> None:
    """Ask the balancer itself whether the config at ``path`` is valid (ConfigError if not)."""
    binary = _binary(plan.balancer)
    (plan.dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    argv = (
        [binary, "-c", "-f", str(path)]
        if plan.balancer == "haproxy"
        else [binary, "-t", "-c", str(path), "-p", str(plan.dir)]
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"{plan.balancer} refused {path}: {(done.stderr or done.stdout).strip()[-800:]}",
            field="fleet",
        )
