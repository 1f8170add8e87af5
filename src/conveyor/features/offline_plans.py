"""The SQL behind :mod:`conveyor.features.offline`: a view's source, and the plans that join it.

Every plan answers the question the module docstring of ``offline`` states, for a
set of entity rows: which feature row of the view is visible at each row's time
and wins. They differ in cost, and the fastest one depends on the entity frame:

- **hash** (the default for most rows): a hash join of the view's rows with the
  entity rows of the same key whose times can see them (``e - ttl < e <= t``,
  and ``coalesce(c, e) <= t`` as known at), and per entity row the winner by
  ``arg_max`` over ``(event, created, source order)``. Cheap when each key has
  a few entity rows, as a training frame of one row per example usually has:
  the join touches each view row once per entity row of its key.
- **asof** (for keys with many entity rows): each view is first cut to its
  "record setters" (sorted by the time a row became known, ``max(e, c)`` or
  ``e``, a row is kept if it beats every row known before it), then one ASOF
  join finds, for each entity row, the last setter known by then; the TTL is
  checked on that row (it has the latest event time of all the known rows, so
  if it has expired, every one has). Its cost does not grow with the number of
  entity rows per key.
- **window**: the same setters, joined by one ordered pass over the union of
  both frames (``last_value(... IGNORE NULLS)``) instead of ASOF.

``plan="auto"`` sends the entity rows of keys with at most
:data:`HEAVY_KEY_ROWS` rows in the entity frame to the hash plan and the others
to the asof plan, in one query per view. Before any plan, the view is cut to
the rows that can be visible from some entity row: event time after the
earliest entity time minus the TTL, known by the latest entity time.
``benchmarks/features_offline.py`` measures the plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from conveyor.features.offline import ViewFrame

Plan = Literal["auto", "hash", "asof", "window"]
PLANS: tuple[str, ...] = ("auto", "hash", "asof", "window")

#: With ``plan="auto"``, entity rows whose join key occurs more often than this in
#: the entity frame are joined by the asof plan (whose cost does not grow with it).
#: Measured on one view of 1M rows, 100k entity rows, 10 view rows per entity row of a
#: key: the hash plan took 218 ms of CPU at 2 entity rows per key, 579 at 16, 1,588 at
#: 64; the asof plan 440 to 610 ms throughout.
HEAVY_KEY_ROWS = 16

#: Pack the hash plan's order into one integer when it fits (tests switch it off to
#: check the other form).
PACK = True

ROW = "__conveyor_row"
MIN_NS = -(1 << 63)
MAX_NS = (1 << 63) - 1


@dataclass(frozen=True)
class EntityTimes:
    """The earliest and latest entity time (ns)."""

    lo: int
    hi: int


@dataclass(frozen=True)
class TimeRange:
    """A time column's smallest and largest value (ns; ``None`` if it has none), and nulls."""

    lo: int | None
    hi: int | None
    nulls: bool


@dataclass(frozen=True)
class Packing:
    """The order that picks the winner, ``(event, created, source order)``, as one integer.

    ``arg_max`` over one integer costs a third of what it costs over a row of three
    values; the three fit in 126 bits when the event and created times are counted
    in their column's unit (microseconds for most Parquet files) from their least
    value. A null created time packs as 0, below every other.
    """

    ev0: int
    ev_unit: int
    cr0: int | None  # None: the view has no created column
    cr_unit: int
    cr_shift: int
    tb_shift: int

    def key(self, s: str) -> str:
        # Parenthesised: << binds looser than +.
        parts = [f"((({s}._ev - {self.ev0}) // {self.ev_unit})::HUGEINT << {self.cr_shift})"]
        if self.cr0 is not None:
            created = f"coalesce(({s}._cr - {self.cr0}) // {self.cr_unit} + 1, 0)"
            parts.append(f"({created}::HUGEINT << {self.tb_shift})")
        parts.append(f"{s}._tb")
        return "(" + " + ".join(parts) + ")"


def packing(
    view: ViewFrame,
    src: Source,
    con: duckdb.DuckDBPyConnection,
    times: EntityTimes,
    *,
    known_at: bool,
) -> Packing | None:
    """How to pack the winner's order of ``view``'s rows that can be visible, or ``None``
    when it does not fit in 126 bits (the plan then compares rows of three values)."""
    ttl = None if view.ttl is None else _ns_of_ttl(view.ttl)
    columns = [view.event_time] + ([view.created_time] if view.created_time else [])
    ranges = src.time_ranges(con, columns)
    ev = ranges[view.event_time]
    if ev.lo is None or ev.hi is None:
        return Packing(0, 1, None, 1, src.tiebreak_bits, 0)  # no row has an event time
    # The rows the plan reads have lo - ttl < event <= hi (view_sql's cut).
    ev_lo = ev.lo if ttl is None else max(ev.lo, times.lo - ttl + 1)
    ev_hi = min(ev.hi, times.hi)
    ev_unit = _unit(src.types[view.event_time])
    ev0 = ev_lo - ev_lo % ev_unit
    ev_bits = _bits(max(0, ev_hi - ev0) // ev_unit + 1)
    cr0, cr_unit, cr_bits = None, 1, 0
    if view.created_time:
        cr = ranges[view.created_time]
        cr_unit = _unit(src.types[view.created_time])
        if cr.lo is None or cr.hi is None:
            cr0, cr_bits = 0, 1  # all null: every row packs 0
        else:
            cr_hi = min(cr.hi, times.hi) if known_at else cr.hi
            cr0 = cr.lo - cr.lo % cr_unit
            cr_bits = _bits(max(0, cr_hi - cr0) // cr_unit + 2)
    if ev_bits + cr_bits + src.tiebreak_bits > 126:
        return None
    tb_shift = src.tiebreak_bits
    return Packing(ev0, ev_unit, cr0, cr_unit, tb_shift + cr_bits, tb_shift)


@dataclass
class Source:
    """A view's source inside one connection: the SQL that reads it and its column types."""

    relation: str
    tiebreak: str
    types: dict[str, str]
    arrow_types: dict[str, Any]
    #: The Parquet files, or ``None`` for an Arrow table.
    files: list[str] | None
    #: Every ``tiebreak`` value is below ``2 ** tiebreak_bits``.
    tiebreak_bits: int

    @classmethod
    def open(
        cls, con: duckdb.DuckDBPyConnection, view: ViewFrame, alias: str, files: list[str] | None
    ) -> Source:
        """``files``: the view's Parquet files, or ``None`` when its source is an Arrow table."""
        import duckdb

        try:
            if files is None:
                source = view.source
                assert not isinstance(source, str | Path)
                con.register(alias, _with_row_numbers(source))
                relation, tiebreak = alias, q(ROW)
                bits = _bits(source.num_rows)
                arrow_types = {f.name: f.type for f in source.schema}
            else:
                listed = ", ".join(literal(f) for f in files)
                relation = f"read_parquet([{listed}], union_by_name = true)"
                sizes = con.sql(
                    f"SELECT max(num_rows) FROM parquet_file_metadata([{listed}])"
                ).fetchall()
                row_bits = _bits(int(sizes[0][0] or 0))
                tiebreak = f"(file_index::BIGINT << {row_bits}) + file_row_number"
                bits = row_bits + _bits(len(files))
                arrow_types = {}
            described = con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        except duckdb.Error as exc:
            raise InvalidInputError(
                f"view {view.name!r}: cannot read its source: {exc}", field="source", view=view.name
            ) from exc
        types = {str(row[0]): str(row[1]) for row in described}
        declared = (*view.join_keys, view.event_time, *view.features)
        if view.created_time:
            declared += (view.created_time,)
        for col in declared:
            if col not in types:
                raise InvalidInputError(
                    f"view {view.name!r}: its source has no column {col!r} "
                    f"(it has {', '.join(sorted(types))})",
                    field=col,
                    view=view.name,
                )
        for stamp in (view.event_time, view.created_time):
            if stamp and not _is_time(types[stamp]):
                raise InvalidInputError(
                    f"view {view.name!r}: column {stamp!r} is {types[stamp]}, not a timestamp",
                    field=stamp,
                    view=view.name,
                )
        return cls(relation, tiebreak, types, arrow_types, files, bits)

    def time_ranges(
        self, con: duckdb.DuckDBPyConnection, columns: Sequence[str]
    ) -> dict[str, TimeRange]:
        """Each time column's smallest and largest value (ns) and whether it has nulls:
        from the Parquet files' statistics when every row group has them (one query over
        the footers), else by a query over the rows."""
        found: dict[str, TimeRange] = {}
        if self.files is not None:
            listed = ", ".join(literal(f) for f in self.files)
            parts = []
            for i, column in enumerate(columns):
                kind = self.types[column]
                lo = ns_expr(f"TRY_CAST(stats_min_value AS {kind})", kind)
                hi = ns_expr(f"TRY_CAST(stats_max_value AS {kind})", kind)
                parts.append(
                    f"""SELECT {i}, min({lo}), max({hi}),
                               count(*) FILTER ({lo} IS NULL OR {hi} IS NULL),
                               sum(stats_null_count), count(stats_null_count), count(*),
                               sum(row_group_num_rows)
                        FROM meta WHERE path_in_schema = {literal(column)}"""
                )
            rows = con.sql(
                f"""WITH meta AS (SELECT * FROM parquet_metadata([{listed}])),
                         total AS (SELECT sum(num_rows) AS n FROM parquet_file_metadata([{listed}]))
                    SELECT p.*, total.n FROM ({" UNION ALL ".join(parts)}) p, total"""
            ).fetchall()
            for i, low, high, unknown, nulls, with_nulls, groups, count, total in rows:
                # Usable when every row group of every file has the column and its statistics.
                if groups and not unknown and with_nulls == groups and count == total:
                    found[columns[i]] = TimeRange(int(low), int(high), bool(nulls))
        for column in columns:
            if column in found:
                continue
            value = self.ns(column)
            low, high, nulls = con.sql(
                f"SELECT min({value}), max({value}), count(*) - count({value}) FROM {self.relation}"
            ).fetchall()[0]
            found[column] = TimeRange(
                None if low is None else int(low), None if high is None else int(high), bool(nulls)
            )
        return found

    def ns(self, column: str | None) -> str:
        assert column is not None
        return ns_expr(q(column), self.types[column])

    def cast(self, column: str, values: Any) -> Any:
        """Give a result column back its source's Arrow type (DuckDB may widen a few)."""
        wanted = self.arrow_types.get(column)
        if wanted is None or values.type == wanted:
            return values
        try:
            return values.cast(wanted)
        except Exception:  # an exotic type DuckDB changed for good: keep DuckDB's
            return values


# -- the plans -------------------------------------------------------------------


def view_sql(
    view: ViewFrame,
    src: Source,
    ent: str,
    times: EntityTimes,
    *,
    as_known_at: bool,
    plan: Plan,
    heavy_rows: int,
    packed: Packing | None = None,
) -> str:
    """``_rid`` and the features ``_f0 .. _fN`` of ``view``, for the rows of ``ent`` that
    see a row of it (and, under the asof and window plans, for others too, with nulls).

    ``ent`` is a table of the entity rows with the view's keys as ``_k0 .. _kM``,
    ``_t`` (ns), ``_rid`` and ``_n`` (the rows of its key); ``heavy_rows``, how
    many rows have ``_n > HEAVY_KEY_ROWS`` (they take the asof plan under "auto");
    ``packed``, the hash plan's order as one integer (:func:`packing`), if it fits.
    """
    if plan not in PLANS:
        raise InvalidInputError(f"unknown plan {plan!r}: use {', '.join(PLANS)}", field="plan")
    nkeys, nfeat = len(view.join_keys), len(view.features)
    keys = [f"_k{i}" for i in range(nkeys)]
    feats = [f"_f{j}" for j in range(nfeat)]
    known_at = bool(as_known_at and view.created_time)
    ttl = None if view.ttl is None else _ns_of_ttl(view.ttl)
    ev, cr = src.ns(view.event_time), (src.ns(view.created_time) if view.created_time else None)
    where = [f"{ev} <= {times.hi}"]
    if ttl is not None and times.lo - ttl >= MIN_NS:
        # Older rows have expired for every entity row (module docstring: safe for each plan).
        where.append(f"{ev} > {times.lo - ttl}")
    if known_at and cr:
        where.append(f"coalesce({cr}, {ev}) <= {times.hi}")
    selected = [
        *(f"{q(k)} AS {a}" for k, a in zip(view.join_keys, keys, strict=True)),
        f"{ev} AS _ev",
        f"{cr or 'NULL::BIGINT'} AS _cr",
        f"{src.tiebreak} AS _tb",
        *(f"{q(f)} AS {a}" for f, a in zip(view.features, feats, strict=True)),
    ]
    ctes = [f"s AS (SELECT {', '.join(selected)} FROM {src.relation} WHERE {' AND '.join(where)})"]
    fresh = _fresh(ttl, times.lo)
    parts = []
    if plan in ("hash", "auto"):
        only = f"WHERE e._n <= {HEAVY_KEY_ROWS}" if plan == "auto" and heavy_rows else ""
        ctes.append(_hash_cte("light", keys, feats, ent, only, fresh, known_at, packed))
        parts.append(f"SELECT _rid, {', '.join(feats)} FROM light")
    heavy = plan in ("asof", "window") or (plan == "auto" and heavy_rows > 0)
    if heavy:
        subset = f"(SELECT * FROM {ent} WHERE _n > {HEAVY_KEY_ROWS})" if plan == "auto" else ent
        rows = "s"
        if plan == "auto":
            # Only the heavy keys' rows need the setter reduction.
            on = " AND ".join(f"s.{k} = h.{k}" for k in keys)
            ctes.append(
                f"sh AS (SELECT s.* FROM s SEMI JOIN (SELECT DISTINCT {', '.join(keys)} "
                f"FROM {subset}) h ON {on})"
            )
            rows = "sh"
        ctes.append(_setters_cte(rows, keys, known_at))
        how = "window" if plan == "window" else "asof"
        ctes += _ordered_ctes(how, subset, keys, feats, fresh)
        parts.append("SELECT * FROM heavy")
    # The rows come back in no order and without the entity rows nothing is visible to:
    # the caller puts them in place (cheaper than a join and a sort here).
    return f"WITH {', '.join(ctes)} {' UNION ALL '.join(parts)}"


def _hash_cte(
    name: str,
    keys: list[str],
    feats: list[str],
    ent: str,
    only: str,
    fresh: Any,
    known_at: bool,
    packed: Packing | None,
) -> str:
    on = [f"e.{k} = s.{k}" for k in keys]
    on.append("s._ev <= e._t")
    if fresh is not None:
        on.append(fresh("s._ev", "e._t"))
    if known_at:
        on.append("coalesce(s._cr, s._ev) <= e._t")
    if packed is not None:
        # arg_max_null: a winner whose value is null gives null (arg_max would skip it).
        order = packed.key("s")
        picked = ", ".join(f"arg_max_null(s.{f}, {order}) AS {f}" for f in feats)
        grouped = ""
    else:
        # A null created time loses to any other (DuckDB sorts a null field last in a row).
        order = f"(s._ev, coalesce(s._cr, {MIN_NS}), s._tb)"
        payload = "{" + ", ".join(f"{literal(f)}: s.{f}" for f in feats) + "}"
        picked = f"arg_max({payload}, {order}) AS _w"
        grouped = ", ".join(f"struct_extract(_w, {literal(f)}) AS {f}" for f in feats)
    sql = f"""
            SELECT e._rid, {picked}
            FROM {ent} e JOIN s ON {" AND ".join(on)}
            {only}
            GROUP BY e._rid"""
    if grouped:
        sql = f"SELECT _rid, {grouped} FROM ({sql})"
    return f"{name} AS ({sql})"


def _setters_cte(rows: str, keys: list[str], known_at: bool) -> str:
    key_list = ", ".join(keys)
    known = "greatest(_ev, coalesce(_cr, _ev))" if known_at else "_ev"
    return f"""
        ranked AS (
            SELECT *, {known} AS _kn,
                   row_number() OVER (
                       PARTITION BY {key_list} ORDER BY _ev, _cr NULLS FIRST, _tb
                   ) AS _rn
            FROM {rows}
        ),
        setters AS (
            SELECT * FROM ranked
            QUALIFY _rn = max(_rn) OVER (
                PARTITION BY {key_list} ORDER BY _kn
                RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            )
        )"""


def _ordered_ctes(how: str, ent: str, keys: list[str], feats: list[str], fresh: Any) -> list[str]:
    if fresh is None:
        picked = [f"s.{f} AS {f}" for f in feats]
    else:
        picked = [f"CASE WHEN {fresh('s._ev', 'e._t')} THEN s.{f} END AS {f}" for f in feats]
    on = " AND ".join(f"e.{k} = s.{k}" for k in keys)
    if how == "asof":
        return [
            f"""heavy AS (
                SELECT e._rid, {", ".join(picked)}
                FROM {ent} e ASOF LEFT JOIN setters s ON {on} AND e._t >= s._kn
            )"""
        ]
    # One ordered pass over both frames: each entity row takes the last setter at
    # or before it (setters sort before entity rows at the same time).
    key_list = ", ".join(keys)
    return [
        f"""u AS (
            SELECT {key_list}, _kn AS _at, 0 AS _side, _rn AS _ptr, NULL::BIGINT AS _rid
            FROM setters
            UNION ALL
            SELECT {key_list}, _t AS _at, 1 AS _side, NULL::BIGINT AS _ptr, _rid FROM {ent}
        )""",
        f"""m AS (
            SELECT _rid, _at AS _t, {key_list},
                   CASE WHEN _at IS NOT NULL THEN last_value(_ptr IGNORE NULLS) OVER (
                       PARTITION BY {key_list} ORDER BY _at, _side
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
                   ) END AS _ptr
            FROM u
            QUALIFY _side = 1
        )""",
        f"""heavy AS (
            SELECT e._rid, {", ".join(picked)}
            FROM m e LEFT JOIN setters s ON {on} AND e._ptr = s._rn
        )""",
    ]


def _fresh(ttl: int | None, lo: int) -> Any:
    """``fresh(ev, t)``: SQL for ``ev > t - ttl`` that cannot overflow; ``None`` without TTL."""
    if ttl is None:
        return None
    if lo - ttl >= MIN_NS:
        return lambda ev, t: f"{ev} > {t} - {ttl}"
    # Entity times within one TTL of the smallest instant: compare in 128 bits.
    return lambda ev, t: f"{ev}::HUGEINT > {t}::HUGEINT - {ttl}"


def _unit(duck_type: str) -> int:
    """Nanoseconds per step of a DuckDB time type: every value is a multiple of it."""
    t = duck_type.upper()
    if t == "DATE":
        return 86_400_000_000_000
    if t.startswith("TIMESTAMP_NS") or t.startswith("TIMESTAMPTZ_NS"):
        return 1
    if t.startswith("TIMESTAMP_MS"):
        return 1_000_000
    if t.startswith("TIMESTAMP_S"):
        return 1_000_000_000
    if t in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return 1000
    return 1


def _bits(n: int) -> int:
    """Bits for the values 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def _ns_of_ttl(ttl: timedelta) -> int:
    return (ttl // timedelta(microseconds=1)) * 1000


# -- helpers ---------------------------------------------------------------------


def _with_row_numbers(table: pa.Table) -> pa.Table:
    if ROW in table.column_names:
        raise InvalidInputError(f"a source has a column named {ROW!r}, reserved", field=ROW)
    return table.append_column(ROW, row_numbers(table.num_rows))


def row_numbers(n: int) -> pa.Array:
    import numpy as np

    return int64_array(np.arange(n, dtype=np.int64))


def int64_array(values: Any, valid: Any = None) -> pa.Array:
    """An int64 Arrow array over a NumPy array (``valid``: a bool mask, False is null).

    Built from buffers: ``pa.array(ndarray)`` imports pandas to check its argument,
    a quarter of a second the first time."""
    import numpy as np
    import pyarrow as pa

    data = pa.py_buffer(np.ascontiguousarray(values, dtype=np.int64))
    if valid is None:
        return pa.Array.from_buffers(pa.int64(), len(values), [None, data])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = len(values) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(pa.int64(), len(values), [bitmap, data], null_count=nulls)


def _is_time(duck_type: str) -> bool:
    t = duck_type.upper()
    return t.startswith("TIMESTAMP") or t == "DATE"


def ns_expr(column: str, duck_type: str) -> str:
    """Nanoseconds since the epoch, UTC; a naive timestamp is read as UTC."""
    if duck_type.upper() == "DATE":
        return f"epoch_ns({column}::TIMESTAMP)"
    return f"epoch_ns({column})"


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
