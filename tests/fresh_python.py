"""Code run in a fresh Python interpreter, for what one process cannot show about itself.

``run_python`` runs a script as ``python -c`` and returns what it printed (a non-zero exit
fails the test with the script's traceback). ``modules_after`` and ``loaded_of`` use it for
the tests that keep heavy libraries (pyarrow, duckdb, torch, the ORM...) out of an import
path. Module names are exact: importing ``a.b`` always loads ``a`` too, so a check for a
package's top-level name catches any of its submodules.
"""

from __future__ import annotations

import subprocess
import sys

_MARK = "\nMODULES-LOADED "


def run_python(
    code: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> str:
    """The standard output of ``python -c code args...``; asserts it exited 0."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def modules_after(code: str, *, timeout: float = 120) -> set[str]:
    """Every module in ``sys.modules`` after ``code`` ran in a fresh interpreter.

    ``code`` may assert what it likes: a failure is reported with its traceback.
    """
    out = run_python(
        f"{code}\nimport sys\nprint({_MARK!r} + ' '.join(sys.modules))", timeout=timeout
    )
    _, found, tail = out.rpartition(_MARK)
    assert found, out[-3000:]
    return set(tail.split())


def loaded_of(names: set[str] | tuple[str, ...], code: str) -> list[str]:
    """Which of ``names`` ``code`` loads, sorted (an empty list when none)."""
    return sorted(set(names) & modules_after(code))
