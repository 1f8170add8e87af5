"""Windowed aggregations of scored events, keyed by entity, in event time.

::

    Window("tumbling", size=60)                       # [0, 60), [60, 120)... per key
    Window("sliding", size=60, slide=10)              # every 10 s, the last 60 s
    Window("session", size=30)                        # events of a key < 30 s apart
    Window("tumbling", size=60, field="amount", allowed_lateness=10, delay=5)

Each window folds one numeric field of the scored records (the model's ``prediction``
by default, or an input field) into count, sum, mean, min and max per entity key.

**Event time and watermarks.** A record's time is its ``time_field``; the watermark of a
window is the latest event time seen minus ``delay`` (how out of order events may
come). A window ``[start, end)`` fires once, when the watermark passes ``end +
allowed_lateness``: its result is published to the windows target with the id
``NAME:KEY:START`` (published again after a crash, the broker drops the copy). An
event whose window has already fired is *late*: it goes to the late target (a side
output, id ``MESSAGE_ID:NAME``) and changes nothing. A session closes ``size``
seconds (the gap) after its last event; two sessions an event bridges merge.

**State that survives a restart.** The open windows, the ids of the messages folded
into each, and the latest event time are saved (:meth:`Windows.checkpoint`, to the
source's state: a NATS KV bucket, a Redis key) after the batch's results are written
and *before* the batch is acked. A consumer killed before the save loses the
unsaved state and gets the unacked messages again; killed after it, the messages
it gets again are already in their window's ids and are not counted twice. A failed
batch rolls the state back to the last save (:meth:`Windows.rollback`).

The state of a key lives in the consumer that sees the key's events: to run several
windowed consumers, give each its own subject filter (partition the subject by
entity: ``orders.p0.>``, ``orders.p1.>``) and durable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.scoring.stream.source import StreamSource

__all__ = ["Window", "Windows", "parse_window"]

Kind = Literal["tumbling", "sliding", "session"]
_KINDS = ("tumbling", "sliding", "session")


@dataclass(frozen=True, slots=True)
class Window:
    """One windowed aggregation (see the module); ``size`` is a session's gap."""

    kind: Kind
    size: float
    slide: float | None = None
    field: str = "prediction"
    allowed_lateness: float = 0.0
    delay: float = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidInputError(
                f"unknown window kind {self.kind!r}: expected {', '.join(_KINDS)}", field="window"
            )
        if not (self.size > 0 and math.isfinite(self.size)):
            raise InvalidInputError(f"a window's size must be > 0, got {self.size}", field="size")
        if self.kind == "sliding":
            if self.slide is None or not 0 < self.slide <= self.size:
                raise InvalidInputError(
                    f"a sliding window slides by 0 < slide <= size ({self.size}), got {self.slide}",
                    field="slide",
                )
        elif self.slide is not None:
            raise InvalidInputError(f"a {self.kind} window does not slide", field="slide")
        if self.allowed_lateness < 0 or self.delay < 0:
            raise InvalidInputError("allowed_lateness and delay are >= 0", field="window")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        slide = f"/{_seconds(self.slide)}" if self.slide else ""
        return f"{self.kind}_{_seconds(self.size)}{slide}_{self.field}"

    def spans(self, t: float) -> list[tuple[float, float]]:
        """The ``[start, end)`` windows an event at ``t`` belongs to (not sessions)."""
        if self.kind == "tumbling":
            start = math.floor(t / self.size) * self.size
            return [(start, start + self.size)]
        assert self.slide is not None
        last = math.floor(t / self.slide) * self.slide
        out = []
        start = last
        while start > t - self.size:
            out.append((start, start + self.size))
            start -= self.slide
        return out[::-1]


def _seconds(value: float | None) -> str:
    return f"{value:g}s"


_SPEC = re.compile(
    r"^(?P<kind>tumbling|sliding|session):(?P<size>[0-9hmsdw.]+)(?:/(?P<slide>[0-9hmsdw.]+))?"
    r"(?::(?P<field>[A-Za-z_][A-Za-z0-9_]*))?(?:\+(?P<late>[0-9hmsdw.]+))?$"
)


def parse_window(text: str) -> Window:
    """``tumbling:60s``, ``sliding:5m/1m:amount``, ``session:30s+10s`` (``+`` lateness)."""
    from conveyor.durations import parse_duration

    found = _SPEC.match(text.strip())
    if found is None:
        raise InvalidInputError(
            f"--window {text!r}: expected KIND:SIZE[/SLIDE][:FIELD][+LATENESS], e.g. "
            "tumbling:60s, sliding:5m/1m:amount, session:30s+10s",
            field="window",
        )

    def seconds(part: str | None) -> float | None:
        return None if part is None else parse_duration(part, "--window").total_seconds()

    return Window(
        found["kind"],  # type: ignore[arg-type]
        seconds(found["size"]) or 0.0,
        slide=seconds(found["slide"]),
        field=found["field"] or "prediction",
        allowed_lateness=seconds(found["late"]) or 0.0,
    )


class _Agg:
    """One open window of one key."""

    __slots__ = ("count", "end", "ids", "max", "min", "start", "sum")

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.count = 0
        self.sum = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.ids: list[str] = []

    def add(self, msg_id: str, value: float | None) -> None:
        self.ids.append(msg_id)
        self.count += 1
        if value is not None:
            self.sum += value
            self.min = value if self.min is None else min(self.min, value)
            self.max = value if self.max is None else max(self.max, value)

    def merge(self, other: _Agg) -> None:
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.ids += other.ids
        self.count += other.count
        self.sum += other.sum
        for v in (other.min, other.max):
            if v is not None:
                self.min = v if self.min is None else min(self.min, v)
                self.max = v if self.max is None else max(self.max, v)

    def dump(self) -> list[Any]:
        return [self.start, self.end, self.count, self.sum, self.min, self.max, self.ids]

    @classmethod
    def load(cls, data: Sequence[Any]) -> _Agg:
        agg = cls(data[0], data[1])
        agg.count, agg.sum, agg.min, agg.max, agg.ids = data[2], data[3], data[4], data[5], data[6]
        return agg


class Windows:
    """Every window of one consumer: their open state, checkpoints, outputs."""

    def __init__(
        self, windows: Sequence[Window], *, name: str, target: str, late_target: str
    ) -> None:
        labels = [w.label for w in windows]
        if len(set(labels)) != len(labels):
            raise InvalidInputError(f"two windows are named alike: {labels}", field="window")
        self.windows = list(windows)
        self.name = name
        self.target = target
        self.late_target = late_target
        self.max_time = -math.inf
        # label -> key -> open windows of that key (sorted by start)
        self.open: dict[str, dict[str, list[_Agg]]] = {w.label: {} for w in windows}
        self._saved: bytes | None = None

    # -- folding -------------------------------------------------------------------

    def apply(
        self,
        records: Sequence[dict[str, Any]],
        inputs: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Fold scored records in (a window's field is the record's, else the message's
        input, ``inputs[i]``); ``(windows that fired, late records)``."""
        late: list[dict[str, Any]] = []
        for i, r in enumerate(records):
            t, key, msg_id = r["time"], str(r["key"]), str(r["id"])
            for w in self.windows:
                raw = r.get(w.field)
                if raw is None and inputs is not None:
                    raw = inputs[i].get(w.field)
                value = _number(raw)
                watermark = self.max_time - w.delay
                if not self._fold(w, key, t, msg_id, value, watermark):
                    late.append(
                        {
                            "id": f"{msg_id}:{w.label}",
                            "window": w.label,
                            "key": key,
                            "time": t,
                            "watermark": watermark,
                            "record": r,
                        }
                    )
            self.max_time = max(self.max_time, t)
        return self._fire(), late

    def _fold(
        self, w: Window, key: str, t: float, msg_id: str, value: float | None, watermark: float
    ) -> bool:
        """Fold one event into ``w``; False when it is late (its window has fired)."""
        keyed = self.open[w.label].setdefault(key, [])
        if any(msg_id in agg.ids for agg in keyed):
            return True  # delivered again after its state was saved: counted once
        if w.kind == "session":
            if t + w.size + w.allowed_lateness <= watermark:
                return False
            new = _Agg(t, t + w.size)
            new.add(msg_id, value)
            keep = []
            for agg in keyed:
                if agg.start <= new.end and t <= agg.end:
                    new.merge(agg)
                else:
                    keep.append(agg)
            keep.append(new)
            keep.sort(key=lambda a: a.start)
            self.open[w.label][key] = keep
            return True
        on_time = False
        for start, end in w.spans(t):
            if end + w.allowed_lateness <= watermark:
                continue
            on_time = True
            found = next((a for a in keyed if a.start == start), None)
            if found is None:
                found = _Agg(start, end)
                keyed.append(found)
                keyed.sort(key=lambda a: a.start)
            found.add(msg_id, value)
        return on_time

    def _fire(self) -> list[dict[str, Any]]:
        out = []
        for w in self.windows:
            watermark = self.max_time - w.delay
            table = self.open[w.label]
            for key in list(table):
                keep = []
                for agg in table[key]:
                    if agg.end + w.allowed_lateness <= watermark:
                        out.append(self._result(w, key, agg))
                    else:
                        keep.append(agg)
                if keep:
                    table[key] = keep
                else:
                    del table[key]
        return out

    def _result(self, w: Window, key: str, agg: _Agg) -> dict[str, Any]:
        return {
            "id": f"{w.label}:{key}:{_stamp(agg.start)}",
            "window": w.label,
            "kind": w.kind,
            "field": w.field,
            "key": key,
            "start": agg.start,
            "end": agg.end,
            "count": agg.count,
            "sum": agg.sum,
            "mean": agg.sum / agg.count if agg.count else None,
            "min": agg.min,
            "max": agg.max,
        }

    # -- outputs and state ---------------------------------------------------------

    def publish(
        self, source: StreamSource, fired: list[dict[str, Any]], late: list[dict[str, Any]]
    ) -> None:
        from conveyor.scoring.stream.sinks import encode
        from conveyor.scoring.stream.source import Outgoing

        if fired:
            source.publish(self.target, [Outgoing(encode(r), r["id"]) for r in fired])
        if late:
            source.publish(self.late_target, [Outgoing(encode(r), r["id"]) for r in late])

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                "format": "conveyor.windows/1",
                "max_time": None if self.max_time == -math.inf else self.max_time,
                "open": {
                    label: {key: [a.dump() for a in aggs] for key, aggs in keys.items()}
                    for label, keys in self.open.items()
                },
            }
        )

    def _load(self, data: bytes) -> None:
        state = orjson.loads(data)
        self.max_time = -math.inf if state["max_time"] is None else float(state["max_time"])
        self.open = {w.label: {} for w in self.windows}
        for label, keys in state["open"].items():
            if label in self.open:  # a window no longer configured is dropped
                self.open[label] = {k: [_Agg.load(a) for a in aggs] for k, aggs in keys.items()}

    def restore(self, source: StreamSource) -> None:
        source.prepare_target(self.target)
        source.prepare_target(self.late_target)
        data = source.load_state(self.name)
        if data is not None:
            self._load(data)
        self._saved = data

    def checkpoint(self, source: StreamSource) -> None:
        data = self.snapshot()
        if data != self._saved:
            source.save_state(self.name, data)
            self._saved = data

    def rollback(self) -> None:
        if self._saved is None:
            self.max_time = -math.inf
            self.open = {w.label: {} for w in self.windows}
        else:
            self._load(self._saved)

    def open_windows(self) -> int:
        return sum(len(aggs) for keys in self.open.values() for aggs in keys.values())


def _stamp(t: float) -> str:
    """A window start in an id: exact (``1700000000``, ``12.5``), never rounded."""
    return str(int(t)) if float(t).is_integer() else repr(float(t))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None
