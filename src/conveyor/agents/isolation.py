"""How a local tool server is confined: its own process with resource limits, a working
directory of its own, only the environment granted to it, and (level ``sandbox``) no
network and a read-only view of the filesystem.

::

    mcp:
      servers:
        files:
          command: [python, -m, my_files_server]
          secrets: [GITHUB_TOKEN]               # the only variables of ours it sees
          isolation:
            level: sandbox                      # none | process | sandbox
            cpu_s: 60                           # CPU seconds (SIGXCPU, then SIGKILL)
            memory_mb: 1024                     # address space (allocations past it fail)
            open_files: 256
            processes: 64                       # a pids cgroup where one can be made
            network: false                      # sandbox: a network namespace of its own
            writable: [/data/out]               # sandbox: more than its working directory

What each level does (all through ``python -m conveyor.agents.sandbox``, a small wrapper
that sets the limits and then execs the server, so nothing stays between them):

- ``none``: the server is started as configured, in its working directory, with its
  environment (still only what is granted);
- ``process`` (the default): the rlimits above (``RLIMIT_CPU``, ``RLIMIT_AS``,
  ``RLIMIT_NOFILE``, ``RLIMIT_NPROC``), its processes in a ``pids`` cgroup (and a
  ``memory`` one) when the machine lets one be made (as root the process limit holds only
  through the cgroup: the kernel does not count root's processes), the parent-death
  signal (the server dies with the gateway);
- ``sandbox``: that, run under bubblewrap (Debian's ``bubblewrap``): a read-only bind of
  ``/``, a private ``/tmp``, ``/dev`` and ``/proc`` of its own, its working directory and
  ``writable`` paths writable, a new network namespace (no network at all, loopback
  included) unless ``network: true``, and ``--die-with-parent``.

What was actually applied (a cgroup that could not be made, bubblewrap missing) is in
:attr:`Launch.applied`, in ``conveyor mcp servers`` and in ``conveyor doctor``: a level is
never silently weaker than asked without it being said there.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IsolationSpec", "Launch", "doctor_check", "doctor_rows", "machine", "wrap"]

#: Variables of the gateway's environment every server gets (besides its granted ones).
BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class IsolationSpec(BaseModel):
    """``mcp.servers.X.isolation``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["none", "process", "sandbox"] = Field(
        "process",
        description="none: as configured; process: resource limits, a working directory, a "
        "minimal environment; sandbox: that under bubblewrap (no network, read-only root).",
    )
    cpu_s: int | None = Field(60, ge=1, description="CPU seconds it may use (then killed).")
    memory_mb: int | None = Field(
        1024, ge=64, description="Address space in MiB (allocations past it fail)."
    )
    open_files: int | None = Field(256, ge=16, description="Open files at most.")
    processes: int | None = Field(64, ge=1, description="Processes and threads at most.")
    network: bool = Field(False, description="sandbox: keep the network (else none at all).")
    env: list[str] = Field(
        default_factory=list,
        description="More variables of the gateway's environment passed through (besides "
        "PATH, LANG, LC_ALL, TZ and the server's secrets).",
    )
    readable: list[str] = Field(
        default_factory=list, description="sandbox: paths it reads (the root is read-only)."
    )
    writable: list[str] = Field(
        default_factory=list, description="sandbox: paths it may write, besides its workdir."
    )
    workdir: str | None = Field(
        None, description="Its working directory (default .conveyor/mcp/SERVER in the project)."
    )


@dataclass
class Launch:
    """How to start a server: the command line, environment and directory, and what
    isolation that applies."""

    command: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    applied: dict[str, Any] = field(default_factory=dict)


@functools.cache
def machine() -> dict[str, Any]:
    """What this machine allows (probed once): bubblewrap and its network namespace, the
    pids and memory cgroups, and whether this process is root."""
    found: dict[str, Any] = {"root": os.geteuid() == 0, "rlimits": True}
    bwrap = shutil.which("bwrap")
    found["bwrap"] = None
    if bwrap is not None:
        probe = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-net", "--die-with-parent", "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        found["bwrap"] = bwrap if probe.returncode == 0 else None
        if probe.returncode != 0:
            found["bwrap_error"] = probe.stderr.strip()[:200]
    for controller in ("pids", "memory"):
        found[f"cgroup_{controller}"] = _cgroup_writable(controller)
    return found


def _cgroup_writable(controller: str) -> bool:
    base = CGROUP_ROOT / controller
    if not base.is_dir():
        return False
    probe = base / f"conveyor-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


def wrap(
    spec: IsolationSpec,
    server: str,
    command: str,
    args: list[str],
    env: dict[str, str],
    root: Path,
    granted: Mapping[str, str] | None = None,
) -> Launch:
    """The command line that starts ``command args`` as ``spec`` says (see the module)."""
    cwd = Path(spec.workdir) if spec.workdir else root / ".conveyor" / "mcp" / server
    cwd = cwd if cwd.is_absolute() else (root / cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    base = {k: os.environ[k] for k in (*BASE_ENV, *spec.env) if k in os.environ}
    environment = {**base, "HOME": str(cwd), **env, **dict(granted or {})}
    applied: dict[str, Any] = {"level": spec.level, "workdir": str(cwd)}
    if spec.level == "none":
        applied["limits"] = None
        return Launch(command, list(args), environment, cwd, applied)
    facts = machine()
    wrapper = [sys.executable, "-m", "conveyor.agents.sandbox"]
    for flag, value in (
        ("--cpu", spec.cpu_s),
        ("--memory-mb", spec.memory_mb),
        ("--open-files", spec.open_files),
        ("--processes", spec.processes),
    ):
        if value is not None:
            wrapper += [flag, str(value)]
    applied.update(
        cpu_s=spec.cpu_s,
        memory_mb=spec.memory_mb,
        open_files=spec.open_files,
    )
    cgroups = [c for c in ("pids", "memory") if facts[f"cgroup_{c}"]]
    if cgroups:
        wrapper += ["--cgroup", f"conveyor-mcp-{server}-{os.getpid()}"]
    processes_by = "cgroup" if "pids" in cgroups else ("rlimit" if not facts["root"] else None)
    applied["processes"] = (
        {"limit": spec.processes, "by": processes_by}
        if processes_by
        else {
            "limit": None,
            "why": "root's processes are not counted by RLIMIT_NPROC, and no "
            "pids cgroup could be made here",
        }
    )
    applied["cgroups"] = cgroups
    target = [command, *args]
    if spec.level == "sandbox":
        bwrap = facts["bwrap"]
        if bwrap is None:
            applied["sandbox"] = {
                "applied": False,
                "why": facts.get("bwrap_error") or "bubblewrap (bwrap) is not installed",
            }
        else:
            target = [*_bwrap(bwrap, spec, cwd), *target]
            applied["sandbox"] = {
                "applied": True,
                "network": "host" if spec.network else "none",
                "filesystem": "read-only root; writable: "
                + ", ".join([str(cwd), *spec.writable, "/tmp (private)"]),
            }
    return Launch(wrapper[0], [*wrapper[1:], "--", *target], environment, cwd, applied)


def _bwrap(bwrap: str, spec: IsolationSpec, cwd: Path) -> list[str]:
    argv = [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--bind", str(cwd), str(cwd),
        "--chdir", str(cwd),
        "--die-with-parent",
    ]  # fmt: skip
    for path in spec.readable:
        argv += ["--ro-bind", path, path]
    for path in spec.writable:
        argv += ["--bind", path, path]
    if not spec.network:
        argv.append("--unshare-net")
    argv.append("--")
    return argv


def doctor_check(spec: Any) -> tuple[str, list[dict[str, Any]]]:
    """``conveyor doctor``'s table of the MCP servers' isolation (Capability.doctor)."""
    from conveyor.agents.settings import mcp_of

    return "mcp_isolation", doctor_rows(mcp_of(spec).servers)


def doctor_rows(specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """For ``conveyor doctor``: per local server, the isolation asked for and what this
    machine will apply."""
    facts = machine()
    rows = []
    for name, server in specs.items():
        if getattr(server, "command", None) is None:
            continue
        spec: IsolationSpec = server.isolation
        problems = []
        if spec.level == "sandbox" and facts["bwrap"] is None:
            problems.append("no bubblewrap: " + (facts.get("bwrap_error") or "not installed"))
        if spec.level != "none" and spec.processes and facts["root"] and not facts["cgroup_pids"]:
            problems.append("processes not limited (root, no pids cgroup)")
        rows.append(
            {
                "server": name,
                "level": spec.level,
                "ok": not problems,
                "detail": "; ".join(problems)
                or (
                    f"limits cpu {spec.cpu_s}s, memory {spec.memory_mb} MiB, files "
                    f"{spec.open_files}, processes {spec.processes}"
                    + (
                        "; bubblewrap, " + ("network" if spec.network else "no network")
                        if spec.level == "sandbox"
                        else ""
                    )
                ),
            }
        )
    return rows
