"""Triggers: conditions other than the clock that start a pipeline.

A trigger is polled by the :class:`~conveyor.pipelines.scheduler.Scheduler`
on every tick with the state it returned last time (kept in the pipeline's
row of the ``schedules`` table). When it fires, the new state is stored in
the same optimistic write that claims the firing, so two schedulers never
both act on one arrival and a restart never replays one.

- :class:`OnNewVersion`: a dataset got a new version (data arrival);
- :class:`OnEvent`: events of given kinds were written to the event log
  (a drift detector's ``drift.detected``, an alert's ``alert.fired``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.events.schema import Event
    from conveyor.store.database import MetadataStore

__all__ = ["OnEvent", "OnNewVersion", "Trigger", "TriggerFiring"]


@dataclass(frozen=True, slots=True)
class TriggerFiring:
    """A trigger fired: ``reason`` goes to the run's ``params["triggers"]``, ``state`` is kept.

    ``run`` False keeps ``state`` without starting a run: a trigger arming
    itself on first sight (see :class:`OnEvent`).
    """

    reason: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    run: bool = True


class Trigger(ABC):
    """Subclass and implement :attr:`key` and :meth:`poll` for a new kind of trigger."""

    @property
    @abstractmethod
    def key(self) -> str:
        """Stable name of this trigger within its pipeline: where its state is kept."""

    @abstractmethod
    def poll(
        self, store: MetadataStore, state: Mapping[str, Any], *, events: EventLog | None = None
    ) -> TriggerFiring | None:
        """Read-only check: a firing if the pipeline should run now, else None.

        ``state`` is what the last firing returned (empty at first);
        ``events`` is the scheduler's event log, for triggers that read it.
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

    def poll(
        self, store: MetadataStore, state: Mapping[str, Any], *, events: EventLog | None = None
    ) -> TriggerFiring | None:
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetVersionRecord

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


#: Events read per query while catching up with the log.
_PAGE = 500
#: Triggering events listed by id in a run's params (the count is always complete).
_MAX_LISTED = 100


class OnEvent(Trigger):
    """Fire when the event log has new events of one of ``kinds`` (about ``subject``, if given).

    A kind is exact (``drift.detected``) or a prefix pattern (``drift.*``),
    as :meth:`EventLog.query` takes them. The state keeps, per kind, the
    event-log cursor of the last event seen; every event after it that a
    tick finds starts *one* run (events arriving together coalesce), whose
    reason lists their ids (the first 100) and their count.

    The first poll only arms the trigger at the end of the log: events
    written before the trigger was first scheduled never fire it.

    Do not listen to what the pipeline itself writes (``pipeline.*``,
    ``step.*``, or ``model.*`` for a training pipeline): each run would
    start the next. ``*`` (every event) is refused for that reason.

    On PostgreSQL, an event whose transaction commits after a later-numbered
    one was read is not seen (the cursor is past it); the log's writer
    commits a batch within milliseconds, so this needs two writers racing
    within one tick. It stays in the log for ``conveyor events``.
    """

    def __init__(self, kinds: Sequence[str] | str, subject: str | None = None) -> None:
        from conveyor.events.schema import MAX_TEXT_LENGTH, check_kind

        if isinstance(kinds, str):
            kinds = [kinds]
        if not isinstance(kinds, Sequence) or not kinds:
            raise InvalidInputError(
                f"OnEvent needs one or more event kinds, got {kinds!r}", field="kinds"
            )
        for kind in kinds:
            if kind == "*":
                raise InvalidInputError(
                    "OnEvent('*') would fire on the events its own runs write; name the "
                    "kinds (e.g. 'drift.detected' or 'drift.*')",
                    field="kinds",
                )
            if not isinstance(kind, str):
                raise InvalidInputError(
                    f"OnEvent kinds are strings, got {type(kind).__name__} {kind!r}",
                    field="kinds",
                )
            check_kind(kind.removesuffix(".*"), field="kinds")
        if subject is not None and (
            not isinstance(subject, str) or not subject or len(subject) > MAX_TEXT_LENGTH
        ):
            raise InvalidInputError(
                f"OnEvent subject must be a non-empty string of at most {MAX_TEXT_LENGTH} "
                f"characters, got {subject!r}",
                field="subject",
            )
        self.kinds: tuple[str, ...] = tuple(sorted(set(kinds)))
        self.subject = subject

    def __repr__(self) -> str:
        subject = "" if self.subject is None else f", subject={self.subject!r}"
        return f"OnEvent({list(self.kinds)!r}{subject})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, OnEvent)
            and other.kinds == self.kinds
            and other.subject == self.subject
        )

    def __hash__(self) -> int:
        return hash(("OnEvent", self.kinds, self.subject))

    @property
    def key(self) -> str:
        subject = "" if self.subject is None else f"@{self.subject}"
        return f"event:{','.join(self.kinds)}{subject}"

    def poll(
        self, store: MetadataStore, state: Mapping[str, Any], *, events: EventLog | None = None
    ) -> TriggerFiring | None:
        if events is None:
            raise InvalidInputError(
                f"{self!r} reads the event log: poll it with events=<EventLog> "
                "(the Scheduler passes its runner's)",
                field="events",
            )
        marks = state.get("marks")
        marks = dict(marks) if isinstance(marks, Mapping) else {}
        armed = {k: self._end_of_log(events, k) for k in self.kinds if k not in marks}
        if len(armed) == len(self.kinds):  # first sight: nothing before now counts
            return TriggerFiring(
                reason={"kind": "event", "armed": list(self.kinds)},
                state={"marks": armed},
                run=False,
            )
        found: dict[str, Event] = {}
        for kind in self.kinds:
            if kind in armed:  # a kind this trigger did not have before: from now on
                marks[kind] = armed[kind]
                continue
            marks[kind] = self._read(events, kind, marks[kind], found)
        if not found:
            if not armed:
                return None
            return TriggerFiring(
                reason={"kind": "event", "armed": sorted(armed)}, state={"marks": marks}, run=False
            )
        new = sorted(found.values(), key=lambda e: (e.time, e.id))
        return TriggerFiring(
            reason={
                "kind": "event",
                "kinds": sorted({e.kind for e in new}),
                "subject": self.subject,
                "count": len(new),
                "event_ids": [e.id for e in new[:_MAX_LISTED]],
                "first_at": new[0].time.isoformat(),
                "last_at": new[-1].time.isoformat(),
            },
            state={"marks": marks},
        )

    def _end_of_log(self, events: EventLog, kind: str) -> dict[str, Any]:
        """A mark just after the newest matching event (or at the start of an empty log)."""
        from conveyor.events.filters import decode_seq_cursor, encode_seq_cursor

        page = events.query(kind=kind, subject=self.subject, limit=1, descending=True)
        if not page.items:
            return {"cursor": None, "tail": []}
        if page.next_cursor is None:  # the only match: start from the top, skipping it
            return {"cursor": None, "tail": [page.items[0].id]}
        newest = decode_seq_cursor(page.next_cursor, descending=True)
        return {"cursor": encode_seq_cursor(newest, descending=False), "tail": []}

    def _read(
        self, events: EventLog, kind: str, mark: Mapping[str, Any], found: dict[str, Event]
    ) -> dict[str, Any]:
        """Add the events after ``mark`` to ``found``; the mark after them.

        A page cursor exists only for a page that is not the last, so the
        mark is the last full page's cursor plus the ids seen after it (at
        most one page, usually a few).
        """
        cursor = mark.get("cursor")
        tail = set(mark.get("tail") or ())
        while True:
            page = events.query(kind=kind, subject=self.subject, cursor=cursor, limit=_PAGE)
            for event in page.items:
                if event.id not in tail:
                    found.setdefault(event.id, event)
            if page.next_cursor is None:
                return {"cursor": cursor, "tail": [e.id for e in page.items]}
            cursor, tail = page.next_cursor, set()
