"""A JSON request body as an object of declared fields (conveyor.web.bodies)."""

from __future__ import annotations

import pytest

from conveyor.errors import InvalidInputError
from conveyor.web.bodies import json_object, require

FIELDS = {"model": str, "version": int, "steps": (str, list), "force": bool, "mde": (int, float)}


def test_a_body_of_declared_fields_is_its_object() -> None:
    body = b'{"model": "m", "version": 3, "steps": [1, 100], "force": true, "mde": 1}'
    assert json_object(body, FIELDS) == {
        "model": "m",
        "version": 3,
        "steps": [1, 100],
        "force": True,
        "mde": 1,
    }
    assert json_object(b"  ", FIELDS) == {}
    assert json_object(b'{"model": null}', FIELDS) == {"model": None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"modle": "m"}', "modle"),
        (b'{"version": "3"}', "version"),
        (b'{"version": true}', "version"),  # JSON's true is a Python int, not a version
        (b'{"mde": false}', "mde"),
        (b'{"force": 1}', "force"),
        (b'{"steps": 5}', "steps"),
    ],
)
def test_anything_else_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        json_object(body, FIELDS)
    assert caught.value.context["field"] == field


def test_required_fields_are_present_and_not_null() -> None:
    require({"model": "m", "version": 0}, "model", "version")
    with pytest.raises(InvalidInputError) as caught:
        require({"model": None}, "model")
    assert caught.value.context["field"] == "model"
