"""Pipeline definitions: steps as plain functions, wired by their declared inputs and outputs.

::

    daily = Pipeline("daily-sales", schedule="0 6 * * *", triggers=[OnNewVersion("sales")])

    @daily.step(outputs=("raw",), retries=3, timeout=600)
    def extract(ctx):
        return fetch(ctx.params["day"])

    @daily.step(inputs=("raw",), outputs=("clean", "rejected"))
    def validate(ctx, raw):
        return {"clean": ..., "rejected": ...}

A step's inputs are outputs of other steps; that is the whole graph. What
is checked, and when:

- when a step is declared: its names (Python identifiers), that the
  function takes the context first and a parameter for every input (and
  no other required one), options (retries, backoff, timeout, retry_on),
  that no other step already produces one of its outputs, and that it
  closes no cycle (the error shows the cycle);
- when the definition is complete (:meth:`Pipeline.validate`, which the
  runner, the scheduler and the CLI call before writing anything): that
  every input has a producer;
- at run time: that a step returned exactly its declared outputs
  (:class:`~conveyor.pipelines.errors.StepOutputError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, overload

from conveyor.errors import MissingDependencyError
from conveyor.pipelines.errors import PipelineDefinitionError
from conveyor.pipelines.step import (
    Step,
    check_count,
    check_exceptions,
    check_names,
    check_seconds,
    check_signature,
)
from conveyor.pipelines.triggers import Trigger

__all__ = ["CatchUp", "Pipeline", "Step", "check_cron"]

CatchUp = Literal["latest", "none"]
F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_MAX_NAME = 200


class Pipeline:
    """A named graph of steps, optionally run on a cron ``schedule`` and by ``triggers``.

    ``schedule`` is a five-field cron expression evaluated in UTC.
    ``catch_up`` says what a scheduler does with slots it missed while it
    was down: ``"latest"`` runs the most recent one once, ``"none"`` skips to
    the next. ``retry_crashed`` asks :meth:`LocalRunner.recover` to re-run a
    run whose process died (at most ``max_crash_reruns`` times in a row)
    instead of only failing it. ``fail_fast`` stops every remaining step
    after a failure; by default only the failed step's dependents are
    skipped and independent steps still run.
    """

    def __init__(
        self,
        name: str,
        *,
        schedule: str | None = None,
        triggers: Iterable[Trigger] = (),
        catch_up: CatchUp = "latest",
        retry_crashed: bool = False,
        max_crash_reruns: int = 3,
        fail_fast: bool = False,
        description: str | None = None,
    ) -> None:
        self.name = _pipeline_name(name)
        self.schedule = None if schedule is None else check_cron(schedule, pipeline=self.name)
        self.triggers = _triggers(triggers, self.name)
        if catch_up not in ("latest", "none"):
            raise self._error(
                f"catch_up must be 'latest' or 'none', got {catch_up!r}", field="catch_up"
            )
        self.catch_up: CatchUp = catch_up
        self.retry_crashed = _flag(retry_crashed, "retry_crashed", self.name)
        self.max_crash_reruns = check_count(
            max_crash_reruns, "max_crash_reruns", lambda m, f: self._error(m, field=f)
        )
        self.fail_fast = _flag(fail_fast, "fail_fast", self.name)
        self.description = description
        self._steps: dict[str, Step] = {}
        self._producers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} steps={list(self._steps)}>"

    @property
    def steps(self) -> tuple[Step, ...]:
        """Steps in the order they were declared."""
        return tuple(self._steps.values())

    def __getitem__(self, name: str) -> Step:
        try:
            return self._steps[name]
        except KeyError:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} has no step {name!r}; steps: "
                f"{', '.join(self._steps) or '(none)'}",
                pipeline=self.name,
                step=name,
            ) from None

    # -- declaring steps ------------------------------------------------------

    @overload
    def step(self, func: F, /) -> F: ...

    @overload
    def step(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        inputs: Sequence[str] | str = (),
        outputs: Sequence[str] | str = (),
        retries: int = 0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> Callable[[F], F]: ...

    def step(
        self,
        func: F | None = None,
        /,
        *,
        name: str | None = None,
        inputs: Sequence[str] | str = (),
        outputs: Sequence[str] | str = (),
        retries: int = 0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> F | Callable[[F], F]:
        """Declare ``func`` as a step (as ``@pipeline.step`` or ``@pipeline.step(...)``).

        ``func(ctx, **inputs)`` returns its one output, or a dict keyed by its
        outputs when it has several. A failed attempt whose error is one of
        ``retry_on`` is tried again up to ``retries`` times, after a random
        wait of up to ``min(max_backoff, backoff * 2**retry)`` seconds.
        ``timeout`` (seconds) fails an attempt that runs longer. The function
        is returned unchanged, so it can still be called directly in a test.
        """

        def declare(f: F) -> F:
            self.add_step(
                f,
                name=name,
                inputs=inputs,
                outputs=outputs,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                retry_on=retry_on,
            )
            return f

        return declare if func is None else declare(func)

    def add_step(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        inputs: Sequence[str] | str = (),
        outputs: Sequence[str] | str = (),
        retries: int = 0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> Step:
        """What :meth:`step` does, for code that builds pipelines without decorators."""
        if not callable(func):
            raise self._error(f"a step is a function, got {type(func).__name__}", field="func")
        step_name = name if name is not None else getattr(func, "__name__", None)
        if not isinstance(step_name, str) or not step_name.isidentifier():
            raise self._error(
                f"step name {step_name!r} must be a Python identifier; pass name=...",
                field="name",
            )
        if step_name in self._steps:
            raise self._error(f"step {step_name!r} is declared twice", step=step_name)

        def error(message: str, field: str) -> PipelineDefinitionError:
            return self._error(f"step {step_name!r}: {message}", field=field, step=step_name)

        ins = check_names(inputs, "inputs", error)
        outs = check_names(outputs, "outputs", error)
        both = sorted(set(ins) & set(outs))
        if both:
            raise error(f"{both[0]!r} is both an input and an output of the step", "inputs")
        for out in outs:
            if out in self._producers:
                raise error(
                    f"output {out!r} is already produced by step {self._producers[out]!r}; "
                    "each output has one producer",
                    "outputs",
                )
        check_signature(func, step_name, ins, error)
        step = Step(
            pipeline=self.name,
            name=step_name,
            func=func,
            inputs=ins,
            outputs=outs,
            retries=check_count(retries, "retries", lambda m, field: error(m, field)),
            backoff=check_seconds(backoff, "backoff", error, zero_ok=True),
            max_backoff=check_seconds(max_backoff, "max_backoff", error, zero_ok=True),
            timeout=None if timeout is None else check_seconds(timeout, "timeout", error),
            retry_on=check_exceptions(retry_on, error),
        )
        cycle = self._cycle_with(step)
        if cycle:
            raise error(f"it would close a cycle: {' -> '.join(cycle)}", "inputs")
        self._steps[step_name] = step
        for out in outs:
            self._producers[out] = step_name
        return step

    # -- the graph --------------------------------------------------------------

    def validate(self) -> None:
        """Check the complete definition: steps exist and every input has a producer."""
        if not self._steps:
            raise self._error(
                f"pipeline {self.name!r} has no steps; declare them with @pipeline.step",
                field="steps",
            )
        for step in self._steps.values():
            for name in step.inputs:
                if name not in self._producers:
                    raise self._error(
                        f"step {step.name!r} needs input {name!r} but no step of pipeline "
                        f"{self.name!r} produces it (outputs: "
                        f"{', '.join(sorted(self._producers)) or 'none'})",
                        field="inputs",
                        step=step.name,
                        input=name,
                    )

    def order(self) -> tuple[Step, ...]:
        """Steps in a topological order; among steps ready together, declaration order."""
        self.validate()
        done: set[str] = set()
        ordered: list[Step] = []
        pending = list(self._steps.values())
        while pending:
            ready = [s for s in pending if all(self._producers[i] in done for i in s.inputs)]
            # validate() and the cycle check at declaration make "ready" non-empty.
            step = ready[0]
            ordered.append(step)
            done.add(step.name)
            pending.remove(step)
        return tuple(ordered)

    def upstream(self, name: str) -> tuple[str, ...]:
        """Names of the steps whose outputs ``name`` reads directly."""
        step = self[name]
        return tuple(dict.fromkeys(self._producers[i] for i in step.inputs if i in self._producers))

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or through others."""
        self[name]
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for step in self._steps.values():
                if step.name not in found and current in self.upstream(step.name):
                    found.add(step.name)
                    frontier.append(step.name)
        return found

    def _cycle_with(self, new: Step) -> list[str]:
        """A cycle through ``new`` if adding it closes one, as step names; else empty."""
        producers = dict(self._producers) | {out: new.name for out in new.outputs}
        steps = {**self._steps, new.name: new}

        def feeds(name: str) -> list[str]:
            return [producers[i] for i in steps[name].inputs if i in producers]

        # Every new cycle passes through the new step: search back from it to itself.
        path = [new.name]
        seen: set[str] = set()

        def search(current: str) -> bool:
            for upstream in feeds(current):
                if upstream == new.name:
                    return True
                if upstream not in seen:
                    seen.add(upstream)
                    path.append(upstream)
                    if search(upstream):
                        return True
                    path.pop()
            return False

        if not search(new.name):
            return []
        # path runs against the data flow (consumer first); show it producer -> consumer.
        return [new.name, *reversed(path[1:]), new.name]

    def _error(self, message: str, **context: Any) -> PipelineDefinitionError:
        if not message.startswith(("pipeline", "step")):
            message = f"pipeline {self.name!r}: {message}"
        elif message.startswith("step"):
            message = f"pipeline {self.name!r}, {message}"
        return PipelineDefinitionError(message, pipeline=self.name, **context)


def check_cron(expression: str, *, pipeline: str | None = None) -> str:
    """``expression`` if it is a valid five-field cron expression, else PipelineDefinitionError."""
    where = f"pipeline {pipeline!r}: " if pipeline else ""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise PipelineDefinitionError(
            f"{where}schedule {expression!r} is not a cron expression of five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 6 * * *'",
            pipeline=pipeline,
            field="schedule",
        )
    try:
        from croniter import croniter  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError(
            "cron schedules need the croniter package: pip install 'conveyor[data]'",
            package="croniter",
        ) from exc
    if not croniter.is_valid(expression):
        raise PipelineDefinitionError(
            f"{where}schedule {expression!r} is not a valid cron expression "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'",
            pipeline=pipeline,
            field="schedule",
        )
    return " ".join(expression.split())


# -- checks of the pieces -------------------------------------------------------------


def _pipeline_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > _MAX_NAME:
        raise PipelineDefinitionError(
            f"a pipeline name is 1 to {_MAX_NAME} letters, digits, '_', '.' or '-' "
            f"(starting with a letter or digit), got {name!r}",
            field="name",
        )
    return name


def _flag(value: Any, field: str, pipeline: str) -> bool:
    if not isinstance(value, bool):
        raise PipelineDefinitionError(
            f"pipeline {pipeline!r}: {field} must be True or False, got {value!r}",
            pipeline=pipeline,
            field=field,
        )
    return value


def _triggers(triggers: Iterable[Trigger], pipeline: str) -> tuple[Trigger, ...]:
    if isinstance(triggers, Trigger):
        triggers = (triggers,)
    out: list[Trigger] = []
    keys: set[str] = set()
    for trigger in triggers:
        if not isinstance(trigger, Trigger):
            raise PipelineDefinitionError(
                f"pipeline {pipeline!r}: {trigger!r} is not a trigger (for example "
                "OnNewVersion('sales'))",
                pipeline=pipeline,
                field="triggers",
            )
        if trigger.key in keys:
            raise PipelineDefinitionError(
                f"pipeline {pipeline!r}: trigger {trigger.key!r} is given twice",
                pipeline=pipeline,
                field="triggers",
            )
        keys.add(trigger.key)
        out.append(trigger)
    return tuple(out)
