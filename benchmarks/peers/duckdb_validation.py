"""The baseline of the validation benchmark: one hand-written DuckDB query, 50 aggregates.

What a careful engineer would write by hand for the same 50 expectations:
one ``count_if(<the row fails>)`` per row-level expectation,
``count(*)`` and ``max(created_at)`` for the batch-level ones, a scalar
subquery for the duplicated ids, and the column types from the file's
metadata. No framework, no report: the floor any validation tool pays.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from validation_workload import NOW, Phases, emit, parse_args  # noqa: E402

# Types as DuckDB names them, for the schema check.
DUCKDB_TYPES = {
    "id": "BIGINT", "customer_id": "BIGINT", "amount": "DOUBLE", "quantity": "INTEGER",
    "unit_price": "DOUBLE", "discount": "DOUBLE", "tax_rate": "DOUBLE",
    "merchant_category": "VARCHAR", "country": "VARCHAR", "currency": "VARCHAR",
    "channel": "VARCHAR", "status": "VARCHAR", "email": "VARCHAR", "zip": "VARCHAR",
    "created_at": "TIMESTAMP WITH TIME ZONE", "updated_at": "TIMESTAMP WITH TIME ZONE",
    "age": "INTEGER", "score": "DOUBLE", "is_fraud": "BOOLEAN", "device": "VARCHAR",
}  # fmt: skip

QUERY = """
SELECT
  count(*) AS "row_count",
  epoch_us(max(created_at)) AS "created_at.freshness",
  count_if(id IS NULL) AS "id.not_null",
  count_if(customer_id IS NULL) AS "customer_id.not_null",
  count_if(amount IS NULL) AS "amount.not_null",
  count_if(quantity IS NULL) AS "quantity.not_null",
  count_if(unit_price IS NULL) AS "unit_price.not_null",
  count_if(merchant_category IS NULL) AS "merchant_category.not_null",
  count_if(country IS NULL) AS "country.not_null",
  count_if(currency IS NULL) AS "currency.not_null",
  count_if(channel IS NULL) AS "channel.not_null",
  count_if(status IS NULL) AS "status.not_null",
  count_if(email IS NULL) AS "email.not_null",
  count_if(created_at IS NULL) AS "created_at.not_null",
  count_if(is_fraud IS NULL) AS "is_fraud.not_null",
  count_if(zip IS NULL) AS "zip.not_null",
  count_if(age IS NULL) AS "age.not_null",
  count_if(score IS NULL) AS "score.not_null",
  count_if(updated_at IS NULL) AS "updated_at.not_null",
  count_if(tax_rate IS NULL) AS "tax_rate.not_null",
  count_if(discount IS NULL) AS "discount.not_null",
  count_if(device IS NULL) AS "device.not_null",
  count_if(id NOT BETWEEN 0 AND 1000000000000) AS "id.between",
  count_if(customer_id NOT BETWEEN 1 AND 1000000) AS "customer_id.between",
  count_if(amount NOT BETWEEN 0 AND 50000) AS "amount.between",
  count_if(quantity NOT BETWEEN 1 AND 100) AS "quantity.between",
  count_if(unit_price NOT BETWEEN 0 AND 1000) AS "unit_price.between",
  count_if(unit_price <= 0) AS "unit_price.positive",
  count_if(discount NOT BETWEEN 0 AND 0.5) AS "discount.between",
  count_if(tax_rate NOT BETWEEN 0 AND 0.25) AS "tax_rate.between",
  count_if(age NOT BETWEEN 18 AND 120) AS "age.between",
  count_if(score NOT BETWEEN 0 AND 1) AS "score.between",
  count_if(created_at NOT BETWEEN TIMESTAMPTZ '2020-01-01 00:00:00+00'
                                            AND TIMESTAMPTZ '2025-01-02 00:00:00+00')
    AS "created_at.between",
  count_if(updated_at < TIMESTAMPTZ '2020-01-01 00:00:00+00') AS "updated_at.between",
  count_if(merchant_category NOT IN ('grocery', 'fuel', 'travel', 'dining',
                   'retail', 'health', 'utilities', 'online')) AS "merchant_category.in_set",
  count_if(country NOT IN ('CH', 'DE', 'FR', 'IT', 'AT', 'ES', 'PT', 'NL', 'BE',
                   'LU', 'GB', 'IE', 'SE', 'NO', 'DK', 'FI', 'PL', 'CZ', 'US', 'CA'))
    AS "country.in_set",
  count_if(currency NOT IN ('CHF', 'EUR', 'USD', 'GBP', 'JPY')) AS "currency.in_set",
  count_if(channel NOT IN ('web', 'app', 'pos', 'phone')) AS "channel.in_set",
  count_if(status NOT IN ('approved', 'declined', 'pending', 'refunded',
                   'chargeback')) AS "status.in_set",
  count_if(device NOT IN ('ios', 'android', 'web', 'other')) AS "device.in_set",
  count_if(tax_rate NOT IN (0.0, 0.077, 0.19, 0.2)) AS "tax_rate.in_set",
  count_if(is_fraud NOT IN (TRUE, FALSE)) AS "is_fraud.in_set",
  count_if(NOT regexp_matches(email, '^[^@\\s]+@[^@\\s]+\\.[a-z]+$'))
    AS "email.matches_regex",
  count_if(NOT regexp_matches(zip, '^[0-9]{5}$')) AS "zip.matches_regex",
  count_if(NOT regexp_matches(currency, '^[A-Z]{3}$')) AS "currency.matches_regex",
  count_if(NOT regexp_matches(country, '^[A-Z]{2}$')) AS "country.matches_regex",
  count_if(NOT regexp_matches(status, '^[a-z]+$')) AS "status.matches_regex",
  count_if(NOT regexp_matches(channel, '^[a-z]+$')) AS "channel.matches_regex",
  (SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM read_parquet($path)
     WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1)) AS "id.unique"
FROM read_parquet($path)
"""


def main() -> None:
    path, _ = parse_args(sys.argv)
    phases = Phases()
    with phases("import"):
        import duckdb
    with phases("validate"), duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'").fetchall()
        described = con.execute(
            "DESCRIBE SELECT * FROM read_parquet($path)", {"path": path}
        ).fetchall()
        cursor = con.execute(QUERY, {"path": path})
        names = [d[0] for d in cursor.description or ()]
        (row,) = cursor.fetchall()
    facts = dict(zip(names, row, strict=True))
    types = {name: kind for name, kind, *_ in described}
    rows = int(facts.pop("row_count"))
    newest_us = facts.pop("created_at.freshness")
    lag = NOW.timestamp() - newest_us / 1e6
    counts = {name: int(value) for name, value in facts.items()}
    failed = [name for name, value in counts.items() if value]
    if types != DUCKDB_TYPES:
        failed.append("schema")
    if not 1 <= rows <= 100_000_000:
        failed.append("row_count")
    if lag > 3600:
        failed.append("created_at.freshness")
    emit(
        {
            "tool": "duckdb",
            "rows": rows,
            "failed": sorted(failed),
            "counts": counts,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"duckdb": duckdb.__version__},
        }
    )


if __name__ == "__main__":
    main()
