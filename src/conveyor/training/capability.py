"""The training flow as a capability: the ``models:`` section, ``train`` and ``optimize``."""

from conveyor.capability import Capability, Command

CAPABILITY = Capability(
    "training",
    "gated and continuous training, optimization of registered versions",
    requires=("data", "pipelines", "registry"),
    settings="conveyor.training.settings:SECTIONS",
    cli=(
        Command("conveyor.cli.training:train", "train"),
        Command("conveyor.cli.training:optimize", "optimize"),
    ),
    actions={
        "training.train": "deployer",
        "training.evaluate": "deployer",
        "training.optimize": "deployer",
    },
)
