"""The ``experiments:`` section of ``conveyor.yaml``: an experiment's statistical defaults.

::

    experiments:
      alpha: 0.05              # two-sided false positive rate of the whole decision rule
      power: 0.8               # designed power at the minimum detectable effect
      sequential_share: 0.2    # the share of alpha the always-valid early stop spends
      looks: 50                # checkpoints the report folds the sequential test over

Every field can be set from the environment (``CONVEYOR_EXPERIMENTS__ALPHA``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "ExperimentsSpec", "experiments_of"]


class ExperimentsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="False positive rate of the decision rule."
    )
    power: float = Field(
        default=0.8, gt=0.5, lt=1, description="Designed power at the minimum detectable effect."
    )
    sequential_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of alpha spent by the always-valid early stop (the fixed-horizon "
        "test at the planned sample size spends the rest).",
    )
    looks: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Checkpoints (equal shares of the traffic, in time order) the report "
        "folds the sequential test over.",
    )


SECTIONS: dict[str, Any] = {
    "experiments": (
        ExperimentsSpec,
        Field(
            default_factory=ExperimentsSpec,
            description="A-B experiments: alpha, power and the sequential test's share.",
        ),
    )
}


def experiments_of(spec: ProjectSpec) -> ExperimentsSpec:
    found = getattr(spec, "experiments", None)
    return found if isinstance(found, ExperimentsSpec) else ExperimentsSpec()
