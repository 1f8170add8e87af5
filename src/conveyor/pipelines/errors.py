"""What a pipeline raises, as branches of Conveyor's one error hierarchy.

::

    InvalidInputError
    ├── PipelineDefinitionError      code "pipeline_invalid"     (definition time)
    └── StepOutputError              code "step_output_invalid"  (run time, never retried)
    ConveyorError
    ├── StepTimeoutError (TimeoutError)   code "step_timeout"
    ├── StepCancelledError               code "step_cancelled"
    └── PipelineFailedError              code "pipeline_failed"  (PipelineRun.raise_for_status)

``StepTimeoutError`` is a ``TimeoutError`` too, so ``retry_on=(TimeoutError,)``
retries timed-out attempts and nothing else.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConveyorError, InvalidInputError

__all__ = [
    "PipelineDefinitionError",
    "PipelineFailedError",
    "StepCancelledError",
    "StepOutputError",
    "StepTimeoutError",
]


class PipelineDefinitionError(InvalidInputError):
    """A pipeline or step definition is wrong: names the pipeline, the step and the field."""

    code = "pipeline_invalid"


class StepOutputError(InvalidInputError):
    """A step returned something other than its declared outputs.

    A bug in the step, not a passing fault: it is never retried.
    """

    code = "step_output_invalid"


class StepTimeoutError(ConveyorError, TimeoutError):
    """A step attempt ran longer than its ``timeout``."""

    code = "step_timeout"


class StepCancelledError(ConveyorError):
    """The step's attempt was given up (timed out, interrupted or taken over).

    Raised by the step's context when the abandoned attempt tries to write,
    so a thread that outlived its timeout changes nothing more.
    """

    code = "step_cancelled"


class PipelineFailedError(ConveyorError):
    """A pipeline run did not succeed; ``run`` is the :class:`PipelineRun`."""

    code = "pipeline_failed"

    def __init__(self, message: str, run: Any = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.run = run
