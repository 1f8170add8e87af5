"""The join of predictions and their feedback, read with DuckDB from the event log's
columnar copy and its tail (:class:`~conveyor.monitoring.query.MonitorQuery`).

:func:`labelled` gives a model's labelled predictions (each with the latest record of its
feedback, and how many earlier ones it overwrote); :func:`quarantined` the feedback that
joins no prediction, with the reason. The rules are :mod:`conveyor.monitoring.feedback`'s:
by request id and row; or by model, entity key and outcome time, the latest prediction
for the key at or before the outcome, within ``monitoring.quality.horizon``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import duckdb

    from conveyor.monitoring.quality_settings import QualitySpec
    from conveyor.project import Project

__all__ = ["Labelled", "labelled", "quarantined", "window_bounds", "window_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATE_US = 86_400_000_000  # feedback read up to a day past now: clocks of other writers


# -- reading predictions and their feedback ------------------------------------------------


@dataclass(slots=True)
class Labelled:
    """Labelled predictions of one model: one entry per labelled request row."""

    request_id: list[str] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    version: list[str] = field(default_factory=list)
    arm: list[str] = field(default_factory=list)
    time_us: list[int] = field(default_factory=list)
    output: list[Any] = field(default_factory=list)  # the row's output
    label: list[Any] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    overwritten: list[int] = field(default_factory=list)
    #: Per labelled request: its whole output as JSON text (ranking reads whole queries;
    #: named outputs are split per row), decoded on demand by :meth:`outputs_of`.
    output_texts: dict[str, str | None] = field(default_factory=dict)
    _decoded: dict[str, list[Any]] = field(default_factory=dict)
    _position: dict[str, int] = field(default_factory=dict)
    #: (version, arm, window_us) -> prediction rows in that group (labelled or not).
    predicted: dict[tuple[str, str, int], int] = field(default_factory=dict)
    feedback_records: int = 0

    def __len__(self) -> int:
        return len(self.row)

    def outputs_of(self, request_id: str) -> list[Any]:
        """Every row's output of a labelled request."""
        found = self._decoded.get(request_id)
        if found is None:
            import orjson

            text = self.output_texts.get(request_id)
            if text is not None:
                found = _per_row(orjson.loads(text))
            else:  # a one-row answer: its row's output is all of it
                if not self._position:
                    self._position.update((r, i) for i, r in enumerate(self.request_id))
                found = [self.output[self._position[request_id]]]
            self._decoded[request_id] = found
        return found


def _pred_sql(model_clause: str) -> str:
    # A view, not a table: the payload (the largest column) is read only where a query
    # needs it, after the join with the feedback, never held for every prediction. A
    # request id answered twice (a retried request) is deduplicated where it is joined.
    return f"""
    CREATE OR REPLACE TEMP VIEW preds AS
    SELECT seq, request_id, subject AS model, subject_version AS version, arm, time_us,
           coalesce("rows", 1) AS n_rows, payload
    FROM events
    WHERE kind = 'prediction' AND request_id IS NOT NULL {model_clause}
    """


_FEEDBACK_SQL = """
CREATE OR REPLACE TEMP TABLE fb AS
SELECT seq, time_us, request_id,
       json_extract_string(payload, '$.model') AS model,
       CAST(json_extract(payload, '$.row') AS BIGINT) AS "row",
       json_extract(payload, '$.label') AS label,
       CAST(json_extract(payload, '$.value') AS DOUBLE) AS value,
       json_extract(payload, '$.keys') AS keys,
       json_extract_string(payload, '$.time') AS outcome_time
FROM events WHERE kind = 'feedback'
"""


def window_bounds(since: datetime, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidInputError("since and until are aware datetimes (UTC)", field="since")
    if until <= since:
        raise InvalidInputError(
            f"until ({until.isoformat()}) must come after since ({since.isoformat()})",
            field="until",
        )
    return since, until


def labelled(
    project: Project,
    model: str,
    *,
    since: datetime,
    until: datetime | None = None,
    version: str | None = None,
    window: timedelta | None = None,
) -> Labelled:
    """The model's predictions made in ``[since, until)`` that have feedback, each with its
    latest label and value (read from the columnar copy and the log's tail)."""
    import duckdb

    from conveyor.monitoring.query import MonitorQuery
    from conveyor.monitoring.settings import monitoring_of

    since, until = window_bounds(since, until)
    spec = monitoring_of(project.spec).quality
    horizon = _horizon(spec)
    monitor = MonitorQuery(project)
    now = datetime.now(UTC)
    con = duckdb.connect()
    try:
        # Feedback comes after the prediction it judges: from `since` to now.
        fb_until = max(now, until) + timedelta(microseconds=_LATE_US)
        # One relation for both kinds: the log's tail is read once.
        monitor.relation(con, kinds=["feedback", "prediction"], since=since, until=fb_until)
        con.execute(_FEEDBACK_SQL)
        keyed = con.execute("SELECT count(*) FROM fb WHERE request_id IS NULL").fetchone()
        by_key = bool(keyed and keyed[0])
        # Entity-key feedback judges the latest prediction for its key at or before the
        # outcome: predictions after `until` (up to the horizon) take part in choosing it.
        pred_until = min(until + horizon, fb_until) if by_key else until
        # Literals, not parameters: a view's definition cannot hold parameters.
        clause = f"AND subject = {_sql_string(model)} AND time_us < {_us(pred_until)}"
        if version is not None:
            clause += f" AND subject_version = {_sql_string(str(version))}"
        con.execute(_pred_sql(clause))
        _resolve(con, by_key=by_key, horizon=horizon, model=model)
        until_us = _us(until)
        found = Labelled()
        found.feedback_records = int(_one(con, "SELECT count(*) FROM fb"))
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _labelled AS
            WITH latest AS (
                SELECT *, count(*) OVER (PARTITION BY request_id, "row") - 1 AS overwritten
                FROM resolved
                QUALIFY row_number() OVER (PARTITION BY request_id, "row" ORDER BY seq DESC) = 1
            ), joined AS (
                SELECT p.request_id, l."row", p.version, p.arm, p.time_us, p.n_rows, p.payload,
                       l.label, l.value, l.overwritten
                FROM latest l JOIN preds p USING (request_id)
                WHERE l."row" < p.n_rows AND p.time_us < $until
                  AND (l.model IS NULL OR l.model = p.model)
                QUALIFY row_number() OVER (PARTITION BY p.request_id, l."row" ORDER BY p.seq) = 1
            )
            SELECT request_id, "row", version, arm, time_us,
                   -- the row's own output, and the whole answer where it is not a list
                   -- (named outputs) or a query's other rows are needed (ranking)
                   CASE WHEN json_type(payload, '$.output') = 'ARRAY'
                        THEN json_extract(payload, '$.output[' || "row" || ']')::VARCHAR
                   END AS row_output,
                   CASE WHEN json_type(payload, '$.output') <> 'ARRAY' OR n_rows > 1
                        THEN json_extract(payload, '$.output')::VARCHAR
                   END AS output,
                   label::VARCHAR AS label, value, overwritten
            FROM joined
            """,
            {"until": until_us},
        )
        # Columns as arrays (DuckDB converts them, not a Python loop over rows), then
        # lists, in the order of the predictions.
        columns = con.execute(
            'SELECT * FROM _labelled ORDER BY time_us, request_id, "row"'
        ).fetchnumpy()
        if window is not None:
            width = window_us(window)
            for ver, arm, w, n in con.execute(
                "SELECT version, arm, time_us // $w * $w, sum(n_rows) FROM preds "
                "WHERE time_us < $until GROUP BY ALL",
                {"w": width, "until": until_us},
            ).fetchall():
                found.predicted[(str(ver), str(arm), int(w))] = int(n)
    finally:
        con.close()

    got = {name: array.tolist() for name, array in columns.items()}  # masked: None
    if not got["request_id"]:
        return found
    found.request_id = got["request_id"]
    found.row = got["row"]
    found.version = [str(v) for v in got["version"]]
    found.arm = [str(a) for a in got["arm"]]
    found.time_us = got["time_us"]
    found.value = got["value"]
    found.overwritten = got["overwritten"]
    found.label = _decode_all(got["label"])
    found.output = _decode_all(got["row_output"])
    # The whole answer, where one row's is not all of it (several rows, named outputs).
    texts = got["output"]
    found.output_texts = {
        rid: text for rid, text in zip(found.request_id, texts, strict=True) if text is not None
    }
    for i, out in enumerate(found.output):
        if out is None and texts[i] is not None:  # named outputs, or one value
            whole = found.outputs_of(found.request_id[i])
            found.output[i] = whole[found.row[i]] if found.row[i] < len(whole) else None
    return found


def _decode_all(texts: list[str | None]) -> list[Any]:
    """JSON texts decoded in one call (None stays None)."""
    import orjson

    decoded: list[Any] = orjson.loads(
        "[" + ",".join("null" if t is None else t for t in texts) + "]"
    )
    return decoded


def _resolve(
    con: duckdb.DuckDBPyConnection, *, by_key: bool, horizon: timedelta, model: str
) -> None:
    """The table ``resolved``: feedback by request id as given, and entity-key feedback
    with the request id and row of the latest prediction for its key at or before the
    outcome's time, within the horizon (unresolved key feedback is left out)."""
    con.execute(
        'CREATE OR REPLACE TEMP TABLE resolved AS SELECT seq, request_id, "row", model, label, '
        "value FROM fb WHERE request_id IS NOT NULL"
    )
    if not by_key:
        return
    key_sets = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT json_keys(keys) FROM fb WHERE request_id IS NULL AND model = $m",
            {"m": model},
        ).fetchall()
    ]
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE pred_keys AS
        SELECT request_id, i AS "row", time_us,
               coalesce(json_extract(payload, '$.features.rows[' || i || '].keys'),
                        json_extract(payload, '$.input[' || i || ']')) AS keyobj
        FROM (SELECT *, unnest(range(n_rows)) AS i FROM preds)
        """
    )
    for names in key_sets:
        paths = "[" + ", ".join(_sql_string("$." + _json_name(n)) for n in names) + "]"
        con.execute(
            f"""
            INSERT INTO resolved
            WITH f AS (
                SELECT seq, model, label, value,
                       json_extract(keys, {paths})::VARCHAR AS k,
                       epoch_us(CAST(outcome_time AS TIMESTAMPTZ)) AS at_us
                FROM fb WHERE request_id IS NULL AND model = $m
                  AND json_keys(keys) = {_sql_list(names)}
            ), p AS (
                SELECT request_id, "row", time_us, json_extract(keyobj, {paths})::VARCHAR AS k
                FROM pred_keys WHERE keyobj IS NOT NULL
            )
            SELECT f.seq, p.request_id, p."row", f.model, f.label, f.value
            FROM f ASOF JOIN p ON f.k = p.k AND f.at_us >= p.time_us
            WHERE f.at_us - p.time_us <= $horizon
            """,
            {"m": model, "horizon": window_us(horizon)},
        )


def _per_row(output: Any) -> list[Any]:
    """A prediction's output as one entry per request row (a dict: one dict per row)."""
    if isinstance(output, dict):
        names = list(output)
        columns = [output[n] if isinstance(output[n], list) else [output[n]] for n in names]
        return [dict(zip(names, values, strict=False)) for values in zip(*columns, strict=False)]
    if isinstance(output, list):
        return output
    return [output]


# -- quarantine ----------------------------------------------------------------------------


def quarantined(
    project: Project,
    *,
    since: datetime,
    until: datetime | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """Feedback received in ``[since, until)`` that joins no prediction, with the reason:
    ``unknown_request_id`` (no prediction with that id within the horizon before it),
    ``row_out_of_range``, ``model_mismatch`` (the record names another model), or
    ``no_prediction_for_key``. Counted by reason; the first ``limit`` listed."""
    import duckdb
    import orjson

    from conveyor.monitoring.query import MonitorQuery
    from conveyor.monitoring.settings import monitoring_of

    since, until = window_bounds(since, until)
    horizon = _horizon(monitoring_of(project.spec).quality)
    monitor = MonitorQuery(project)
    con = duckdb.connect()
    try:
        monitor.relation(con, kinds=["feedback"], since=since, until=until)
        con.execute(_FEEDBACK_SQL)
        records = int(_one(con, "SELECT count(*) FROM fb"))
        by_key = bool(_one(con, "SELECT count(*) FROM fb WHERE request_id IS NULL"))
        monitor.relation(con, kinds=["prediction"], since=since - horizon, until=until + horizon)
        con.execute(_pred_sql(""))
        reasons_sql = """
            SELECT f.seq, f.time_us, f.request_id, f."row", f.model, f.keys::VARCHAR,
                   f.label::VARCHAR, f.value,
                   CASE WHEN p.request_id IS NULL THEN 'unknown_request_id'
                        WHEN f."row" >= p.n_rows THEN 'row_out_of_range'
                        WHEN f.model IS NOT NULL AND f.model <> p.model THEN 'model_mismatch'
                   END AS reason
            FROM fb f LEFT JOIN preds p ON f.request_id = p.request_id
                AND p.time_us <= f.time_us + $late
            WHERE f.request_id IS NOT NULL
            -- a request id answered twice: the record is quarantined only if neither joins
            QUALIFY row_number() OVER (PARTITION BY f.seq ORDER BY reason NULLS FIRST) = 1
        """
        late = _LATE_US  # a prediction event stamped a little after its feedback (clocks)
        found = con.execute(
            f"SELECT * FROM ({reasons_sql}) WHERE reason IS NOT NULL ORDER BY seq", {"late": late}
        ).fetchall()
        if by_key:
            models = [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT model FROM fb WHERE request_id IS NULL"
                ).fetchall()
            ]
            resolved: set[int] = set()
            for model in models:
                _resolve(con, by_key=True, horizon=horizon, model=model)
                resolved |= {
                    int(r[0])
                    for r in con.execute(
                        "SELECT seq FROM resolved "
                        "WHERE seq IN (SELECT seq FROM fb WHERE request_id IS NULL)"
                    ).fetchall()
                }
            for row in con.execute(
                'SELECT seq, time_us, request_id, "row", model, keys::VARCHAR, label::VARCHAR, '
                "value, 'no_prediction_for_key' FROM fb WHERE request_id IS NULL ORDER BY seq"
            ).fetchall():
                if int(row[0]) not in resolved:
                    found.append(row)
    finally:
        con.close()
    found.sort(key=lambda r: r[0])
    counts: dict[str, int] = defaultdict(int)
    for r in found:
        counts[r[8]] += 1
    listed = [
        {
            "seq": int(seq),
            "time": (_EPOCH + timedelta(microseconds=int(t))).isoformat(),
            "request_id": rid,
            "row": row,
            "model": model,
            "keys": orjson.loads(keys) if keys else None,
            "label": orjson.loads(label) if label else None,
            "value": value,
            "reason": reason,
        }
        for seq, t, rid, row, model, keys, label, value, reason in found[:limit]
    ]
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "records": records,
        "quarantined": len(found),
        "reasons": dict(counts),
        "feedback": listed,
        "horizon_s": horizon.total_seconds(),
    }


# -- small pieces --------------------------------------------------------------------------


def _horizon(spec: QualitySpec) -> timedelta:
    from conveyor.durations import parse_duration

    return parse_duration(spec.horizon, "monitoring.quality.horizon")


def window_us(window: timedelta) -> int:
    width = window // timedelta(microseconds=1)
    if width < 1_000_000:
        raise InvalidInputError(f"window must be a second or longer, got {window}", field="window")
    return int(width)


def _us(moment: datetime) -> int:
    return int((moment - _EPOCH) // timedelta(microseconds=1))


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else 0


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(names: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_string(n) for n in names) + "]"


def _json_name(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'
