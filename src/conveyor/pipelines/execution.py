"""One step attempt: run in a worker thread, watched by the runner for its timeout and heartbeat.

Why a thread, and what a timeout can and cannot do
    The step function runs in a daemon thread; the runner's thread waits
    for it in slices of ``heartbeat_interval``, stamping the runs' heartbeat
    between slices, so a step that computes for an hour still shows it is
    alive. When the timeout passes, the attempt is failed with
    :class:`StepTimeoutError` and the runner moves on (a retry, or the
    failure of the pipeline). Python cannot kill a thread: the timed-out
    function keeps running in the background until it returns, and its
    result is thrown away. Its context is cancelled, so anything it tries to
    write through ``ctx`` (events, lineage, progress) raises
    :class:`StepCancelledError`, and a step that checks ``ctx.cancelled``
    stops early. Killing for real needs a process per step (and steps whose
    inputs and outputs pickle); the thread keeps in-memory outputs, open
    connections and start-up cost as they are, which is what a local runner
    is for. A step that may hang in C code and must be killed should start
    its own subprocess and kill it when ``ctx.cancelled``.
"""

from __future__ import annotations

import contextvars
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from conveyor.errors import ConflictError
from conveyor.pipelines.errors import StepTimeoutError

__all__ = ["Outcome", "RunLostError", "describe", "run_attempt", "trace"]


class RunLostError(Exception):
    """Internal: the heartbeat found the run finished by someone else (recovery)."""

    def __init__(self, cause: ConflictError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(slots=True)
class Outcome:
    """How an attempt ended: outputs, or the error it raised or timed out with."""

    outputs: dict[str, Any] | None = None
    error: BaseException | None = None
    timed_out: bool = False


def run_attempt(
    target: Callable[[], dict[str, Any]],
    *,
    name: str,
    timeout: float | None,
    interval: float,
    beat: Callable[[], None],
    cancel: threading.Event,
) -> Outcome:
    """Run ``target`` in a daemon thread; call ``beat`` every ``interval`` seconds meanwhile.

    Raises RunLostError (after cancelling) if ``beat`` does; an interrupt of
    the calling thread (Ctrl-C) cancels the attempt and propagates.
    """
    done = threading.Event()
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def work() -> None:
        try:
            box["outputs"] = context.run(target)
        except BaseException as exc:  # the step's failure is data for the runner
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name=f"conveyor-step-{name}", daemon=True)
    start = monotonic()
    thread.start()
    try:
        while not done.is_set():
            wait = interval
            if timeout is not None:
                left = start + timeout - monotonic()
                if left <= 0:
                    cancel.set()
                    return Outcome(
                        error=StepTimeoutError(
                            f"step {name!r} timed out after {timeout:g} s and was abandoned "
                            "(its thread cannot be killed and may still be running; its "
                            "context no longer writes)",
                            step=name,
                            timeout=timeout,
                        ),
                        timed_out=True,
                    )
                wait = min(wait, left)
            if done.wait(wait):
                break
            beat()
    except BaseException:
        cancel.set()
        raise
    if "error" in box:
        return Outcome(error=box["error"])
    return Outcome(outputs=box["outputs"])


def describe(error: BaseException) -> str:
    """``Type: message``, the first line of a failed attempt's error."""
    message = str(error).strip()
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def trace(error: BaseException) -> str:
    """The traceback to keep with a failed attempt (its last 8,000 characters)."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    text = "".join(lines).rstrip()
    if len(text) > 8000:
        text = "...\n" + text[-8000:]
    return "\n\n" + text if error.__traceback__ is not None else ""
