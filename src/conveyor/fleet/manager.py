"""A serving fleet on one host: N model servers and their load balancer, as processes.

::

    fleet = Fleet.plan(root)                 # conveyor.yaml's fleet: section
    fleet.up()                               # servers ready, then the balancer; state saved
    fleet.status()                           # {"balancer": {...}, "servers": [...]}
    fleet.down()                             # servers drain (SIGTERM), then the balancer stops
    Fleet.load(root).down()                  # the same from another process (the state file)

Each server is ``python -m conveyor.fleet.node`` (``conveyor serve`` with draining, its
own ``serving.workers``), started in a session of its own so it outlives the command
that started it; its output goes to ``<fleet.dir>/logs/<name>.log``. The state file
(``<fleet.dir>/state.json``) records the pids, so ``conveyor fleet down`` and ``status``
work from any shell. Servers on other hosts (or in other network namespaces) are the
same processes with a command prefix and an address of their own (:class:`Member`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.errors import BackendUnavailableError, ConfigError, InvalidInputError
from conveyor.fleet.balancer import READY_PATH, FleetPlan, Member, check, command, config_name
from conveyor.fleet.balancer import render as render_config
from conveyor.fleet.settings import FleetSpec

__all__ = ["Fleet", "backend_notes"]

STATE = "state.json"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not reaped) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _get(url: str, timeout: float = 1.0) -> tuple[int, dict[str, Any]]:
    """GET a JSON URL with the standard library: (status, body); (0, {}) when unreachable."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def backend_notes(spec: Any) -> list[str]:
    """What the project's backends mean for a fleet (shared policy, cache, rate limits)."""
    backends = spec.backends
    notes = []
    store = str(getattr(backends, "store", ""))
    if not store.startswith("postgresql"):
        notes.append(
            "backends.store is not PostgreSQL: route changes reach the servers by polling "
            "(serving.poll_interval_s), not LISTEN/NOTIFY, and only on this host"
        )
    for seam, what in (("ratelimit", "rate limits"), ("cache", "the prediction cache")):
        url = str(getattr(backends, seam, "") or "")
        if not url.startswith(("redis", "rediss")):
            notes.append(
                f"backends.{seam} is not Redis: {what} are per server process, "
                "not shared by the fleet"
            )
    return notes


class Fleet:
    """The processes of a fleet: start, watch, drain and stop them."""

    def __init__(
        self,
        root: Path,
        plan: FleetPlan,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.plan = plan
        self.workers = workers
        #: Environment of every process over this one's.
        self.env = dict(env or {})
        self.processes: dict[str, subprocess.Popen[bytes] | None] = {}
        self.pids: dict[str, int] = {}
        self.balancer_pid: int | None = None
        self._balancer: subprocess.Popen[bytes] | None = None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def plan_for(
        cls, root: Path | str, overrides: dict[str, Any] | None = None, **options: Any
    ) -> Fleet:
        """The fleet conveyor.yaml's ``fleet:`` describes, with ``overrides`` of its fields."""
        from conveyor.config import load_spec
        from conveyor.fleet.settings import fleet_of
        from conveyor.serving.settings import serving_of

        spec = load_spec(Path(root))
        fleet = fleet_of(spec)
        if overrides:
            fleet = _override(fleet, overrides)
        serving = serving_of(spec)
        folder = (spec.root / fleet.dir).resolve()
        plan = FleetPlan.local(fleet, folder, serving.keep_alive_s)
        return cls(spec.root, plan, workers=fleet.workers or serving.workers, **options)

    @property
    def dir(self) -> Path:
        return self.plan.dir

    @property
    def config_path(self) -> Path:
        return self.dir / config_name(self.plan.balancer)

    @property
    def url(self) -> str:
        """The balancer's URL: what clients call."""
        host = self.plan.spec.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.plan.spec.port}"

    def member(self, name: str) -> Member:
        for member in self.plan.members:
            if member.name == name:
                return member
        raise InvalidInputError(f"no server {name!r} in this fleet", field="server")

    def server_url(self, member: Member | str) -> str:
        m = self.member(member) if isinstance(member, str) else member
        return f"http://{m.upstream}"

    # -- the balancer's config -----------------------------------------------------------

    def write_config(self) -> Path:
        """Write the balancer's config and have the balancer check it (ConfigError if not)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.config_path
        path.write_text(render_config(self.plan))
        check(self.plan, path)
        return path

    # -- processes -----------------------------------------------------------------------

    def _environment(self, member: Member | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        if member is not None:
            # A server drains for the balancer in front of it, as this plan says (the
            # command's options may differ from conveyor.yaml's fleet: section).
            s = self.plan.spec
            for name in ("balancer", "check_interval_s", "fall", "drain_s", "quiet_s"):
                env[f"CONVEYOR_FLEET__{name.upper()}"] = str(getattr(s, name))
            env.update(member.env)
        return env

    def _log(self, name: str) -> Any:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return (logs / f"{name}.log").open("ab")

    def start_server(self, member: Member | str) -> int:
        """Start one server (not waiting for it); its pid."""
        m = self.member(member) if isinstance(member, str) else member
        argv = [
            *m.prefix,
            sys.executable,
            "-m",
            "conveyor.fleet.node",
            "--project",
            str(self.root),
            "--host",
            m.host,
            "--port",
            str(m.port),
            "--workers",
            str(self.workers),
        ]
        with self._log(m.name) as log:
            process = subprocess.Popen(
                argv,
                env=self._environment(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[m.name] = process
        self.pids[m.name] = process.pid
        return process.pid

    def wait_ready(self, member: Member | str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until the server answers readiness (ready, or nothing deployed yet): its body.
        BackendUnavailableError naming its URL when it exits or does not answer in time."""
        m = self.member(member) if isinstance(member, str) else member
        url = self.server_url(m) + READY_PATH
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = _get(url)
            if status == 200 or body.get("status") == "empty":
                return body
            if not _alive(self.pids.get(m.name)):
                break
            time.sleep(0.05)
        raise BackendUnavailableError(
            f"fleet server {m.name} at {self.server_url(m)} did not become ready "
            f"(see {self.dir / 'logs' / (m.name + '.log')})",
            url=self.server_url(m),
        )

    def start_balancer(self, timeout_s: float = 15.0) -> int:
        path = self.config_path if self.config_path.exists() else self.write_config()
        with self._log(self.plan.balancer) as log:
            self._balancer = subprocess.Popen(
                command(self.plan, path),
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.balancer_pid = self._balancer.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _get(self.url + READY_PATH)[0]:
                return self.balancer_pid
            if self._balancer.poll() is not None:
                break
            time.sleep(0.05)
        raise BackendUnavailableError(
            f"{self.plan.balancer} did not start listening at {self.url} "
            f"(see {self.dir / 'logs' / (self.plan.balancer + '.log')})",
            url=self.url,
        )

    def up(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Write the config, start every server, wait until each is ready, start the
        balancer, save the state. Anything started is stopped again if one part fails."""
        self.write_config()
        try:
            for member in self.plan.members:
                self.start_server(member)
            for member in self.plan.members:
                self.wait_ready(member, timeout_s)
            self.start_balancer()
        except BaseException:
            self.down(drain=False)
            raise
        self.save()
        return self.status()

    def signal(self, member: Member | str, sig: int) -> None:
        """Send ``sig`` to a server (SIGTERM: drain and stop; SIGKILL: gone at once)."""
        m = self.member(member) if isinstance(member, str) else member
        pid = self.pids.get(m.name)
        if pid is None:
            raise InvalidInputError(f"server {m.name} is not running", field="server")
        if sig == signal.SIGKILL:
            # The server's workers too: a whole host gone at once.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def wait_exit(self, member: Member | str, timeout_s: float = 60.0) -> bool:
        """Until the server's process is gone (True), or ``timeout_s`` passed (False)."""
        m = self.member(member) if isinstance(member, str) else member
        process = self.processes.get(m.name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None:
                if process.poll() is not None:
                    return True
            elif not _alive(self.pids.get(m.name)):
                return True
            time.sleep(0.05)
        return False

    def stop_server(self, member: Member | str, *, drain: bool = True) -> None:
        """Drain and stop a server (SIGTERM), or kill it and its workers (``drain=False``)."""
        m = self.member(member) if isinstance(member, str) else member
        if not _alive(self.pids.get(m.name)):
            self.pids.pop(m.name, None)
            return
        self.signal(m, signal.SIGTERM if drain else signal.SIGKILL)
        if not self.wait_exit(m, self.plan.spec.drain_s + 30 if drain else 10):
            self.signal(m, signal.SIGKILL)
            self.wait_exit(m, 10)
        self.pids.pop(m.name, None)

    def down(self, *, drain: bool = True) -> None:
        """Every server drained (in parallel) and stopped, then the balancer; state removed."""
        running = [m for m in self.plan.members if _alive(self.pids.get(m.name))]
        for m in running:
            self.signal(m, signal.SIGTERM if drain else signal.SIGKILL)
        for m in running:
            if not self.wait_exit(m, self.plan.spec.drain_s + 30 if drain else 10):
                self.signal(m, signal.SIGKILL)
                self.wait_exit(m, 10)
        self.pids.clear()
        self._stop_balancer()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / STATE).unlink()

    def _stop_balancer(self) -> None:
        pid = self.balancer_pid
        if not _alive(pid):
            self.balancer_pid = None
            return
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._balancer is not None and self._balancer.poll() is not None:
                break
            if self._balancer is None and not _alive(pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.balancer_pid = None

    # -- state ---------------------------------------------------------------------------

    def save(self) -> Path:
        state = {
            "root": str(self.root),
            "workers": self.workers,
            "spec": self.plan.spec.model_dump(),
            "keep_alive_s": self.plan.server_keep_alive_s,
            "balancer_pid": self.balancer_pid,
            "members": [
                {
                    "name": m.name,
                    "host": m.host,
                    "port": m.port,
                    "address": m.address,
                    "prefix": list(m.prefix),
                    "pid": self.pids.get(m.name),
                }
                for m in self.plan.members
            ],
        }
        path = self.dir / STATE
        path.write_text(json.dumps(state, indent=2))
        return path

    @classmethod
    def load(cls, root: Path | str) -> Fleet:
        """The fleet ``up`` started for the project at ``root`` (its state file); ConfigError
        when none is running."""
        probe = cls.plan_for(root)
        path = probe.dir / STATE
        if not path.exists():
            raise ConfigError(
                f"no fleet is running for this project (no {path}): `conveyor fleet up`",
                field="fleet",
            )
        state = json.loads(path.read_text())
        spec = FleetSpec.model_validate(state["spec"])
        members = tuple(
            Member(m["name"], m["host"], m["port"], m["address"], tuple(m["prefix"]))
            for m in state["members"]
        )
        fleet = cls(
            Path(state["root"]),
            FleetPlan(spec, members, probe.dir, state["keep_alive_s"]),
            workers=state["workers"],
        )
        fleet.pids = {m["name"]: m["pid"] for m in state["members"] if m["pid"]}
        fleet.balancer_pid = state["balancer_pid"]
        return fleet

    def status(self) -> dict[str, Any]:
        """Each server's process and readiness, and the balancer's."""
        servers = []
        for m in self.plan.members:
            pid = self.pids.get(m.name)
            code, body = _get(self.server_url(m) + READY_PATH) if _alive(pid) else (0, {})
            servers.append(
                {
                    "name": m.name,
                    "url": self.server_url(m),
                    "pid": pid,
                    "running": _alive(pid),
                    "ready": code == 200,
                    "status": body.get("status", "down" if not code else None),
                }
            )
        code, _ = _get(self.url + READY_PATH) if _alive(self.balancer_pid) else (0, {})
        return {
            "balancer": {
                "kind": self.plan.balancer,
                "url": self.url,
                "pid": self.balancer_pid,
                "running": _alive(self.balancer_pid),
                "ready": code == 200,
                "config": str(self.config_path),
            },
            "servers": servers,
        }


def _override(fleet: FleetSpec, overrides: dict[str, Any]) -> FleetSpec:
    """``fleet`` with the given fields replaced, validated as the spec's would be."""
    from pydantic import ValidationError

    data = fleet.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInputError(
            f"fleet.{'.'.join(map(str, first['loc']))}: {first['msg']}",
            field=str(first["loc"][0]),
        ) from None
