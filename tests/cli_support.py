"""``conveyor ARGS`` in the test's own process, answered as the installed command answers.

A process costs about two seconds of imports before the command starts; a test that runs
dozens of commands to read their exit codes and messages proves as much in process. The
command is the one ``conveyor.cli.main()`` runs (only the invoked command mounted), the
environment has no ``CONVEYOR_*`` variable but those given (as the tests' processes had),
stdout and stderr are apart, and an exception that is not a clean exit is raised, not
turned into an exit code. What needs a process (the script itself, signals, a server) keeps
one in the tests of that behaviour, and so does ``--debug`` after the command (main()
takes it out of the arguments).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner

from conveyor.cli import _env_flag, _only_invoked, app
from conveyor.cli.common import DEBUG_ENV
from conveyor.config import ENVIRONMENT_ENV


def conveyor(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``conveyor ARGS``: the exit code, stdout and stderr, as ``subprocess.run`` gives."""
    # main() takes `--env NAME` out wherever it is and sets CONVEYOR_ENV: so does this.
    argv, chosen = _env_flag(list(args))
    # Named, CONVEYOR_DEBUG and CONVEYOR_ENV are put back afterwards even when the root's
    # --debug or --env sets them.
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CONVEYOR_")}
    clean[DEBUG_ENV] = None
    clean[ENVIRONMENT_ENV] = chosen
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(
            _only_invoked(app, argv),
            argv,
            env={**clean, **(env or {})},
            input=input,
            catch_exceptions=False,
            prog_name="conveyor",
        )
    return subprocess.CompletedProcess(
        ["conveyor", *argv], result.exit_code, result.stdout, result.stderr
    )
