"""The output gate of an optimized version: it must answer in its parent's dtype and shape.

A canary of an optimized copy sends its share of the requests to the copy.
If the copy answered ``[[453452.34]]`` where its parent answers
``[453452.36]``, a client reading ``predictions[0]`` as a number would break
for that share. The registry reads every version's answers as its output
signature says (:mod:`conveyor.registry.outputs`), and an optimized version
takes its parent's when its answers can be read so; this check asks the
registered child, loaded as a server loads it, for predictions on hold-out
rows and compares what comes back with the parent's output signature: same
outputs, same dtype, same per-row shape. It fails the optimization report
(``conveyor optimize`` exits with code 3) with the difference in its detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.registry.registry import Registry
    from conveyor.registry.versions import ModelVersion

__all__ = ["OUTPUT_CHECK", "output_signature_check"]

OUTPUT_CHECK = "output_signature"
_ROWS = 8


def output_signature_check(
    registry: Registry, parent: ModelVersion, child: ModelVersion, rows: Any
) -> CheckResult:
    """Whether ``child`` answers ``rows`` (a frame) in ``parent``'s dtype and per-row shape."""
    import warnings

    from conveyor.data.frames import to_arrow
    from conveyor.registry.outputs import describe, infer_outputs, mismatches

    table = to_arrow(rows).slice(0, _ROWS)
    n = table.num_rows
    parent_loaded = registry.load(parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the models' own warnings are not this check's
        expected = parent_loaded.signature.outputs if parent_loaded.signature else ()
        if not expected:  # a parent registered before output signatures: ask it
            expected = infer_outputs(parent_loaded.predict(table, allow_extra=True), n)
        try:
            answer = registry.load(child).predict(table, allow_extra=True)
        except ConveyorError as exc:
            return _failed(child, expected, f"it cannot answer like its parent: {exc.message}")
    found = infer_outputs(answer, n)
    problems = mismatches(expected, found)
    if problems:
        return _failed(child, expected, "; ".join(problems), observed=describe(found))
    return CheckResult(
        OUTPUT_CHECK,
        True,
        observed=describe(found),
        threshold=describe(expected),
        detail=f"{child.ref} answers like {parent.ref}: {describe(expected)}",
    )


def _failed(
    child: ModelVersion, expected: Any, why: str, *, observed: str | None = None
) -> CheckResult:
    from conveyor.registry.outputs import describe

    return CheckResult(
        OUTPUT_CHECK,
        False,
        observed=observed,
        threshold=describe(expected),
        detail=(
            f"{child.ref} does not answer in its parent's shape ({why}): a canary or "
            "shadow of it would change the response for its share of requests"
        ),
    )
