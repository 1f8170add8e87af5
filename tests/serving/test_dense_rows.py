"""Rows of numbers go to a float64 model as one matrix (serving/dense.py), with the same
answers, errors and events as the Arrow path they skip."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from serving_support import linear_project
from sklearn.linear_model import LinearRegression

from conveyor.errors import InvalidInputError
from conveyor.registry.signature import Signature
from conveyor.serving.app import create_app
from conveyor.serving.batcher import Batcher
from conveyor.serving.dense import DenseRows, dense_columns
from conveyor.serving.native import decode_native_request
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

FLOATS = Signature.infer(pa.table({"a": [1.0], "b": [2.0]}))


def _rows(body: dict[str, Any]) -> Any:
    return decode_native_request(orjson.dumps(body)).rows_for(dense_columns(FLOATS))


def test_numbers_in_the_signatures_columns_are_dense_in_its_order() -> None:
    rows = _rows({"records": [{"b": 2, "a": 1.5}, {"b": -1.0, "a": 0}]})
    assert isinstance(rows, DenseRows) and rows.names == ("a", "b")
    assert rows.matrix.tolist() == [[1.5, 2.0], [0.0, -1.0]]
    columns = _rows({"columns": {"a": [1.5, 0], "b": [2, -1.0]}})
    assert isinstance(columns, DenseRows) and columns.matrix.tolist() == rows.matrix.tolist()
    # The table it stands for is what the signature makes of the Arrow path's table.
    request = decode_native_request(b'{"records": [{"b": 2, "a": 1.5}, {"b": -1.0, "a": 0}]}')
    assert rows.to_arrow().equals(FLOATS.enforce(request.table))
    assert rows.to_pylist() == FLOATS.enforce(request.table).to_pylist()


@pytest.mark.parametrize(
    "record",
    [
        {"a": 1.0, "b": None},  # a null: the signature decides
        {"a": 1.0, "b": True},  # a boolean is not a number here
        {"a": 1.0, "b": "2"},  # nor is a numeric string
        {"a": 1.0},  # a missing column
        {"a": 1.0, "b": 2.0, "c": 3.0},  # an extra one
        {"a": 1.0, "c": 2.0},  # another name
        {"a": 1.0, "b": 2**53 + 1},  # an integer a float64 cannot hold exactly
    ],
)
def test_anything_else_goes_through_the_signature_as_before(record: dict[str, Any]) -> None:
    rows = _rows({"records": [record]})
    assert isinstance(rows, pa.Table)
    if record == {"a": 1.0, "b": None}:
        return  # nullable or not, the signature's error, as before
    with pytest.raises(InvalidInputError) as caught:
        FLOATS.enforce(rows)
    assert caught.value.context["field"] in {"a", "b", "c"}


def test_a_version_with_other_types_takes_no_dense_rows() -> None:
    assert dense_columns(Signature.infer(pa.table({"a": [1.0], "n": [1]}))) is None
    assert dense_columns(Signature.infer(pa.table({"a": [1.0], "s": ["x"]}))) is None
    assert dense_columns(None) is None
    assert dense_columns(FLOATS) == ("a", "b")


def test_the_batcher_mixes_dense_and_arrow_requests_and_splits_each_answer_back() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 2))
    model = LinearRegression().fit(x, x @ [2.0, -1.0])
    seen: list[str] = []

    def predict(batch: Any) -> Any:
        seen.append(type(batch).__name__)
        if isinstance(batch, DenseRows):
            return model.predict(batch.matrix)
        return model.predict(np.column_stack([c.to_numpy() for c in batch.columns]))

    parts: list[Any] = []
    for i in range(12):
        rows = x[i * 3 : i * 3 + 3]
        dense = DenseRows(("a", "b"), rows)
        parts.append(dense if i % 3 else dense.to_arrow())

    async def run() -> list[Any]:
        batcher = Batcher(predict, max_batch_size=64, max_wait_ms=20)
        try:
            return await asyncio.gather(*(batcher.submit(p) for p in parts))
        finally:
            await batcher.close()

    answers = asyncio.run(run())
    for i, answer in enumerate(answers):
        assert np.allclose(answer, model.predict(x[i * 3 : i * 3 + 3]))
    # Requests of one shape are batched together: stacked matrices, or Arrow tables.
    assert "DenseRows" in seen and "Table" in seen


def test_a_served_request_answers_the_same_dense_or_not_and_its_shadow_of_another_signature_too(
    tmp_path: Path,
) -> None:
    project = linear_project(tmp_path / "p", name="dense", serving="{auth: disabled}")
    try:
        # @2 takes an int column: the primary's dense rows reach it as the table they stand for.
        X = pd.DataFrame({"a": [1, 2, 3, 4], "b": [0.5, 1.5, 2.5, 3.5]})
        project.registry.register(
            "m", LinearRegression().fit(X, 2 * (X["a"] + X["b"])), signature_from=X
        )
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(1, shadow=[2], cache=False)
        )
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = f"{server.url}/v1/models/m/predict"
            wait_until(
                lambda: httpx.post(url, json={"records": [{"a": 1, "b": 1}]}).status_code == 200,
                message="m@1 answers",
                timeout=30,
            )
            dense = httpx.post(url, json={"records": [{"b": 2.0, "a": 1}, {"a": 3, "b": 4}]})
            arrow = httpx.post(url, json={"records": [{"a": 1, "b": 2.0}, {"a": 3, "b": None}]})
            bad = httpx.post(url, json={"records": [{"a": 1, "b": True}]})
            pool = server.app.state.server.pool
            primary, shadow = pool.get("m", 1), pool.get("m", 2)
            wait_until(
                lambda: len(project.events.query(kind="prediction.shadow").items) >= 2,
                message="the shadow answered every request",
                timeout=30,
            )
        finally:
            server.stop()
        assert primary.dense == ("a", "b") and shadow.dense is None  # @2 has an int input
        assert dense.status_code == 200, dense.text
        assert dense.json()["predictions"] == pytest.approx([3.0, 7.0])
        # A null goes the Arrow way and gets the signature's error, as it always did.
        assert arrow.status_code == 422, arrow.text
        assert arrow.json()["field"] == "b"
        assert bad.status_code == 422 and bad.json()["field"] == "b"
        shadows = [e.payload for e in project.events.query(kind="prediction.shadow").items]
        assert {s["status"] for s in shadows} == {"ok"}
        # @2 answers twice @1's: it disagrees, and its event carries the rows it was given.
        two = next(s for s in shadows if s["output"] == pytest.approx([6.0, 14.0]))
        assert two["agree"] is False
        assert two["input"] == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]
    finally:
        project.close()


def test_sampled_inputs_of_dense_rows_are_recorded_as_records(tmp_path: Path) -> None:
    project = linear_project(
        tmp_path / "p", name="sample", serving="{auth: disabled, payload_sample_rate: 1.0}"
    )
    try:
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = f"{server.url}/v1/models/m/predict"
            wait_until(
                lambda: httpx.post(url, json={"records": [{"a": 1, "b": 2}]}).status_code == 200,
                message="m@1 answers",
                timeout=30,
            )
        finally:
            server.stop()
        wait_until(
            lambda: project.events.query(kind="prediction").items, message="an event", timeout=10
        )
        event = project.events.query(kind="prediction").items[0]
        assert event.payload["input"] == [{"a": 1.0, "b": 2.0}]
        assert event.payload["output"] == pytest.approx([3.0])
    finally:
        project.close()
