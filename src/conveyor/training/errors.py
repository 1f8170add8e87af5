"""What training raises when the user's own code fails, as a branch of Conveyor's errors.

::

    ConveyorError
    └── TrainingFailedError      code "training_failed"

A ``fit`` (or ``prepare``, or an estimator's ``partial_fit``) that raises, or a
``fit`` that returns None, ends the training with :class:`TrainingFailedError`:
one line naming the run, the entry point and the user's exception, with the
user's own frames (``frames``: ``"model.py:7 in fit: helper(X)"``, the innermost
last) and the original exception as its ``__cause__``. The CLI prints the line
and those frames; ``--debug`` (or ``CONVEYOR_DEBUG=1``) prints the whole trace.
"""

from __future__ import annotations

import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from conveyor.errors import ConveyorError

__all__ = ["TrainingFailedError", "call_user", "failed", "in_run", "user_frames"]

T = TypeVar("T")

#: How many of the user's frames an error keeps (the innermost ones).
MAX_FRAMES = 5


class TrainingFailedError(ConveyorError):
    """The user's training code failed: names the run (when one started), the entry
    point (``field``, ``entry_point``) and the exception; ``frames`` are the user's."""

    code = "training_failed"


def _not_user_roots() -> tuple[str, ...]:
    import conveyor

    roots = {str(Path(conveyor.__file__).resolve().parent)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(str(Path(path).resolve()))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.add(str(Path(prefix).resolve() / "lib"))
    return tuple(sorted(roots))


def user_frames(exc: BaseException, limit: int = MAX_FRAMES) -> list[str]:
    """The frames of ``exc``'s traceback in the user's own files (not Conveyor's, not the
    standard library's, not an installed package's), innermost last, at most ``limit``."""
    roots = _not_user_roots()
    kept = []
    for frame in traceback.extract_tb(exc.__traceback__):
        filename = frame.filename
        if filename.startswith("<"):
            continue
        try:
            resolved = str(Path(filename).resolve())
        except OSError:
            resolved = filename
        if resolved.startswith(roots) or "site-packages" in resolved:
            continue
        try:
            shown = str(Path(resolved).relative_to(Path.cwd()))
        except ValueError:
            shown = resolved
        line = (frame.line or "").strip()
        kept.append(f"{shown}:{frame.lineno} in {frame.name}" + (f": {line}" if line else ""))
    return kept[-limit:]


def call_user(field: str, ref: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``, the user's ``ref`` (set as ``field`` in the spec); an
    exception it raises becomes a :class:`TrainingFailedError` naming both (the original
    as its cause)."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        raise failed(field, ref, exc) from exc


def failed(field: str, ref: str, exc: BaseException) -> TrainingFailedError:
    """The error for the user's ``ref`` (``field``) having raised ``exc``."""
    text = str(exc).strip().splitlines()
    shown = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return TrainingFailedError(
        f"{field} ({ref}) raised {shown}",
        field=field,
        entry_point=ref,
        exception=type(exc).__name__,
        frames=user_frames(exc),
    )


def in_run(exc: TrainingFailedError, run_id: str, model: str) -> TrainingFailedError:
    """``exc`` again, its message starting with the run it ended."""
    again = TrainingFailedError(
        f"training run {run_id} of {model!r} failed: {exc.message}",
        **{**exc.context, "run": run_id, "model": model},
    )
    again.__cause__ = exc.__cause__
    again.__traceback__ = exc.__traceback__
    return again
