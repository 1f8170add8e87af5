"""``python -m conveyor.agents.sandbox [limits] -- COMMAND ARGS``: set a tool server's
resource limits, then become it (exec). The standard library only: it starts in a few
tens of milliseconds and leaves nothing between the gateway and the server.

    --cpu S            RLIMIT_CPU: S seconds (SIGXCPU), killed 5 s later (SIGKILL)
    --memory-mb M      RLIMIT_AS: M MiB of address space
    --open-files N     RLIMIT_NOFILE
    --processes N      RLIMIT_NPROC (and pids.max of the cgroup)
    --cgroup NAME      join /sys/fs/cgroup/{pids,memory}/NAME (made if need be), with
                       pids.max and memory.limit_in_bytes set

The process also asks for SIGKILL when its parent (the gateway) dies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _cgroup(name: str, processes: int | None, memory_mb: int | None) -> None:
    for controller, limits in (
        ("pids", {"pids.max": processes}),
        ("memory", {"memory.limit_in_bytes": memory_mb * 1024 * 1024 if memory_mb else None}),
    ):
        group = Path("/sys/fs/cgroup") / controller / name
        try:
            group.mkdir(exist_ok=True)
            for key, value in limits.items():
                if value is not None:
                    (group / key).write_text(str(value))
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:  # the gateway reported what applies; say what did not here
            print(f"conveyor sandbox: cgroup {controller} not joined: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="conveyor.agents.sandbox", description=__doc__)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--open-files", type=int)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--cgroup")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    # not Linux (no prctl): the gateway stops it at shut-down all the same
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if args.cgroup:
        _cgroup(args.cgroup, args.processes, args.memory_mb)
    if args.cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu, args.cpu + 5))
    if args.memory_mb:
        size = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if args.open_files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.open_files, args.open_files))
    if args.processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (args.processes, args.processes))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
