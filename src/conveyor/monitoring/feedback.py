"""Ground truth: labels and business outcomes joined to the predictions they judge.

::

    from conveyor.monitoring import load_feedback, record_feedback

    record_feedback(project, [{"request_id": "9f1c...", "label": 1}])
    record_feedback(project, [{"model": "churn", "keys": {"customer_id": 42},
                               "time": "2026-12-09T10:00:00Z", "label": 0, "value": 120.0}])
    load_feedback(project, "labels.csv")     # CSV, Parquet, JSON lines; or a DataFrame / Table

A record names the prediction it judges in one of two ways:

- by **request id** (the ``X-Request-ID`` the server answered with), and the ``row`` of
  that request (default 0: one-row requests);
- by **model and entity key** (``keys``, one or more columns) and the ``time`` of the
  outcome: it judges the *latest prediction of that model for that key at or before the
  outcome's time*, no older than ``monitoring.quality.horizon`` (7 days). The key must be
  in the prediction's event: the feature store's join keys (recorded for every request
  served by entity key) or the request's own rows (``input``, sampled at
  ``serving.payload_sample_rate``: 1.0 for every request).

and carries a ``label`` (a class, a relevance, a true value), a ``value`` (a business
outcome such as revenue), or both.

**Stored as events.** Each record is a ``feedback`` event in the one event log (control:
never dropped; written durably before the call returns), with the prediction's request
id as its own ``request_id``. So ``conveyor feedback show REQUEST_ID`` shows a
prediction with its feedback, compaction copies feedback into the columnar copy like
any other kind, and a quality report is one DuckDB join of ``prediction`` and
``feedback`` events by request id (:mod:`conveyor.monitoring.quality`). Nothing is ever
updated in place:

- **Late arrival**: the join happens when a report is computed, so a label arriving
  days later counts in the window of the prediction it judges, from then on.
- **Duplicates: last write wins, recorded.** Two records for the same prediction (the
  same request id and row) are both kept in the log; the later one (by log order) is the
  one scored, and the report counts the overwritten ones (``overwritten``);
  :func:`feedback_for` shows every value a prediction received, in order.
- **Unknown request ids are quarantined, never dropped**: a record whose request id
  matches no prediction within the horizon before it (or whose key matches none, or whose
  row is beyond the request's rows) is counted and listed with its reason by
  :func:`quarantined` (``conveyor feedback quarantine``, ``GET /v1/feedback/quarantine``).
  Quarantine is the result of the same join, not a copy: a prediction that reaches the
  log later (a batch scorer's events loaded late, a spilled segment replayed) re-joins
  its feedback at the next report, and it leaves the quarantine by itself.
- **Malformed records** are refused before anything is written: over HTTP the whole
  request is a 422 (``invalid_input``) naming the record and the field; the bulk loader
  writes the good rows and keeps the bad ones in a ``feedback.rejected`` event with
  their reasons (the first 10,000 rows in full, all of them counted).

Why events and not a table: the one log is already what every monitor reads, and the
columnar copy makes the join a scan of two Parquet relations; a table would need its own
retention, its own erasure by ``conveyor data forget`` and its own copy for DuckDB.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.capability import EventKind
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.events.schema import Event
    from conveyor.project import Project

__all__ = [
    "FEEDBACK",
    "FEEDBACK_EVENTS",
    "FEEDBACK_REJECTED",
    "FeedbackLoad",
    "FeedbackRecord",
    "feedback_for",
    "load_feedback",
    "parse_record",
    "record_feedback",
]

_SCALAR = (str, int, float, bool)

FEEDBACK = EventKind(
    "feedback",
    "control",
    {
        "row": int,
        "label": (*_SCALAR, type(None)),
        "value": (int, float, type(None)),
        "model": (str, type(None)),
        "keys": (dict, type(None)),
        "time": str,
        "source": str,
    },
    "ground truth for a prediction (by request_id and row, or by model, entity keys and "
    "outcome time): a label and/or a business value; the latest one per prediction counts",
)
FEEDBACK_REJECTED = EventKind(
    "feedback.rejected",
    "control",
    {"source": str, "rows": int, "reasons": dict, "records": list, "kept": int},
    "malformed feedback records of a bulk load, kept with their reasons (records: the first "
    "10,000, each with its reason and row number; rows: how many were rejected)",
)
FEEDBACK_EVENTS: tuple[EventKind, ...] = (FEEDBACK, FEEDBACK_REJECTED)

#: Fields a record may carry; anything else is refused (a typo is not silently ignored).
FIELDS = ("request_id", "row", "model", "keys", "time", "label", "value")
#: Rejected rows kept in full in a ``feedback.rejected`` event (all are counted).
KEEP_REJECTED = 10_000
#: Records per HTTP request.
MAX_RECORDS = 10_000
_WRITE_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One checked record (see the module)."""

    request_id: str | None
    row: int
    model: str | None
    keys: dict[str, Any] | None
    time: datetime
    label: Any
    value: float | None

    def payload(self, source: str) -> dict[str, Any]:
        return {
            "row": self.row,
            "label": self.label,
            "value": self.value,
            "model": self.model,
            "keys": self.keys,
            "time": self.time.isoformat(),
            "source": source,
        }


@dataclass(frozen=True, slots=True)
class FeedbackLoad:
    """What a write of feedback did: records accepted (written), rejected (with reasons)."""

    source: str
    accepted: int
    rejected: int
    reasons: dict[str, int]
    seconds: float
    by_key: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "accepted": self.accepted,
            "by_request_id": self.accepted - self.by_key,
            "by_key": self.by_key,
            "rejected": self.rejected,
            "reasons": self.reasons,
            "rejected_examples": self.examples,
            "seconds": round(self.seconds, 4),
        }


class _Bad(Exception):
    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


def _missing(value: Any) -> bool:
    """Absent: None, NaN (a frame's empty cell) or an empty string (a CSV's)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def parse_record(raw: Any, *, now: datetime | None = None) -> FeedbackRecord:
    """One record checked (InvalidInputError naming the field, ``reason`` a stable word)."""
    try:
        return _parse(raw, now or datetime.now(UTC))
    except _Bad as bad:
        raise InvalidInputError(bad.message, field=bad.field, reason=bad.reason) from None


def _parse(raw: Any, now: datetime) -> FeedbackRecord:
    if isinstance(raw, _Unreadable):
        raise _Bad("record", "not_json", raw["_unreadable"])
    if not isinstance(raw, Mapping):
        raise _Bad("record", "not_an_object", f"a record is a JSON object, got {_type(raw)}")
    # numpy scalars (a pandas frame's cells) as Python's, so the checks below see them.
    raw = {k: v.item() if hasattr(v, "item") and hasattr(v, "dtype") else v for k, v in raw.items()}
    unknown = [k for k in raw if k not in FIELDS and not str(k).startswith("key.")]
    if unknown:
        raise _Bad(
            str(unknown[0]),
            "unknown_field",
            f"unknown field {unknown[0]!r}; a record has {', '.join(FIELDS)} (or key.NAME columns)",
        )
    request_id = raw.get("request_id")
    if _missing(request_id) or request_id == "":
        request_id = None
    elif not isinstance(request_id, str) or len(request_id) > 200:
        raise _Bad(
            "request_id", "bad_request_id", "request_id is a string of 200 characters at most"
        )
    row = raw.get("row")
    if _missing(row):
        row = 0
    if isinstance(row, float) and row.is_integer():
        row = int(row)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise _Bad(
            "row", "bad_row", f"row is the row's index in its request (0 or more), got {row!r}"
        )
    model = raw.get("model")
    if _missing(model) or model == "":
        model = None
    elif not isinstance(model, str):
        raise _Bad("model", "bad_model", f"model is a name, got {_type(model)}")
    keys = _keys(raw)
    if request_id is None and (model is None or not keys):
        raise _Bad(
            "request_id",
            "no_prediction_named",
            "a record names its prediction by request_id, or by model and keys (with the "
            "outcome's time)",
        )
    when = _time(raw.get("time"), now)
    label = raw.get("label")
    if _missing(label):
        label = None
    elif isinstance(label, float) and not math.isfinite(label):
        raise _Bad("label", "bad_label", "label is a finite number, a string or a boolean")
    elif not isinstance(label, _SCALAR):
        raise _Bad(
            "label", "bad_label", f"label is a number, a string or a boolean, got {_type(label)}"
        )
    value = raw.get("value")
    if _missing(value):
        value = None
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad("value", "bad_value", f"value is a finite number, got {value!r}")
    else:
        value = float(value)
    if label is None and value is None:
        raise _Bad("label", "no_label_or_value", "a record carries a label, a value or both")
    return FeedbackRecord(request_id, row, model, keys, when, label, value)


def _keys(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    keys: dict[str, Any] = {}
    given = raw.get("keys")
    if not _missing(given):
        if not isinstance(given, Mapping) or not given:
            raise _Bad("keys", "bad_keys", "keys is an object of entity key columns and values")
        keys.update(given)
    for name, value in raw.items():
        if str(name).startswith("key.") and not _missing(value):
            keys[str(name)[4:]] = value
    for name, value in keys.items():
        if hasattr(value, "item"):
            value = keys[name] = value.item()
        if isinstance(value, float) and value.is_integer():
            keys[name] = int(value)  # a CSV column read as floats: 42.0 is the key 42
        elif not isinstance(value, str | int | bool):
            raise _Bad(f"keys.{name}", "bad_keys", "an entity key is a string or an integer")
    return dict(sorted(keys.items())) or None


def _time(value: Any, now: datetime) -> datetime:
    if _missing(value):
        return now
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _Bad("time", "bad_time", f"time {value!r} is not an ISO 8601 time") from None
    elif hasattr(value, "to_pydatetime"):
        moment = value.to_pydatetime()
    else:
        raise _Bad("time", "bad_time", f"time is an ISO 8601 time, got {_type(value)}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _events(records: Sequence[FeedbackRecord], source: str, actor: str | None) -> list[Event]:
    from conveyor.events.catalogue import check_payload
    from conveyor.events.schema import Event

    out = []
    for record in records:
        payload = record.payload(source)
        check_payload(FEEDBACK, payload)
        out.append(
            Event(
                FEEDBACK.name,
                subject=record.model,
                payload=payload,
                request_id=record.request_id,
                actor=actor,
            )
        )
    return out


def _write(
    project: Project, records: Sequence[FeedbackRecord], source: str, actor: str | None
) -> None:
    log = project.events
    for start in range(0, len(records), _WRITE_BATCH):
        # Durable: a caller told "accepted" can rely on it (control events are otherwise
        # only queued when the call returns).
        log.append_many(_events(records[start : start + _WRITE_BATCH], source, actor), durable=True)


def record_feedback(
    project: Project,
    records: Iterable[Mapping[str, Any]],
    *,
    actor: str | None = None,
    source: str = "python",
) -> FeedbackLoad:
    """Check every record, then write them all (one InvalidInputError for the first bad
    record, naming it as ``records[i].field``, and nothing written)."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    checked = []
    for i, raw in enumerate(records):
        try:
            checked.append(_parse(raw, now))
        except _Bad as bad:
            raise InvalidInputError(
                f"records[{i}]: {bad.message}",
                field=f"records[{i}].{bad.field}",
                reason=bad.reason,
                record=i,
            ) from None
    _write(project, checked, source, actor)
    by_key = sum(1 for r in checked if r.request_id is None)
    return FeedbackLoad(source, len(checked), 0, {}, time.perf_counter() - started, by_key)


def load_feedback(
    project: Project,
    source: Any,
    *,
    format: str | None = None,
    actor: str | None = None,
) -> FeedbackLoad:
    """Write the records of a file (``.csv``, ``.parquet``, ``.jsonl``/``.ndjson``,
    ``.json``: a list) or of a pandas DataFrame, Arrow table or list of mappings.

    Columns are the record's fields (``request_id``, ``row``, ``model``, ``time``,
    ``label``, ``value``) and the entity keys as ``key.NAME`` columns (or a ``keys``
    object in JSON). Good rows are written; bad ones are kept in a ``feedback.rejected``
    event with their reasons and counted in the answer.
    """
    started = time.perf_counter()
    name, rows = _rows(source, format)
    now = datetime.now(UTC)
    good: list[FeedbackRecord] = []
    reasons: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    for i, raw in enumerate(rows):
        try:
            good.append(_parse(raw, now))
        except _Bad as bad:
            reasons[bad.reason] += 1
            if len(kept) < KEEP_REJECTED:
                kept.append(
                    {"row": i, "reason": bad.reason, "message": bad.message, "record": _plain(raw)}
                )
    _write(project, good, name, actor)
    rejected = sum(reasons.values())
    if rejected:
        from conveyor.events.catalogue import check_payload
        from conveyor.events.schema import Event

        payload = {
            "source": name,
            "rows": rejected,
            "reasons": dict(reasons),
            "records": kept,
            "kept": len(kept),
        }
        check_payload(FEEDBACK_REJECTED, payload)
        project.events.append(
            Event(FEEDBACK_REJECTED.name, payload=payload, actor=actor), durable=True
        )
    by_key = sum(1 for r in good if r.request_id is None)
    return FeedbackLoad(
        name, len(good), rejected, dict(reasons), time.perf_counter() - started, by_key, kept[:5]
    )


def _plain(raw: Any) -> Any:
    """A rejected record as JSON can hold it."""
    import orjson

    try:
        return orjson.loads(orjson.dumps(raw, default=str, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return repr(raw)


def _rows(source: Any, format: str | None) -> tuple[str, list[Any]]:
    """(a name for the source, its records as mappings)."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"no feedback file at {path}", field="file")
        kind = (format or path.suffix.lstrip(".")).lower()
        return path.name, _read_file(path, kind)
    if isinstance(source, list):
        return "records", source
    if hasattr(source, "to_pylist"):  # an Arrow table
        return "table", source.to_pylist()
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        return "frame", source.to_dict(orient="records")
    raise InvalidInputError(
        "feedback comes from a file path, a DataFrame, an Arrow table or a list of records, "
        f"got {type(source).__name__}",
        field="source",
    )


def _read_file(path: Path, kind: str) -> list[Any]:
    import orjson

    if kind in ("jsonl", "ndjson"):
        lines: list[Any] = []
        for n, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                lines.append(_Unreadable(f"line {n}: not JSON ({exc})"))
        return lines
    if kind == "json":
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"{path.name}: not JSON ({exc})", field="file") from None
        if not isinstance(document, list):
            raise InvalidInputError(
                f"{path.name}: a JSON file holds a list of records", field="file"
            )
        return document
    if kind == "csv":
        import pyarrow as pa
        from pyarrow import csv

        try:
            # Identifiers stay text (a request id of digits, a key with leading zeros).
            text = {"request_id": pa.string(), "model": pa.string(), "time": pa.string()}
            table = csv.read_csv(path, convert_options=csv.ConvertOptions(column_types=text))
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(
                f"{path.name}: not a readable CSV ({exc})", field="file"
            ) from None
        rows: list[Any] = table.to_pylist()
        return rows
    if kind == "parquet":
        import pyarrow.parquet as pq

        records: list[Any] = pq.read_table(path).to_pylist()
        return records
    raise InvalidInputError(
        f"{path.name}: feedback files are .csv, .parquet, .jsonl/.ndjson or .json "
        "(or pass format=)",
        field="file",
    )


class _Unreadable(dict[str, Any]):
    """A line that is not JSON: rejected as such, with the parse error."""

    def __init__(self, message: str) -> None:
        super().__init__({"_unreadable": message})


def feedback_for(project: Project, request_id: str) -> list[dict[str, Any]]:
    """Every feedback record a request received, oldest first (the last one counts)."""
    page = project.events.query(kind=FEEDBACK.name, request_id=request_id, limit=1000)
    return [{"time": e.time.isoformat(), "actor": e.actor, **e.payload} for e in page.items]
