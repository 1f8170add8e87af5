"""register_many: one transaction a batch, contiguous numbers, all or nothing; SQLite and PG."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pytest
from registry_support import Doubler

from conveyor.errors import ConveyorError, InvalidInputError, NotFoundError
from conveyor.registry import Registry
from conveyor.registry.batch import RegisterItem, register_many


def _numbers(registry: Registry, name: str) -> list[int]:
    return sorted(v.number for v in registry.list(name, limit=1000))


def _state(registry: Registry) -> tuple[list[int], list[str], int]:
    """What a failed batch must leave unchanged: versions, stored artifacts, events."""
    assert registry.events is not None
    registry.events.flush()
    return (
        _numbers(registry, "fraud"),
        sorted(registry.artifacts.iter_digests()),
        len(registry.events.query(kind="model.registered", limit=1000)),
    )


def test_a_batch_gets_contiguous_numbers_in_item_order(registry: Registry) -> None:
    registry.register("fraud", Doubler(1.0))
    versions = register_many(
        registry,
        [
            RegisterItem("fraud", Doubler(2.0), tags={"fold": 1}, metrics={"auc": 0.9}),
            {"name": "churn", "model": Doubler(3.0), "description": "churn model"},
            {"name": "fraud", "model": Doubler(4.0), "params": {"depth": 3}, "actor": "ana"},
            RegisterItem("churn", Doubler(5.0)),
        ],
    )

    assert [(v.model, v.number) for v in versions] == [
        ("fraud", 2),
        ("churn", 1),
        ("fraud", 3),
        ("churn", 2),
    ]
    assert versions[0].tags == {"fold": "1"}
    assert versions[0].metrics == {"auc": 0.9}
    assert versions[2].params == {"depth": 3}
    # What was returned is what was stored, and the models load and predict.
    assert registry.get("fraud", 3) == versions[2]
    assert registry.resolve("churn@latest") == versions[3]
    frame = pd.DataFrame({"income": [10.0]})
    assert registry.load(versions[2]).model.predict(frame).tolist() == [40.0]
    # Newest first lists a batch in number order.
    assert [v.number for v in registry.list("fraud", limit=10)] == [3, 2, 1]
    models = {m["name"]: m for m in registry.models()}
    assert models["fraud"]["latest_version"] == 3
    assert models["churn"]["latest_version"] == 2
    assert models["churn"]["description"] == "churn model"
    # One durable event per version, in item order.
    assert registry.events is not None
    events = registry.events.query(kind="model.registered", limit=100).items
    assert [(e.subject, e.subject_version) for e in events][-4:] == [
        ("fraud", "2"),
        ("churn", "1"),
        ("fraud", "3"),
        ("churn", "2"),
    ]
    assert events[-2].actor == "ana"
    assert events[-2].payload["version_id"] == versions[2].id


def test_an_empty_batch_writes_nothing(registry: Registry) -> None:
    assert register_many(registry, []) == []
    assert registry.models() == []


def test_concurrent_single_registrations_and_batches_never_collide(registry: Registry) -> None:
    singles: list[int] = []
    batches: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def single(i: int) -> None:
        try:
            barrier.wait()
            for k in range(6):
                singles.append(registry.register("fraud", Doubler(i * 100.0 + k)).number)
        except BaseException as exc:
            errors.append(exc)

    def batch(i: int) -> None:
        try:
            barrier.wait()
            for k in range(3):
                items = [RegisterItem("fraud", Doubler(i * 1000.0 + k * 10 + j)) for j in range(5)]
                batches.append([v.number for v in register_many(registry, items)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=single, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=batch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    every = singles + [n for b in batches for n in b]
    assert sorted(every) == list(range(1, 2 * 6 + 2 * 3 * 5 + 1))
    for numbers in batches:
        assert numbers == list(range(numbers[0], numbers[0] + 5))
    assert _numbers(registry, "fraud") == list(range(1, len(every) + 1))


@pytest.mark.parametrize(
    ("bad", "error", "field"),
    [
        (
            {"name": "fraud", "model": Doubler(), "metrics": {"auc": "high"}},
            InvalidInputError,
            "items[2].metrics.auc",
        ),
        ({"name": "no spaces allowed", "model": Doubler()}, InvalidInputError, "items[2].name"),
        (
            {"name": "fraud", "model": Doubler(), "colour": "red"},
            InvalidInputError,
            "items[2].colour",
        ),
        ({"name": "fraud"}, InvalidInputError, "items[2].model"),
        ("fraud", InvalidInputError, "items[2]"),
        ({"name": "fraud", "model": Doubler(), "parent": "fraud@99"}, NotFoundError, "items[2]"),
        ({"name": "fraud", "model": object()}, InvalidInputError, "items[2]"),
    ],
)
def test_an_invalid_item_fails_the_whole_batch_and_writes_nothing(
    registry: Registry, bad: object, error: type[ConveyorError], field: str
) -> None:
    registry.register("fraud", Doubler(1.0))
    before = _state(registry)
    items = [RegisterItem("fraud", Doubler(2.0)), {"name": "other", "model": Doubler(3.0)}, bad]

    with pytest.raises(error) as caught:
        register_many(registry, items)  # type: ignore[list-item]

    assert str(caught.value).startswith("item 2: ")
    assert caught.value.context["index"] == 2
    assert caught.value.context["field"].startswith(field)
    assert _state(registry) == before
    assert [m["name"] for m in registry.models()] == ["fraud"]
    # The batch without the bad item goes through, numbered after what was there.
    assert [v.number for v in register_many(registry, items[:2])] == [2, 1]


def test_a_failing_transaction_writes_no_row(registry: Registry) -> None:
    registry.register("fraud", Doubler(1.0))
    # A parent given as a version object is taken at its word: an id that does
    # not exist fails the foreign key at insert, after the first rows were sent.
    missing = replace(registry.get("fraud", 1), id=uuid.uuid4().hex, created_at=datetime.now(UTC))
    items = [
        RegisterItem("fraud", Doubler(2.0)),
        RegisterItem("fraud", Doubler(3.0), parent=missing),
    ]

    with pytest.raises(ConveyorError):
        register_many(registry, items)

    assert _numbers(registry, "fraud") == [1]
    assert registry.models()[0]["latest_version"] == 1
    assert [v.number for v in register_many(registry, items[:1])] == [2]
