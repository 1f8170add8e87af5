"""A step: a plain function with declared inputs and outputs, and its retry policy.

Built by :meth:`Pipeline.step`; the checks of a step's own declaration
(names, signature, options) live here, the checks of the graph in
``definition.py``.
"""

from __future__ import annotations

import inspect
import keyword
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.pipelines.errors import PipelineDefinitionError, StepOutputError

__all__ = [
    "ErrorFactory",
    "Step",
    "check_count",
    "check_exceptions",
    "check_names",
    "check_seconds",
    "check_signature",
]

#: Builds the error for (message, field), naming the pipeline and the step.
ErrorFactory = Callable[[str, str], PipelineDefinitionError]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, slots=True, eq=False)
class Step:
    """One declared step: its function, its wiring and its retry policy."""

    pipeline: str
    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    retries: int
    backoff: float
    max_backoff: float
    timeout: float | None
    retry_on: tuple[type[BaseException], ...]

    def __repr__(self) -> str:
        return f"<Step {self.pipeline}.{self.name} {list(self.inputs)} -> {list(self.outputs)}>"

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first): full jitter.

        ``uniform(0, min(max_backoff, backoff * 2**retry))``: the cap doubles
        with each retry and the wait is spread over all of it, so clients that
        failed together do not retry together.
        """
        try:
            grown = self.backoff * 2.0**retry
        except OverflowError:  # 2.0**1024 and up: the cap has long been reached
            grown = math.inf if self.backoff > 0 else 0.0
        return rng.uniform(0.0, min(self.max_backoff, grown))

    def retryable(self, error: BaseException) -> bool:
        """Whether a failed attempt that raised ``error`` may be tried again."""
        return not isinstance(error, StepOutputError) and isinstance(error, self.retry_on)

    def outputs_from(self, value: Any) -> dict[str, Any]:
        """The step's outputs from its return value; StepOutputError if they do not match."""
        where = f"step {self.name!r} of pipeline {self.pipeline!r}"
        if not self.outputs:
            if value is not None:
                raise StepOutputError(
                    f"{where} returned a {type(value).__name__} but declares no outputs; "
                    "declare outputs=(...) or return None",
                    step=self.name,
                    field="outputs",
                )
            return {}
        if len(self.outputs) == 1:
            return {self.outputs[0]: value}
        if not isinstance(value, Mapping):
            raise StepOutputError(
                f"{where} declares outputs {', '.join(self.outputs)} and must return a dict "
                f"with those keys, but returned a {type(value).__name__}",
                step=self.name,
                field="outputs",
            )
        missing = [name for name in self.outputs if name not in value]
        extra = sorted(str(key) for key in value if key not in self.outputs)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(repr(n) for n in missing)}")
            if extra:
                parts.append(f"undeclared {', '.join(repr(n) for n in extra)}")
            raise StepOutputError(
                f"{where} returned outputs that do not match its declaration "
                f"({', '.join(self.outputs)}): {'; '.join(parts)}",
                step=self.name,
                field=(missing or extra)[0],
            )
        return {name: value[name] for name in self.outputs}


def check_names(value: Sequence[str] | str, field: str, error: ErrorFactory) -> tuple[str, ...]:
    # ("raw") is the string "raw", not a tuple: take it as the one name it means.
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, Sequence):
        raise error(f"{field} must be a sequence of names, got {type(value).__name__}", field)
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise error(f"{field} name {name!r} is not a Python identifier", field)
        if name in out:
            raise error(f"{field} name {name!r} is given twice", field)
        out.append(name)
    return tuple(out)


def check_signature(
    func: Callable[..., Any], step: str, inputs: tuple[str, ...], error: ErrorFactory
) -> None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise error(f"cannot read the signature of {func!r}: {exc}", "func") from exc
    params = list(signature.parameters.values())
    if not params or params[0].kind not in _POSITIONAL:
        raise error(f"the function must take the step context first: def {step}(ctx, ...)", "func")
    rest = params[1:]
    named = {p.name for p in rest if p.kind in _NAMED}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest)
    for name in inputs:
        if name not in named and not takes_any:
            raise error(f"input {name!r} has no parameter of that name in {step}{signature}", name)
    if params[0].name in inputs:
        raise error(f"input {params[0].name!r} has the name of the context parameter", "inputs")
    for p in rest:
        if p.default is not inspect.Parameter.empty or p.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if p.kind is inspect.Parameter.POSITIONAL_ONLY or p.name not in inputs:
            raise error(
                f"parameter {p.name!r} of {step}{signature} is not a declared input: "
                f"declare it in inputs=(...) or give it a default",
                p.name,
            )


def check_count(value: Any, field: str, error: Callable[[str, str], Exception]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{field} must be an integer >= 0, got {value!r}", field)
    return value


def check_seconds(value: Any, field: str, error: ErrorFactory, *, zero_ok: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = math.isfinite(number) and (number >= 0 if zero_ok else number > 0)
    if not ok:
        bound = ">= 0" if zero_ok else "> 0"
        raise error(f"{field} must be a finite number of seconds {bound}, got {value!r}", field)
    return float(value)


def check_exceptions(value: Any, error: ErrorFactory) -> tuple[type[BaseException], ...]:
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise error(
                f"retry_on must be an exception class or a tuple of them, got {cls!r}",
                "retry_on",
            )
    return tuple(classes)
