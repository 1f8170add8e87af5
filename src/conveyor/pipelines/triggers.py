"""Triggers: conditions other than the clock that start a pipeline.

A trigger is polled by the :class:`~conveyor.pipelines.scheduler.Scheduler`
on every tick with the state it returned last time (kept in the pipeline's
row of the ``schedules`` table). When it fires, the new state is stored in
the same optimistic write that claims the firing, so two schedulers never
both act on one arrival and a restart never replays one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.store.database import MetadataStore

__all__ = ["OnNewVersion", "Trigger", "TriggerFiring"]


@dataclass(frozen=True, slots=True)
class TriggerFiring:
    """A trigger fired: ``reason`` goes to the run's ``params["trigger"]``, ``state`` is kept."""

    reason: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)


class Trigger(ABC):
    """Subclass and implement :attr:`key` and :meth:`poll` for a new kind of trigger."""

    @property
    @abstractmethod
    def key(self) -> str:
        """Stable name of this trigger within its pipeline: where its state is kept."""

    @abstractmethod
    def poll(self, store: MetadataStore, state: Mapping[str, Any]) -> TriggerFiring | None:
        """Read-only check: a firing if the pipeline should run now, else None.

        ``state`` is what the last firing returned (empty at first).
        """


class OnNewVersion(Trigger):
    """Fire when ``dataset`` has a version newer than the last one this trigger fired for.

    "Newer" is a higher version number in ``dataset_versions``. Several
    versions arriving between two ticks fire once, for the newest. The
    first poll fires if the dataset has any version at all: nothing has
    been processed yet.
    """

    def __init__(self, dataset: str) -> None:
        if not isinstance(dataset, str) or not dataset.strip() or len(dataset) > 200:
            raise InvalidInputError(
                f"OnNewVersion needs a dataset name (1 to 200 characters), got {dataset!r}",
                field="dataset",
            )
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"OnNewVersion({self.dataset!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OnNewVersion) and other.dataset == self.dataset

    def __hash__(self) -> int:
        return hash(("OnNewVersion", self.dataset))

    @property
    def key(self) -> str:
        return f"new_version:{self.dataset}"

    def poll(self, store: MetadataStore, state: Mapping[str, Any]) -> TriggerFiring | None:
        import sqlalchemy as sa

        from conveyor.store.models import DatasetVersionRecord

        stmt = (
            sa.select(DatasetVersionRecord.id, DatasetVersionRecord.number)
            .where(DatasetVersionRecord.dataset == self.dataset)
            .order_by(DatasetVersionRecord.number.desc())
            .limit(1)
        )
        with store.read() as session:
            row = session.execute(stmt).one_or_none()
        if row is None:
            return None
        version_id, number = row
        seen = state.get("number")
        if isinstance(seen, int) and number <= seen:
            return None
        return TriggerFiring(
            reason={
                "kind": "new_version",
                "dataset": self.dataset,
                "version": number,
                "version_id": version_id,
            },
            state={"number": number, "version_id": version_id},
        )
