"""The online feature store: the latest row per entity of each view, read in one round trip.

::

    store = OnlineStore(project.backend("online"))          # any KeyValueStore
    store.write(
        "customer_spend", rows,                             # an Arrow table or dicts
        join_keys=["customer_id"], event_time="ts", features=["amount", "count"],
        ttl=timedelta(days=7), types={"amount": "double", "count": "int64"},
    )
    refs = [FeatureRef("customer_spend", "amount", ("customer_id",), timedelta(days=7))]
    result = store.read([{"customer_id": 42}], refs)
    result.to_dicts()   # [{"customer_id": 42, "amount": 12.5}]
    result.statuses     # [["present"]]  (or "missing", or "expired")

**Latest row wins.** One record per (view, entity key). A write replaces it only
if its event time is later, or equal with a created time later or equal (the
created time is the ``created_time`` column, or the moment of the write): a
late-arriving older row never overwrites a newer one. The check and the write
are one atomic compare-and-set in the key-value backend
(:meth:`~conveyor.kv.KeyValueStore.set_many_if_newer`), so two writers racing
cannot undo each other. Times are compared to the microsecond.

**TTL.** A value whose event time is older than ``now - ttl`` reads as missing
(``None``) with the status ``expired``; this check, made at read time, is what
decides. The key-value TTL of each record is set to what is left of its life
(event time + ttl - now) plus :data:`GRACE`, only so that stale records are
removed from the backend; a row already expired when written is not written.

**Key layout** (ready for Redis Cluster)::

    f:{<join key>=<value>[&<join key>=<value>...]}:<view>

e.g. ``f:{customer_id=42}:customer_spend``, under the store's prefix. The part in
braces is a Redis Cluster hash tag: every view of one entity lands in one slot.
Join keys are in name order; names and values are percent-encoded
(:func:`urllib.parse.quote` with nothing safe), so no value can contain ``{``,
``}``, ``:``, ``=`` or ``&`` and two distinct keys never collide. An ``int``
value and the ``str`` of the same digits name the same entity (``42`` and
``"42"``); other types (floats, bools, ``None``) are refused as key values.

**Record.** orjson of ``{"e": event µs, "c": created µs, "v": {feature: value},
"x": {feature: tag}}``. JSON keeps ``int``, ``float``, ``str``, ``bool``, ``None``
and lists of them apart; ``x`` tags what JSON alone would lose: timestamps
(``dt``, ISO 8601 with the offset, or naive), dates (``d``), bytes (``b``,
base64) and NaN or infinite floats (``fl``). orjson rather than msgpack: it is
already a dependency, it decodes a 3-feature record in about a microsecond,
and a record stays readable with ``redis-cli``; msgpack would add a
dependency and still need an extension type for timestamps.

Importing this module imports neither Arrow nor a backend driver.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import quote

import orjson

from conveyor.errors import InvalidInputError
from conveyor.kv import KeyValueStore, Versioned

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "GRACE",
    "WRITE_BATCH",
    "FeatureRef",
    "OnlineResult",
    "OnlineStore",
    "Status",
    "Written",
    "entity_key",
]

Status = Literal["present", "missing", "expired"]

#: Added to each record's backend TTL, so clocks a little apart on two machines never
#: remove a record its reader still counts as live (the read-time check decides).
GRACE = timedelta(minutes=1)
#: Keys per compare-and-set call: each call is atomic, and one Redis script never blocks
#: the server for long.
WRITE_BATCH = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1  # what orjson stores as an integer


class FeatureRef(NamedTuple):
    """One feature to read: its view, its name, the view's join keys and TTL."""

    view: str
    feature: str
    join_keys: tuple[str, ...]
    ttl: timedelta | None = None


class Written(NamedTuple):
    """What one :meth:`OnlineStore.write` did."""

    rows: int  #: rows given
    keys: int  #: distinct entity keys among them
    written: int  #: keys whose record was replaced or created
    kept: int  #: keys whose stored record was newer, so kept
    expired: int  #: keys whose latest row was already past its TTL: not written


# -- keys ---------------------------------------------------------------------


def _key_part(name: str, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif hasattr(value, "__index__") and not isinstance(value, bool):  # numpy integers
        text = str(value.__index__())
    else:
        shown = "missing (None)" if value is None else f"a {type(value).__name__} ({value!r})"
        raise InvalidInputError(
            f"join key {name!r} is {shown}; a join key value is an int or a str",
            field=name,
        )
    if not (text.isascii() and text.isalnum()):
        text = quote(text, safe="")
    return text


def entity_key(view: str, join_keys: Sequence[str], row: Mapping[str, Any]) -> str:
    """The key-value key of ``view``'s record for the entity in ``row`` (see the module)."""
    parts = []
    for name in sorted(join_keys):
        try:
            value = row[name]
        except KeyError:
            raise InvalidInputError(
                f"an entity row has no join key {name!r} (view {view!r} is keyed by "
                f"{', '.join(join_keys)})",
                field=name,
            ) from None
        parts.append(f"{quote(name, safe='')}={_key_part(name, value)}")
    return f"f:{{{'&'.join(parts)}}}:{quote(view, safe='')}"


# -- values -------------------------------------------------------------------

_SCALARS: dict[str, tuple[str, ...]] = {
    "int": (
        "int",
        "integer",
        "bigint",
        "smallint",
        "tinyint",
        "long",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    ),
    "float": ("float", "double", "real", "float16", "float32", "float64"),
    "str": ("str", "string", "utf8", "large_string", "large_utf8", "varchar", "text"),
    "bool": ("bool", "boolean"),
    "timestamp": ("timestamp", "datetime", "timestamptz"),
    "date": ("date", "date32", "date64"),
    "bytes": ("bytes", "binary", "large_binary", "blob"),
}
_KIND_OF = {alias: kind for kind, aliases in _SCALARS.items() for alias in aliases}


def _kind(type_name: str, field: str) -> tuple[str, bool]:
    """(scalar kind, is a list) of a declared type name; unknown names are refused."""
    name = type_name.strip().lower().replace(" ", "")
    is_list = False
    for start, end in (("list<", ">"), ("list[", "]"), ("array<", ">"), ("", "[]")):
        if start and name.startswith(start) and name.endswith(end):
            name, is_list = name[len(start) : -len(end)], True
            break
        if not start and name.endswith(end):
            name, is_list = name[: -len(end)], True
            break
    if name.startswith("timestamp"):  # timestamp[us, tz=UTC], timestamp with time zone
        name = "timestamp"
    kind = _KIND_OF.get(name)
    if kind is None:
        known = ", ".join(sorted(_KIND_OF))
        raise InvalidInputError(
            f"feature {field!r} is declared as {type_name!r}, a type the online store does "
            f"not know; known: {known} (and list<...> of one)",
            field=field,
        )
    return kind, is_list


def _fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "timestamp":
        return isinstance(value, datetime)
    if kind == "date":
        return isinstance(value, date) and not isinstance(value, datetime)
    return isinstance(value, bytes | bytearray | memoryview)  # bytes


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value it holds; a datetime subclass as a datetime."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime) and type(value) is not datetime:  # pandas.Timestamp
        return datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
        )
    return value


def _check_type(field: str, declared: tuple[str, bool], value: Any, row: int) -> Any:
    """The value, if it is of the declared type (an int in a float feature becomes a float)."""
    if value is None:
        return None
    kind, is_list = declared
    items = value if is_list and isinstance(value, list | tuple) else None
    ok = (
        _fits(kind, value)
        if not is_list
        else items is not None and all(v is None or _fits(kind, _native(v)) for v in items)
    )
    if not ok:
        wanted = f"list<{kind}>" if is_list else kind
        raise InvalidInputError(
            f"row {row}: feature {field!r} is declared {wanted}, got "
            f"{type(value).__name__} ({value!r:.80}); nothing was written",
            field=field,
        )
    if kind == "float":
        if items is not None:
            return [None if v is None else float(_native(v)) for v in items]
        return float(value)
    return value


def _encode(field: str, value: Any, tags: dict[str, str], row: int) -> Any:
    """The JSON value of one feature value, tagging in ``tags`` what JSON would lose."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT_MAX:
            raise InvalidInputError(
                f"row {row}: feature {field!r} holds an integer beyond 64 bits", field=field
            )
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        tags[field] = "fl"
        return repr(value)  # "nan", "inf", "-inf"
    if isinstance(value, datetime):
        tags[field] = "dt"
        return value.isoformat()
    if isinstance(value, date):
        tags[field] = "d"
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        tags[field] = "b"
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        items = [_native(v) for v in value]
        for v in items:
            if not (
                v is None
                or isinstance(v, bool | str)
                or (isinstance(v, int) and _INT_MIN <= v <= _UINT_MAX)
                or (isinstance(v, float) and math.isfinite(v))
            ):
                raise InvalidInputError(
                    f"row {row}: feature {field!r} is a list holding {v!r}; a list feature "
                    "holds finite numbers, strings, bools or None",
                    field=field,
                )
        return items
    raise InvalidInputError(
        f"row {row}: feature {field!r} holds a {type(value).__name__} ({value!r:.80}); the "
        "online store keeps int, float, str, bool, None, timestamps, dates, bytes and lists",
        field=field,
    )


def _decode_value(tag: str, value: Any) -> Any:
    if tag == "dt":
        return datetime.fromisoformat(value)
    if tag == "d":
        return date.fromisoformat(value)
    if tag == "b":
        return base64.b64decode(value)
    if tag == "fl":
        return float(value)
    return value


def _micros(when: Any, field: str, row: int) -> int:
    """Microseconds since 1970 of a datetime (naive means UTC)."""
    when = _native(when)
    if not isinstance(when, datetime):
        shown = "missing (None)" if when is None else f"a {type(when).__name__} ({when!r:.40})"
        raise InvalidInputError(
            f"row {row}: {field!r} is {shown}; it must be a timestamp (datetime)", field=field
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta: timedelta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _ttl_micros(ttl: timedelta | None, field: str) -> int | None:
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidInputError(
            f"{field} is a positive timedelta (or None: never expires), got {ttl!r}", field=field
        )
    return (ttl.days * 86_400 + ttl.seconds) * 1_000_000 + ttl.microseconds


def _rows(rows: Any, what: str) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping):
        raise InvalidInputError(f"{what} is a table or a list of rows, not one mapping", field=what)
    if hasattr(rows, "to_pylist") and hasattr(rows, "schema"):  # an Arrow table or batch
        return list(rows.to_pylist())
    out = list(rows)
    for i, row in enumerate(out):
        if not isinstance(row, Mapping):
            raise InvalidInputError(
                f"{what}: row {i} is a {type(row).__name__}, not a mapping of column to value",
                field=what,
            )
    return out


def _names(values: Iterable[str], field: str) -> tuple[str, ...]:
    names = (values,) if isinstance(values, str) else tuple(values)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidInputError(f"{field} is a non-empty list of column names", field=field)
    return names


def _entity_part(
    view: str, names: tuple[str, ...], heads: tuple[str, ...], row: Mapping[str, Any]
) -> str:
    """``f:{k1=v1&k2=v2}:``, the start of the keys of every view keyed by ``names`` (sorted):
    :func:`entity_key` without the view, ``heads`` being ``f:{k1=``, ``&k2=`` (encoded)."""
    parts = []
    for name, head in zip(names, heads, strict=True):
        try:
            value = row[name]
        except KeyError:
            raise InvalidInputError(
                f"an entity row has no join key {name!r} (view {view!r} is keyed by "
                f"{', '.join(names)})",
                field=name,
            ) from None
        # An int is the usual key, and its digits never need encoding.
        parts.append(head + (str(value) if type(value) is int else _key_part(name, value)))
    parts.append("}:")
    return "".join(parts)


def _iso(micros: int) -> str:
    """ISO 8601 (UTC, ``+00:00``) of microseconds since 1970, as ``datetime.isoformat``
    writes it; orjson formats a datetime in a fifth of the time ``isoformat`` takes."""
    return orjson.dumps(_from_micros(micros))[1:-1].decode()


#: Read plans kept per store (distinct lists of refs; a feature service reads one).
_PLANS = 256
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read a list of refs, worked out once: the keys to build and who reads what."""

    refs: tuple[FeatureRef, ...]
    names: tuple[str, ...]
    features: tuple[str, ...]  #: each ref's feature name (the keys of a ``read_dicts`` row)
    ttl_us: tuple[int | None, ...]
    #: distinct join key sets: (a view keyed by them, for errors; the names sorted; heads)
    entity_sets: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    #: per (view, join keys) group: (its entity set, the view encoded)
    groups: tuple[tuple[int, str], ...]
    members: tuple[tuple[tuple[int, str], ...], ...]  #: per group: (ref index, feature)
    #: per group: the index of its first ref when all its refs have one TTL, else -1
    uniform: tuple[int, ...]
    entity_columns: tuple[str, ...]

    @classmethod
    def of(cls, refs: Sequence[FeatureRef | tuple[Any, ...]], full_names: bool) -> _Plan:
        plan = [r if isinstance(r, FeatureRef) else FeatureRef(*r) for r in refs]
        names = [f"{r.view}__{r.feature}" if full_names else r.feature for r in plan]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInputError(
                f"features {', '.join(twice)} are asked for twice (or by two views); "
                "pass full_names=True to name columns view__feature",
                field="refs",
            )
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, str]]] = {}
        entity_sets: dict[tuple[str, ...], tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        entity_columns: dict[str, None] = {}
        for j, ref in enumerate(plan):
            jk = _names(ref.join_keys, "join_keys")
            ordered = tuple(sorted(jk))
            groups.setdefault((ref.view, ordered), []).append((j, ref.feature))
            if ordered not in entity_sets:
                heads = tuple(
                    ("f:{" if i == 0 else "&") + quote(k, safe="") + "="
                    for i, k in enumerate(ordered)
                )
                entity_sets[ordered] = (ref.view, ordered, heads)
            entity_columns.update(dict.fromkeys(jk))
        set_index = {ordered: i for i, ordered in enumerate(entity_sets)}
        ttl_us = tuple(_ttl_micros(r.ttl, f"ttl of {r.view}") for r in plan)
        return cls(
            refs=tuple(plan),
            names=tuple(names),
            features=tuple(r.feature for r in plan),
            ttl_us=ttl_us,
            entity_sets=tuple(entity_sets.values()),
            groups=tuple((set_index[jk], quote(view, safe="")) for view, jk in groups),
            members=tuple(tuple(m) for m in groups.values()),
            uniform=tuple(
                m[0][0] if len({ttl_us[j] for j, _ in m}) == 1 else -1 for m in groups.values()
            ),
            entity_columns=tuple(entity_columns),
        )


def _fill(
    plan: _Plan,
    at_row: list[int],
    records: list[Any],
    cutoffs: list[int | None],
    when_of: Callable[[int], Any],
) -> tuple[list[Any], list[Status], list[Any]]:
    """One entity row's values, statuses and event times (``when_of(µs)``, once a record)."""
    n = len(plan.refs)
    values: list[Any] = [None] * n
    statuses: list[Status] = ["missing"] * n
    times: list[Any] = [None] * n
    members, uniform = plan.members, plan.uniform
    for g, at in enumerate(at_row):
        rec = records[at]
        if rec is None:
            continue
        event_us = rec["e"]
        when = when_of(event_us)
        stored = rec["v"]
        tags = rec.get("x")
        first = uniform[g]
        if first >= 0 and not tags:  # one TTL for the group and nothing to decode
            cutoff = cutoffs[first]
            live = cutoff is None or event_us >= cutoff
            for j, feature in members[g]:
                times[j] = when
                value = stored.get(feature, _ABSENT)
                if value is not _ABSENT:
                    if live:
                        values[j] = value
                        statuses[j] = "present"
                    else:
                        statuses[j] = "expired"
            continue
        for j, feature in members[g]:
            times[j] = when
            value = stored.get(feature, _ABSENT)
            if value is _ABSENT:
                continue  # a record written before the view had this feature
            cutoff = cutoffs[j]
            if cutoff is not None and event_us < cutoff:
                statuses[j] = "expired"
                continue
            if tags and feature in tags:
                value = _decode_value(tags[feature], value)
            values[j] = value
            statuses[j] = "present"
    return values, statuses, times


def _latest_of_rows(
    view: str,
    table: Sequence[Mapping[str, Any]],
    keys_: tuple[str, ...],
    event_time: str,
    created_time: str | None,
    feats: tuple[str, ...],
    declared: Mapping[str, tuple[str, bool]],
    now_us: int,
) -> dict[str, tuple[int, int, bytes]]:
    """``{key: (event µs, created µs, record)}`` of the latest row per entity, every value
    of every row checked (the first bad one refused, naming its row and field)."""
    latest: dict[str, tuple[int, int, bytes]] = {}
    for i, row in enumerate(table):
        key = entity_key(view, keys_, row)
        event_us = _micros(row.get(event_time), event_time, i)
        created_us = (
            now_us if created_time is None else _micros(row.get(created_time), created_time, i)
        )
        values: dict[str, Any] = {}
        tags: dict[str, str] = {}
        for f in feats:
            if f not in row:
                raise InvalidInputError(
                    f"row {i} has no feature {f!r} (view {view!r}); nothing was written",
                    field=f,
                )
            value = _native(row[f])
            if f in declared:
                value = _check_type(f, declared[f], value, i)
            values[f] = _encode(f, value, tags, i)
        seen = latest.get(key)
        if seen is None or (event_us, created_us) >= seen[:2]:
            record: dict[str, Any] = {"e": event_us, "c": created_us, "v": values}
            if tags:
                record["x"] = tags
            latest[key] = (event_us, created_us, orjson.dumps(record))
    return latest


# -- the store ----------------------------------------------------------------


class OnlineStore:
    """Latest feature values per entity over a :class:`~conveyor.kv.KeyValueStore`."""

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv
        self._plans: dict[Any, _Plan] = {}

    @property
    def kv(self) -> KeyValueStore:
        return self._kv

    def write(
        self,
        view: str,
        rows: pa.Table | Sequence[Mapping[str, Any]],
        *,
        join_keys: Sequence[str],
        event_time: str,
        features: Sequence[str],
        created_time: str | None = None,
        ttl: timedelta | None = None,
        types: Mapping[str, str] | None = None,
    ) -> Written:
        """Store the latest row per entity of ``view``, unless a newer one is stored.

        Every row is checked first (join keys, times, and with ``types`` each
        feature's declared type): one bad value refuses the whole write with an
        :class:`InvalidInputError` naming the field, and nothing is written.
        Keys are then written in atomic batches of :data:`WRITE_BATCH`; if the
        backend fails in between, the batches before are written (writing the
        same rows again is harmless: equal times overwrite with equal values).
        """
        keys_ = _names(join_keys, "join_keys")
        feats = _names(features, "features")
        ttl_us = _ttl_micros(ttl, "ttl")
        declared = {f: _kind(t, f) for f, t in (types or {}).items() if f in feats}
        now_us = _micros(datetime.now(UTC), "now", 0)

        latest = None
        if hasattr(rows, "column_names") and hasattr(rows, "num_rows"):  # an Arrow table
            from conveyor.features.online_arrow import latest_of_table

            count = int(rows.num_rows)
            latest = latest_of_table(
                view, rows, keys_, event_time, created_time, feats, declared, now_us
            )
        if latest is None:  # rows as dicts, or a column only the row-by-row checks take
            table = _rows(rows, "rows")
            count = len(table)
            latest = _latest_of_rows(
                view, table, keys_, event_time, created_time, feats, declared, now_us
            )

        batch: dict[str, Versioned] = {}
        expired = 0
        for key, (event_us, created_us, data) in latest.items():
            life: float | None = None
            if ttl_us is not None:
                left_us = event_us + ttl_us - now_us
                if left_us <= 0:
                    expired += 1  # nothing stored older can be live either
                    continue
                life = left_us / 1e6 + GRACE.total_seconds()
            batch[key] = Versioned(data, (float(event_us), float(created_us)), life)
        written = 0
        items = list(batch.items())
        for start in range(0, len(items), WRITE_BATCH):
            written += self._kv.set_many_if_newer(dict(items[start : start + WRITE_BATCH]))
        return Written(count, len(latest), written, len(batch) - written, expired)

    def read(
        self,
        entities: Sequence[Mapping[str, Any]] | pa.Table,
        refs: Sequence[FeatureRef | tuple[Any, ...]],
        *,
        now: datetime | None = None,
        full_names: bool = False,
    ) -> OnlineResult:
        """The values of ``refs`` for each entity row, in one key-value round trip.

        Each (row, feature) has a status: ``present``; ``missing`` (no record, or a
        record without that feature), or ``expired`` (its event time is older than
        ``now - ttl``): both read as ``None``. Columns are named by feature, or
        ``view__feature`` with ``full_names`` (required when two views share a
        feature name). A backend that does not answer raises
        :class:`~conveyor.errors.BackendUnavailableError`: never an empty vector.
        """
        plan = self._plan(refs, full_names)
        rows = _rows(entities, "entities")
        cutoffs = self._cutoffs(plan, now)
        row_keys, records = self._fetch(plan, rows)
        values: list[list[Any]] = []
        statuses: list[list[Status]] = []
        event_times: list[list[datetime | None]] = []
        for at_row in row_keys:
            row_values, row_status, row_times = _fill(plan, at_row, records, cutoffs, _from_micros)
            values.append(row_values)
            statuses.append(row_status)
            event_times.append(row_times)
        entity_rows = [{c: row.get(c) for c in plan.entity_columns} for row in rows]
        return OnlineResult(
            entity_rows, list(plan.names), list(plan.refs), values, statuses, event_times
        )

    def read_dicts(
        self,
        entities: Sequence[Mapping[str, Any]],
        refs: Sequence[FeatureRef | tuple[Any, ...]],
        *,
        now: datetime | None = None,
    ) -> list[dict[str, dict[str, Any]]]:
        """:meth:`read`, shaped as the serving path answers: per entity row
        ``{"features": {feature: value}, "status": {feature: status},
        "event_time": {feature: ISO 8601 string or None}}``, keyed by feature name
        (of two refs with one name, the later wins). Same round trip, same statuses."""
        plan = self._plan(refs, False)
        rows = _rows(entities, "entities")
        cutoffs = self._cutoffs(plan, now)
        row_keys, records = self._fetch(plan, rows)
        features = plan.features
        out = []
        for at_row in row_keys:
            row_values, row_status, row_times = _fill(plan, at_row, records, cutoffs, _iso)
            out.append(
                {
                    "features": dict(zip(features, row_values, strict=True)),
                    "status": dict(zip(features, row_status, strict=True)),
                    "event_time": dict(zip(features, row_times, strict=True)),
                }
            )
        return out

    @staticmethod
    def _cutoffs(plan: _Plan, now: datetime | None) -> list[int | None]:
        """Per ref, the oldest event time (µs) still live at ``now``."""
        now_us = time.time_ns() // 1000 if now is None else _micros(now, "now", 0)
        return [None if t is None else now_us - t for t in plan.ttl_us]

    def _fetch(self, plan: _Plan, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
        """Per row, the index of each group's record; the records, decoded (None: absent).
        One key per (view, join keys) group and row, each fetched once, in one round trip."""
        index: dict[str, int] = {}
        row_keys: list[list[int]] = []
        sets, groups = plan.entity_sets, plan.groups
        for row in rows:
            parts = [_entity_part(view, names, heads, row) for view, names, heads in sets]
            at_row = []
            for s, view in groups:
                key = parts[s] + view
                at = index.get(key)
                if at is None:
                    at = index[key] = len(index)
                at_row.append(at)
            row_keys.append(at_row)
        raw = self._kv.get_many(list(index)) if index else []
        loads = orjson.loads
        return row_keys, [None if r is None else loads(r) for r in raw]

    def _plan(self, refs: Sequence[FeatureRef | tuple[Any, ...]], full_names: bool) -> _Plan:
        """The read plan of ``refs``: built once per distinct list of refs, then reused."""
        try:
            cache_key: Any = (tuple(refs), full_names)
            plan = self._plans.get(cache_key)
        except TypeError:  # an unhashable ref (join keys as a list): no caching
            cache_key, plan = None, None
        if plan is None:
            plan = _Plan.of(refs, full_names)
            if cache_key is not None:
                if len(self._plans) >= _PLANS:
                    self._plans.clear()
                self._plans[cache_key] = plan
        return plan


@dataclass(frozen=True, slots=True)
class OnlineResult:
    """Feature values per entity row, with a status and an event time per value."""

    entities: list[dict[str, Any]]  #: each row's join key values
    names: list[str]  #: the feature columns, in the order of the refs
    refs: list[FeatureRef]
    values: list[list[Any]]  #: [row][feature]
    statuses: list[list[Status]]  #: [row][feature]: present, missing or expired
    event_times: list[list[datetime | None]]  #: [row][feature]: the record's event time (UTC)

    def __len__(self) -> int:
        return len(self.values)

    def value(self, row: int, name: str) -> Any:
        return self.values[row][self.names.index(name)]

    def status(self, row: int, name: str) -> Status:
        return self.statuses[row][self.names.index(name)]

    def to_dicts(self, *, metadata: bool = False) -> list[dict[str, Any]]:
        """One dict per row: join keys, then features (and ``<name>__status``,
        ``<name>__event_time`` with ``metadata``)."""
        out = []
        for i, keys in enumerate(self.entities):
            row = dict(keys)
            row.update(zip(self.names, self.values[i], strict=True))
            if metadata:
                for j, name in enumerate(self.names):
                    row[f"{name}__status"] = self.statuses[i][j]
                    row[f"{name}__event_time"] = self.event_times[i][j]
            out.append(row)
        return out

    def to_table(self, *, metadata: bool = False) -> pa.Table:
        """The rows as an Arrow table (column types inferred from the values)."""
        import pyarrow as pa

        columns: dict[str, pa.Array] = {
            c: pa.array([e[c] for e in self.entities]) for c in (self.entities[0] if self else {})
        }
        for j, name in enumerate(self.names):
            columns[name] = pa.array([row[j] for row in self.values])
            if metadata:
                columns[f"{name}__status"] = pa.array(
                    [row[j] for row in self.statuses], pa.string()
                )
                columns[f"{name}__event_time"] = pa.array(
                    [row[j] for row in self.event_times], pa.timestamp("us", "UTC")
                )
        return pa.table(columns)
