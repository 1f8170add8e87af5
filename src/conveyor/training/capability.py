"""The training flow as a capability: the ``models:`` section, ``train`` and ``optimize``."""

from conveyor.capability import Capability, Command
from conveyor.training.events import TRAINING_EVENTS

CAPABILITY = Capability(
    "training",
    "gated and continuous training, optimization of registered versions",
    requires=("data", "pipelines", "registry"),
    settings="conveyor.training.settings:SECTIONS",
    cli=(
        Command("conveyor.cli.training:train", "train"),
        Command("conveyor.cli.training:optimize", "optimize"),
    ),
    events=TRAINING_EVENTS,
    actions={
        "training.train": "deployer",
        "training.evaluate": "deployer",
        "training.optimize": "deployer",
    },
)
