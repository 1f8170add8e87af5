"""NameTable: the one table of named things with register() (gates, flavors, kinds, ...)."""

from __future__ import annotations

import threading

import pytest

from conveyor._names import NameTable
from conveyor.errors import ConfigError, InvalidInputError


def test_a_table_is_a_read_only_mapping_in_insertion_order() -> None:
    table = NameTable("color", {"red": 1, "green": 2})
    assert list(table) == ["red", "green"] and len(table) == 2
    assert table["red"] == 1 and "green" in table and table.get("blue") is None
    with pytest.raises(KeyError):
        table["blue"]
    assert dict(table.items()) == {"red": 1, "green": 2}
    assert repr(table) == "NameTable('color', ['red', 'green'])"


def test_register_refuses_silent_clobbering() -> None:
    table = NameTable("color", [("red", 1)])
    assert table.register("blue", 3) == 3
    with pytest.raises(InvalidInputError, match=r"color 'red' is already registered \(1\); "):
        table.register("red", 9)
    assert table["red"] == 1
    table.register("red", 9, clobber=True)
    assert table["red"] == 9
    for bad in ("", " red", 7):
        with pytest.raises(InvalidInputError, match="non-empty string"):
            table.register(bad, 1)  # type: ignore[arg-type]
    assert table.unregister("blue") == 3 and "blue" not in table
    with pytest.raises(InvalidInputError, match="unknown color 'blue'"):
        table.unregister("blue")


def test_unknown_names_list_the_known_ones_with_the_tables_error_and_field() -> None:
    gates = NameTable("gate", {"metric_floor": 1, "fairness": 2})
    with pytest.raises(InvalidInputError) as info:
        gates.require("metric_flor", where="conveyor.yaml:9: models.m.gates[0]")
    assert str(info.value) == (
        "conveyor.yaml:9: models.m.gates[0]: unknown gate 'metric_flor'; "
        "known: metric_floor, fairness"
    )
    assert info.value.context == {"field": "name", "known": ["metric_floor", "fairness"]}
    kinds = NameTable("kind", {"not_null": 1}, error=ConfigError, field="kind")
    with pytest.raises(ConfigError, match=r"^unknown kind 'nul'; known: not_null$") as caught:
        kinds.require("nul")
    assert caught.value.context["field"] == "kind"
    assert kinds.require("not_null") == 1
    with pytest.raises(ConfigError, match="unknown kind 3"):
        kinds.require(3)  # type: ignore[arg-type]
    assert "known: none" in str(NameTable("thing").unknown("x"))


def test_check_refuses_what_cannot_serve_under_the_name() -> None:
    def positive(name: str, value: int) -> None:
        if value <= 0:
            raise InvalidInputError(f"{name} must be positive", field="value")

    table = NameTable("weight", {"a": 1}, check=positive)
    with pytest.raises(InvalidInputError, match="b must be positive"):
        table.register("b", 0)
    assert "b" not in table
    with pytest.raises(InvalidInputError, match="c must be positive"):
        NameTable("weight", {"c": -1}, check=positive)


def test_registering_while_others_read_never_breaks_an_iteration() -> None:
    table: NameTable[int] = NameTable("n")
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                sum(1 for _ in table.items())
            except BaseException as exc:  # shown by the assertion below
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2000):
        table.register(str(i), i)
    stop.set()
    reader.join()
    assert errors == [] and len(table) == 2000
