"""History: a pipeline's runs newest first, a page at a time, each with its steps."""

from __future__ import annotations

import pytest
from pipeline_support import Backends

from conveyor.errors import InvalidInputError
from conveyor.pipelines import LocalRunner, Pipeline, StepContext, history


def test_history_pages_newest_first_with_steps(backends: Backends) -> None:
    p = Pipeline("paged")

    @p.step(outputs="n", retries=1, backoff=0.001)
    def count(ctx: StepContext) -> int:
        if ctx.params["i"] % 2 and ctx.attempt == 1:
            raise OSError("odd runs need a second try")
        return int(ctx.params["i"])

    @p.step(inputs="n")
    def check(ctx: StepContext, n: int) -> None:
        if n == 3:
            raise ValueError("three is right out")

    other = Pipeline("other")
    other.add_step(lambda ctx: None, name="s")
    runner = LocalRunner(backends.store, backends.events, heartbeat_interval=0.05, stale_after=30)
    made = [runner.run(p, {"i": i}) for i in range(5)]
    runner.run(other)

    pages, cursor = [], None
    while True:
        page = history(backends.store, "paged", limit=2, cursor=cursor)
        pages.append(list(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(items) for items in pages] == [2, 2, 1]
    listed = [run for items in pages for run in items]
    assert listed == list(reversed(made))  # newest first, each once, steps included
    third = next(r for r in listed if r.params == {"i": 3})
    assert third.status == "failed"
    assert [(s.name, s.status, len(s.attempts)) for s in third.steps] == [
        ("count", "succeeded", 2),
        ("check", "failed", 1),
    ]
    assert third.step("check").error is not None
    assert (third.step("check").error or "").startswith("ValueError: three is right out")
    assert all(s.duration is not None and s.duration >= 0 for s in third.steps)
    assert third.to_dict()["steps"][0]["attempts"][0]["status"] == "failed"

    failed = history(backends.store, "paged", status="failed").items
    assert [r.id for r in failed] == [third.id]
    assert history(backends.store, "nobody").items == []
    with pytest.raises(InvalidInputError, match="limit"):
        history(backends.store, "paged", limit=0)
    with pytest.raises(InvalidInputError, match="cursor"):
        history(backends.store, "paged", cursor="not-a-cursor")
