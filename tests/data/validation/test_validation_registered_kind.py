"""A kind of expectation added with EXPECTATION_KINDS.register, from the spec to quarantine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import Field

from conveyor.data.validation import (
    EXPECTATION_KINDS,
    REASON_COLUMN,
    Between,
    RowExpectation,
    parse_expectations,
    validate,
)
from conveyor.data.validation.plan import literal
from conveyor.errors import ConfigError, InvalidInputError
from conveyor.project import Project, init_project


class DivisibleBy(RowExpectation):
    """Quantities come in packs: the value is a multiple of ``divisor``."""

    kind: Literal["divisible_by"] = "divisible_by"
    divisor: int = Field(gt=0)

    def failure_sql(self, column: str, category: str) -> str:
        if category != "number":
            raise ValueError("needs an integer column")
        return f"{column} % {literal(self.divisor)} <> 0"

    def phrase(self) -> str:
        return f"are not multiples of {self.divisor}"


@pytest.fixture
def divisible_by() -> Iterator[type[DivisibleBy]]:
    EXPECTATION_KINDS.register("divisible_by", DivisibleBy)
    try:
        yield DivisibleBy
    finally:
        EXPECTATION_KINDS.unregister("divisible_by")


def test_a_registered_kind_is_parsed_run_and_splits_rows(
    divisible_by: type, tmp_path: Path
) -> None:
    (parsed,) = parse_expectations([{"kind": "divisible_by", "column": "qty", "divisor": 5}])
    assert isinstance(parsed, DivisibleBy) and parsed.name == "qty.divisible_by"
    table = pa.table({"qty": [5, 10, 7, None, 15, 3], "price": [1.0] * 6})
    result = validate(table, [parsed], subject="dataset:orders")
    (found,) = result.report.checks
    # A null is not a failure (not_null is the kind that catches it), as for the built-ins.
    assert (found.passed, found.observed) == (False, 2 / 6)
    assert found.detail == "2 of 6 rows (33.33%) are not multiples of 5"
    assert result.invalid is not None and result.valid is not None
    assert result.invalid.column("qty").to_pylist() == [7, 3]
    assert result.invalid.column(REASON_COLUMN).to_pylist() == ["qty.divisible_by"] * 2
    assert result.valid.num_rows == 4
    # From a Parquet file, counted by DuckDB in one scan without splitting.
    pq.write_table(table, tmp_path / "orders.parquet")
    counted = validate(
        tmp_path / "orders.parquet",
        [{"kind": "divisible_by", "column": "qty", "divisor": 5, "mostly": 0.5}],
        subject="dataset:orders",
        split=False,
    )
    assert counted.report.checks[0].passed and counted.failed_rows == 2


def test_a_registered_kind_is_checked_like_a_built_in(divisible_by: type) -> None:
    with pytest.raises(ConfigError, match=r"x\[0\]\.divisor: Input should be greater than 0"):
        parse_expectations([{"kind": "divisible_by", "column": "q", "divisor": 0}], where="x")
    wrong = validate(
        pa.table({"qty": ["a", "b"]}),
        [{"kind": "divisible_by", "column": "qty", "divisor": 2}],
        subject="dataset:orders",
    )
    (check,) = wrong.report.checks
    assert not check.passed
    assert check.detail == "cannot check: divisible_by on 'qty': needs an integer column"
    with pytest.raises(ConfigError, match=r"unknown kind 'divisible_bye'; known: .*divisible_by"):
        parse_expectations([{"kind": "divisible_bye", "column": "q"}])


def test_registration_refuses_what_the_engine_cannot_run(divisible_by: type) -> None:
    with pytest.raises(InvalidInputError, match="already registered"):
        EXPECTATION_KINDS.register("divisible_by", DivisibleBy)
    with pytest.raises(ConfigError, match=r'declare kind: Literal\["multiple_of"\]'):
        EXPECTATION_KINDS.register("multiple_of", DivisibleBy)
    with pytest.raises(ConfigError, match="expected a RowExpectation subclass"):
        EXPECTATION_KINDS.register("plain", dict)  # type: ignore[arg-type]

    class Loose(Between):  # a built-in's subclass: the engine would not know its SQL
        kind: Literal["loose"] = "loose"  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="must subclass RowExpectation"):
        EXPECTATION_KINDS.register("loose", Loose)
    assert "loose" not in EXPECTATION_KINDS

    class Silent(RowExpectation):  # says nothing of which rows fail
        kind: Literal["silent"] = "silent"

    with pytest.raises(ConfigError, match="Silent must define failure_sql"):
        EXPECTATION_KINDS.register("silent", Silent)
    assert "silent" not in EXPECTATION_KINDS


def test_a_spec_names_a_registered_kind_and_ingest_quarantines_by_it(
    divisible_by: type, tmp_path: Path
) -> None:
    init_project(tmp_path, name="packs")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(
            "datasets:\n"
            "  orders:\n"
            "    expectations:\n"
            "      - {kind: divisible_by, column: qty, divisor: 6, name: whole_packs}\n"
        )
    with Project.open(tmp_path) as project:
        ingest = project.data.ingest("orders", pa.table({"qty": [6, 12, 13, 18, 1]}))
        assert (ingest.rows_accepted, ingest.rows_quarantined) == (3, 2)
        assert ingest.quarantine is not None
        batch = project.data.quarantine.get(ingest.quarantine.id)
        assert batch.reasons == {"whole_packs": 2}
