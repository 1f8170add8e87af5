"""Windows: tumbling, sliding and session windows by entity in event time, watermarks,
allowed lateness, late events to a side output; state saved and restored."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor.errors import InvalidInputError
from conveyor.scoring.stream.windows import Window, Windows, parse_window


def _rec(i: int, key: str, t: float, value: float = 1.0) -> dict[str, Any]:
    return {"id": f"m{i}", "key": key, "time": t, "prediction": value}


def _windows(*windows: Window) -> Windows:
    return Windows(windows, name="t", target="w", late_target="late")


def test_a_tumbling_window_fires_once_the_watermark_passes_its_end() -> None:
    w = _windows(Window("tumbling", 60))
    fired, late = w.apply([_rec(1, "a", 1, 0.2), _rec(2, "a", 2, 0.6), _rec(3, "b", 10, 1)])
    assert fired == [] and late == []
    fired, late = w.apply([_rec(4, "a", 61, 0.5)])
    assert late == []
    assert sorted((f["key"], f["start"], f["end"], f["count"]) for f in fired) == [
        ("a", 0, 60, 2),
        ("b", 0, 60, 1),
    ]
    a = next(f for f in fired if f["key"] == "a")
    assert a["id"] == "tumbling_60s_prediction:a:0"
    assert a["sum"] == pytest.approx(0.8) and a["mean"] == pytest.approx(0.4)
    assert (a["min"], a["max"]) == (0.2, 0.6)
    fired, late = w.apply([_rec(5, "a", 30, 1)])  # its window fired: late, counted nowhere
    assert fired == [] and [x["id"] for x in late] == ["m5:tumbling_60s_prediction"]
    assert late[0]["watermark"] == 61


def test_allowed_lateness_and_delay_keep_a_window_open_for_stragglers() -> None:
    w = _windows(Window("tumbling", 60, allowed_lateness=10, delay=5))
    assert w.apply([_rec(1, "a", 1), _rec(2, "a", 70)]) == ([], [])  # 60 + 10 > 70 - 5
    fired, late = w.apply([_rec(3, "a", 59)])  # late, but within the allowed lateness
    assert (fired, late) == ([], [])
    fired, _ = w.apply([_rec(4, "a", 76)])  # watermark 71 > 70
    assert [(f["start"], f["count"]) for f in fired] == [(0, 2)]


def test_a_sliding_window_counts_an_event_in_every_window_it_falls_in() -> None:
    w = _windows(Window("sliding", 60, slide=20))
    assert Window("sliding", 60, slide=20).spans(45) == [(0, 60), (20, 80), (40, 100)]
    first, _ = w.apply([_rec(1, "a", 45), _rec(2, "a", 65)])
    assert [(f["start"], f["count"]) for f in first] == [(0, 1)]  # the watermark is 65
    fired, _ = w.apply([_rec(3, "a", 200)])
    got = {(f["start"], f["count"]) for f in fired}
    assert got == {(20, 2), (40, 2), (60, 1)}


def test_sessions_close_after_the_gap_and_merge_when_an_event_bridges_them() -> None:
    w = _windows(Window("session", 10, allowed_lateness=5))
    w.apply([_rec(1, "a", 0), _rec(2, "a", 5), _rec(3, "a", 18)])
    assert w.open_windows() == 2  # [0, 15) and [18, 28)
    fired, late = w.apply([_rec(4, "a", 12)])  # 12 + 10 + 5 > 18: bridges both
    assert (fired, late) == ([], [])
    assert w.open_windows() == 1
    fired, late = w.apply([_rec(5, "b", 100)])
    assert [(f["key"], f["start"], f["end"], f["count"]) for f in fired] == [("a", 0, 28, 4)]
    _, late = w.apply([_rec(6, "a", 50)])  # 50 + 10 + 5 <= 100
    assert [x["id"] for x in late] == ["m6:session_10s_prediction"]


def test_the_state_saved_and_loaded_gives_the_same_results_and_counts_nothing_twice() -> None:
    class Store:
        data: dict[str, bytes] = {}

        def prepare_target(self, target: str) -> None:
            pass

        def load_state(self, name: str) -> bytes | None:
            return self.data.get(name)

        def save_state(self, name: str, data: bytes) -> None:
            self.data[name] = data

    store: Any = Store()
    first = _windows(Window("tumbling", 60), Window("session", 10))
    first.restore(store)
    batch = [_rec(1, "a", 1, 0.5), _rec(2, "a", 3, 0.25)]
    first.apply(batch)
    first.checkpoint(store)
    again = _windows(Window("tumbling", 60), Window("session", 10))
    again.restore(store)  # a restarted consumer
    assert again.apply(batch) == ([], [])  # delivered again after the save: not counted
    fired, _ = again.apply([_rec(3, "a", 100)])
    assert sorted((f["window"], f["count"], f["sum"]) for f in fired) == [
        ("session_10s_prediction", 2, 0.75),
        ("tumbling_60s_prediction", 2, 0.75),
    ]
    again.apply([_rec(4, "a", 101)])
    again.rollback()  # a failed batch: back to the last save
    assert again.max_time == 3 and again.open_windows() == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tumbling:60s", Window("tumbling", 60)),
        ("sliding:5m/1m:amount", Window("sliding", 300, slide=60, field="amount")),
        ("session:30s+10s", Window("session", 30, allowed_lateness=10)),
    ],
)
def test_window_specs_parse(text: str, expected: Window) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize(
    "text", ["hopping:60s", "tumbling", "sliding:60s", "sliding:10s/20s", "tumbling:-1s"]
)
def test_bad_window_specs_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_window(text)


def test_an_empty_window_state_has_no_watermark() -> None:
    assert _windows(Window("tumbling", 1)).max_time == -math.inf
