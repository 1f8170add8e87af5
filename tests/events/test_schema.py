"""The event schema: validation at the boundary, ids, time, JSON payloads."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import InvalidInputError
from conveyor.events import Event, new_event_id
from conveyor.events.schema import MAX_KIND_LENGTH, check_kind, dump_payload, load_payload

KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_ATOM = st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)


@given(st.text(max_size=120))
def test_kind_validation_matches_the_documented_pattern(text: str) -> None:
    valid = bool(KIND.match(text)) and len(text) <= MAX_KIND_LENGTH and "\n" not in text
    if valid:
        assert check_kind(text) == text
    else:
        with pytest.raises(InvalidInputError) as info:
            check_kind(text)
        assert info.value.context["field"] == "kind"


@given(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.lists(_ATOM, max_size=4))
def test_dotted_lowercase_kinds_are_accepted(head: str, parts: list[str]) -> None:
    kind = ".".join([head, *parts])
    if len(kind) <= MAX_KIND_LENGTH:
        assert Event(kind).kind == kind


def test_an_event_is_stamped_with_one_clock_reading() -> None:
    before = datetime.now(UTC)
    event = Event("run.started")
    after = datetime.now(UTC)
    assert before <= event.time <= after
    assert event.time.tzinfo is UTC
    assert re.fullmatch(r"[0-9a-f]{32}", event.id)
    # The id's leading 48 bits are the event time in milliseconds.
    assert int(event.id[:12], 16) == event.time_us // 1000


def test_ids_are_time_ordered_and_unique() -> None:
    ids = [new_event_id(ms) for ms in (1, 2, 2**40, 2**47)]
    assert ids == sorted(ids)
    assert len({new_event_id(5) for _ in range(10_000)}) == 10_000


def test_time_is_normalised_to_utc_and_must_be_aware() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = Event("run.started", time=datetime(2026, 1, 1, 14, 0, 0, 123456, tzinfo=plus_two))
    assert event.time == datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert event.time.tzinfo is UTC
    assert int(event.id[:12], 16) == event.time_us // 1000
    with pytest.raises(InvalidInputError) as info:
        Event("run.started", time=datetime(2026, 1, 1))
    assert info.value.context["field"] == "time"


@pytest.mark.parametrize("bad", ["xyz", "0" * 31, "A" * 32, "g" * 32])
def test_a_given_id_must_be_32_lowercase_hex(bad: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Event("run.started", id=bad)
    assert info.value.context["field"] == "id"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", 3),
        ("subject_version", 3),
        ("request_id", "x" * 256),
        ("trace_id", "a\x00b"),
        ("actor", "\ud800"),
    ],
)
def test_text_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        Event("run.started", **{field: value})  # type: ignore[arg-type]
    assert info.value.context["field"] == field


def test_events_are_immutable() -> None:
    event = Event("run.started")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "run.finished"  # type: ignore[misc]


def test_to_dict_and_from_dict_round_trip() -> None:
    event = Event(
        "gate.decided",
        subject="fraud",
        subject_version="3",
        payload={"passed": False, "checks": [{"name": "auc", "observed": 0.71}]},
        request_id="r1",
        trace_id="t1",
        actor="ci",
    )
    data = event.to_dict()
    assert data["time"].endswith("+00:00")
    assert Event.from_dict(data) == event
    assert Event.from_dict({"kind": "run.started"}).kind == "run.started"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"subject": "x"}, "kind"),
        ({"kind": "run.started", "colour": "red"}, "colour"),
        ({"kind": "run.started", "time": "yesterday"}, "time"),
        ({"kind": "run.started", "time": "2026-01-01T00:00:00"}, "time"),  # naive
    ],
)
def test_from_dict_refuses_bad_records(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Event.from_dict(data)
    assert info.value.context["field"] == field


def test_payload_json_covers_numpy_and_other_mappings() -> None:
    payload = {
        "f32": np.float32(0.5),
        "i64": np.int64(7),
        "array": np.arange(3),
        "view": MappingProxyType({"a": 1}),
        "tuple": (1, 2),
    }
    assert load_payload(dump_payload(payload)) == {
        "f32": 0.5,
        "i64": 7,
        "array": [0, 1, 2],
        "view": {"a": 1},
        "tuple": [1, 2],
    }
    assert load_payload(dump_payload({"nan": float("nan")})) == {"nan": None}  # documented


def test_payload_nul_check_is_exact() -> None:
    with pytest.raises(InvalidInputError):
        dump_payload({"s": "a\x00"})
    with pytest.raises(InvalidInputError):
        dump_payload({"s": "\\\x00"})  # a backslash, then NUL
    # The six characters \u0000 as text are fine: nothing PostgreSQL refuses.
    assert load_payload(dump_payload({"s": "\\u0000"})) == {"s": "\\u0000"}


def test_payload_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInputError) as info:
        Event("run.started", payload=[1, 2])  # type: ignore[arg-type]
    assert info.value.context["field"] == "payload"
    assert Event("run.started", payload=None).payload == {}  # type: ignore[arg-type]


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    """Ids come from a seeded generator: a fork re-seeds it, so workers never collide."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_event_id(7) for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_event_id(7) for _ in range(100)}
    assert len(child) == 100 and not child & parent
