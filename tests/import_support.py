"""What a piece of code imports, measured in a fresh interpreter.

The tests that keep heavy libraries (pyarrow, duckdb, torch, the ORM...) out of an
import path run their code in a new ``python -c`` and compare the modules loaded
after it. Module names are exact: importing ``a.b`` always loads ``a`` too, so a
check for a package's top-level name catches any of its submodules.
"""

from __future__ import annotations

import subprocess
import sys

_MARK = "\nMODULES-LOADED "


def modules_after(code: str, *, timeout: float = 120) -> set[str]:
    """Every module in ``sys.modules`` after ``code`` ran in a fresh interpreter.

    ``code`` may assert what it likes: a failure is reported with its traceback.
    """
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint({_MARK!r} + ' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, found, tail = done.stdout.rpartition(_MARK)
    assert found, done.stdout[-3000:]
    return set(tail.split())


def loaded_of(names: set[str] | tuple[str, ...], code: str) -> list[str]:
    """Which of ``names`` ``code`` loads, sorted (an empty list when none)."""
    return sorted(set(names) & modules_after(code))
