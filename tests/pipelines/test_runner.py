"""LocalRunner: retries, timeouts, failures and skips, events and lineage, on real stores."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from typing import Any

import pytest
from pipeline_support import Backends

from conveyor.artifacts.store import ArtifactStore
from conveyor.data.tables import DatasetRecord, DatasetVersionRecord, LineageRecord
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.pipelines import (
    LocalRunner,
    Pipeline,
    PipelineFailedError,
    StepCancelledError,
    StepContext,
    history,
)
from conveyor.testing.wait import wait_until


def _runner(b: Backends, **options: Any) -> LocalRunner:
    options = {"heartbeat_interval": 0.05, "stale_after": 30.0, **options}
    return LocalRunner(b.store, b.events, **options)


def test_retries_then_success_records_each_attempt(backends: Backends) -> None:
    p = Pipeline("flaky")
    calls: list[int] = []

    @p.step(outputs="rows", retries=3, backoff=0.004, max_backoff=0.006, retry_on=OSError)
    def extract(ctx: StepContext) -> list[int]:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise OSError(f"connection reset (attempt {ctx.attempt})")
        return [1, 2, 3]

    @p.step(inputs="rows", outputs="total")
    def total(ctx: StepContext, rows: list[int]) -> int:
        return sum(rows)

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)  # the runner's backoff, really waited: the behaviour under test

    result = _runner(backends, rng=random.Random(7), sleep=sleep).run(p)
    assert result.status == "succeeded" and result.error is None
    assert result.outputs == {"rows": [1, 2, 3], "total": 6}
    assert calls == [1, 2, 3]
    step = result.step("extract")
    assert [a.status for a in step.attempts] == ["failed", "failed", "succeeded"]
    assert [a.attempt for a in step.attempts] == [1, 2, 3]
    assert step.attempts[0].error is not None
    assert step.attempts[0].error.startswith("OSError: connection reset (attempt 1)")
    assert "Traceback" in step.attempts[0].error  # the attempt's run keeps the traceback

    # Each attempt is its own run under the pipeline run.
    children = backends.store.runs.children(result.id)
    assert [(c.kind, c.name, c.attempt) for c in children] == [
        ("step", "extract", 1),
        ("step", "extract", 2),
        ("step", "extract", 3),
        ("step", "total", 1),
    ]
    assert {c.parent_id for c in children} == {result.id}

    # Waits are full jitter under the doubling cap, drawn from the injected RNG.
    dice = random.Random(7)
    expected = [dice.uniform(0, min(0.006, 0.004 * 2**k)) for k in range(2)]
    retrying = backends.payloads("flaky", "step.retrying")
    assert [e["delay_s"] for e in retrying] == expected
    assert [e["next_attempt"] for e in retrying] == [2, 3]
    assert sum(slept) == pytest.approx(sum(expected))
    # What run() returned is what history reads back.
    assert history(backends.store, "flaky").items == [result]


def test_retries_exhausted_fail_the_pipeline(sqlite_backends: Backends) -> None:
    p = Pipeline("doomed")

    @p.step(retries=2, backoff=0.001)
    def always(ctx: StepContext) -> None:
        raise RuntimeError("still broken")

    result = _runner(sqlite_backends).run(p)
    assert result.status == "failed"
    assert result.error == "step 'always' failed after 3 attempts: RuntimeError: still broken"
    assert [a.status for a in result.step("always").attempts] == ["failed"] * 3
    [failed] = sqlite_backends.payloads("doomed", "step.failed")
    assert (failed["attempts"], failed["error_type"], failed["timed_out"]) == (
        3,
        "RuntimeError",
        False,
    )
    with pytest.raises(PipelineFailedError, match="still broken") as info:
        result.raise_for_status()
    assert info.value.run is result


def test_errors_outside_retry_on_and_wrong_outputs_are_not_retried(
    sqlite_backends: Backends,
) -> None:
    p = Pipeline("picky")

    @p.step(retries=5, backoff=0.001, retry_on=(OSError,))
    def bad_value(ctx: StepContext) -> None:
        raise ValueError("not transient")

    @p.step(outputs=("a", "b"), retries=5, backoff=0.001)
    def bad_shape(ctx: StepContext) -> dict[str, int]:
        return {"a": 1}

    result = _runner(sqlite_backends).run(p)
    assert len(result.step("bad_value").attempts) == 1
    shape = result.step("bad_shape")
    assert len(shape.attempts) == 1
    assert shape.error is not None
    assert shape.error.startswith(
        "StepOutputError: step 'bad_shape' of pipeline 'picky' returned outputs that do not "
        "match its declaration (a, b): missing 'b'"
    )
    assert "also failed: 'bad_shape'" in (result.error or "")


def test_a_timed_out_step_fails_and_its_thread_can_write_nothing_more(
    sqlite_backends: Backends,
) -> None:
    p = Pipeline("slow")
    released = threading.Event()
    late_write: list[BaseException] = []

    @p.step(outputs="x", timeout=0.2)
    def hang(ctx: StepContext) -> int:
        while not ctx.cancelled:  # a well-behaved long step looks now and then
            time.sleep(0.01)  # the step's own work, not a wait of the test's
        try:
            ctx.emit("slow.late")
        except StepCancelledError as exc:
            late_write.append(exc)
        released.set()
        return 1

    @p.step(inputs="x")
    def after(ctx: StepContext, x: int) -> None:
        raise AssertionError("a dependent of a timed-out step must not run")

    result = _runner(sqlite_backends).run(p)
    assert result.status == "failed"
    hung = result.step("hang")
    assert hung.error is not None
    assert hung.error.startswith("StepTimeoutError: step 'hang' timed out after 0.2 s")
    assert result.step("after").skipped
    assert released.wait(10) and len(late_write) == 1
    [failed] = sqlite_backends.payloads("slow", "step.failed")
    assert failed["timed_out"] is True
    assert "slow.late" not in sqlite_backends.kinds("slow")


def test_a_timed_out_attempt_is_retried_when_timeouts_are_retryable(
    sqlite_backends: Backends,
) -> None:
    p = Pipeline("second-wind")
    stop = threading.Event()

    @p.step(outputs="x", timeout=0.2, retries=1, backoff=0.001, retry_on=TimeoutError)
    def sometimes_hangs(ctx: StepContext) -> int:
        if ctx.attempt == 1:
            stop.wait(30)
        return ctx.attempt

    try:
        result = _runner(sqlite_backends).run(p)
    finally:
        stop.set()
    assert result.status == "succeeded"
    assert result.outputs == {"x": 2}
    assert [a.status for a in result.step("sometimes_hangs").attempts] == ["failed", "succeeded"]
    [retrying] = sqlite_backends.payloads("second-wind", "step.retrying")
    assert retrying["timed_out"] is True


def _branching(fail_fast: bool) -> Pipeline:
    p = Pipeline("branches", fail_fast=fail_fast)

    @p.step(outputs="a")
    def source(ctx: StepContext) -> int:
        return 1

    @p.step(inputs="a", outputs="b")
    def broken(ctx: StepContext, a: int) -> int:
        raise KeyError("column 'price'")

    @p.step(inputs="b", outputs="c")
    def child(ctx: StepContext, b: int) -> int:
        return b

    @p.step(inputs="a", outputs="d")
    def independent(ctx: StepContext, a: int) -> int:
        return a + 1

    @p.step(inputs=("c", "d"))
    def grandchild(ctx: StepContext, c: int, d: int) -> None:
        pass

    return p


def test_a_failed_step_skips_its_dependents_and_independent_steps_still_run(
    backends: Backends,
) -> None:
    result = _runner(backends).run(_branching(fail_fast=False))
    statuses = {s.name: s.status for s in result.steps}
    assert statuses == {
        "source": "succeeded",
        "broken": "failed",
        "child": "cancelled",
        "independent": "succeeded",
        "grandchild": "cancelled",
    }
    assert result.step("child").error == "skipped: upstream step 'broken' failed"
    assert result.step("grandchild").skipped and not result.step("broken").skipped
    assert result.error == "step 'broken' failed after 1 attempt: KeyError: \"column 'price'\""
    skipped = backends.payloads("branches", "step.skipped")
    assert [(e["step"], e["reason"]) for e in skipped] == [
        ("child", "upstream step 'broken' failed"),
        ("grandchild", "upstream step 'broken' failed"),
    ]


def test_fail_fast_stops_every_remaining_step(sqlite_backends: Backends) -> None:
    result = _runner(sqlite_backends).run(_branching(fail_fast=True))
    assert result.step("independent").status == "cancelled"
    assert result.step("child").error == "skipped: upstream step 'broken' failed"
    assert result.step("independent").error == (
        "skipped: pipeline stopped (fail_fast): step 'broken' failed"
    )


def test_every_transition_writes_an_event(backends: Backends) -> None:
    p = Pipeline("observed")

    @p.step(outputs="a", retries=1, backoff=0.001)
    def first(ctx: StepContext) -> int:
        if ctx.attempt == 1:
            raise OSError("blip")
        return 1

    @p.step(inputs="a", outputs="b")
    def second(ctx: StepContext, a: int) -> int:
        raise ValueError("bad row")

    @p.step(inputs="b")
    def third(ctx: StepContext, b: int) -> None:
        pass

    seen: list[str] = []
    result = _runner(backends).run(p, {"day": "2026-11-26"}, listener=lambda k, _: seen.append(k))
    kinds = backends.kinds("observed")
    assert kinds == [
        "pipeline.started",
        "step.started",
        "step.retrying",
        "step.started",
        "step.succeeded",
        "step.started",
        "step.failed",
        "step.skipped",
        "pipeline.finished",
    ]
    assert seen == kinds
    backends.events.flush()
    events = list(backends.events.iter(subject="observed"))
    assert {e.trace_id for e in events} == {result.id}
    assert {e.payload["run_id"] for e in events} == {result.id}
    started = events[0].payload
    assert started["params"] == {"day": "2026-11-26"}
    assert started["steps"] == ["first", "second", "third"]
    finished = events[-1].payload
    assert finished["status"] == "failed"
    assert finished["error"] == result.error
    assert finished["duration_s"] >= 0
    assert finished["steps"] == {"first": "succeeded", "second": "failed", "third": "cancelled"}
    succeeded = next(e.payload for e in events if e.kind == "step.succeeded")
    assert succeeded["attempt"] == 2 and succeeded["duration_s"] >= 0
    assert succeeded["step_run_id"] == result.step("first").attempts[1].run_id


def _dataset_version(b: Backends, dataset: str, number: int) -> str:
    version_id = uuid.uuid4().hex
    with b.store.session() as session:
        if session.get(DatasetRecord, dataset) is None:
            session.add(DatasetRecord(name=dataset, latest_number=0))
            session.flush()
        session.add(
            DatasetVersionRecord(
                id=version_id,
                dataset=dataset,
                number=number,
                content_hash="sha256:" + "0" * 64,
                row_count=10,
                schema={"columns": []},
                source={"kind": "test"},
                snapshot_digest="sha256:" + "1" * 64,
                snapshot_size=100,
            )
        )
    return version_id


def test_steps_record_lineage_for_their_own_run(backends: Backends) -> None:
    raw = _dataset_version(backends, "sales", 1)
    clean = _dataset_version(backends, "sales_clean", 1)
    p = Pipeline("lineage")

    @p.step
    def transform(ctx: StepContext) -> None:
        ctx.record_lineage(raw)  # input is the default role
        ctx.record_lineage(raw, role="input")  # twice is once
        ctx.record_lineage(clean, role="output")

    @p.step
    def dangling(ctx: StepContext) -> None:
        ctx.record_lineage("0" * 32)

    result = _runner(backends).run(p)
    step_run = result.step("transform").attempts[0].run_id
    with backends.store.read() as session:
        rows = session.query(LineageRecord).order_by(LineageRecord.id).all()
        links = [(r.run_id, r.dataset_version_id, r.role) for r in rows]
    assert links == [(step_run, raw, "input"), (step_run, clean, "output")]
    error = result.step("dangling").error or ""
    assert error.startswith("NotFoundError: step 'dangling' recorded lineage (input) to dataset")
    with pytest.raises(InvalidInputError, match="lineage role must be one of input, output"):
        StepContext(
            pipeline="p",
            pipeline_run_id="r",
            step="s",
            run_id="r",
            attempt=1,
            params={},
            store=backends.store,
            events=backends.events,
            artifacts=None,
            cancel=threading.Event(),
        ).record_lineage(raw, role="both")
    assert issubclass(NotFoundError, LookupError)


def test_context_carries_run_params_logger_and_artifacts(
    sqlite_backends: Backends, tmp_path: Any
) -> None:
    p = Pipeline("ctx")
    seen: dict[str, Any] = {}

    @p.step(outputs="digest")
    def store_blob(ctx: StepContext) -> str:
        seen.update(
            pipeline=ctx.pipeline,
            step=ctx.step,
            attempt=ctx.attempt,
            params=dict(ctx.params),
            logger=ctx.log.name,
            run=ctx.store.runs.get(ctx.run_id),
        )
        ctx.emit("ctx.custom", {"rows": 3})
        ctx.progress(1, 2, "half")
        return ctx.artifacts.put(b"model bytes").digest

    @p.step
    def no_artifacts(ctx: StepContext) -> None:
        ctx.artifacts  # noqa: B018

    reported: list[tuple[Any, ...]] = []
    with ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts:
        runner = LocalRunner(sqlite_backends.store, sqlite_backends.events, artifacts)
        result = runner.run(p, {"lr": 0.1}, progress=lambda *a: reported.append(a))
        assert artifacts.get(result.outputs["digest"]) == b"model bytes"
    assert seen["pipeline"] == "ctx" and seen["step"] == "store_blob" and seen["attempt"] == 1
    assert seen["params"] == {"lr": 0.1}
    assert seen["logger"] == "conveyor.pipelines.ctx.store_blob"
    assert seen["run"].kind == "step" and seen["run"].parent_id == result.id
    assert reported == [("store_blob", 1, 2, "half")]
    [custom] = sqlite_backends.payloads("ctx", "ctx.custom")
    assert custom["rows"] == 3 and custom["step"] == "store_blob"
    bare = LocalRunner(sqlite_backends.store, sqlite_backends.events).run(p)
    assert "the runner has none" in (bare.step("no_artifacts").error or "")


def test_heartbeats_are_stamped_while_a_step_runs(sqlite_backends: Backends) -> None:
    p = Pipeline("beating")

    @p.step
    def long(ctx: StepContext) -> None:
        # Finishes once the runner has stamped this attempt's heartbeat.
        wait_until(
            lambda: ctx.store.runs.get(ctx.run_id).heartbeat_at is not None,
            timeout=20,
            message="the runner to stamp a heartbeat",
        )

    result = _runner(sqlite_backends, heartbeat_interval=0.02).run(p)
    assert result.status == "succeeded"
    assert sqlite_backends.store.runs.get(result.id).heartbeat_at is not None


def test_ctrl_c_records_the_run_as_cancelled_and_propagates(sqlite_backends: Backends) -> None:
    p = Pipeline("interrupted")

    @p.step
    def wait_for_ctrl_c(ctx: StepContext) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(lambda: ctx.cancelled, timeout=20, message="the step to see the cancellation")

    @p.step
    def never(ctx: StepContext) -> None:
        raise AssertionError("no step starts after Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        _runner(sqlite_backends).run(p)
    [run] = history(sqlite_backends.store, "interrupted").items
    assert run.status == "cancelled" and run.error == "interrupted (KeyboardInterrupt)"
    assert [s.name for s in run.steps] == ["wait_for_ctrl_c"]
    assert run.steps[0].status == "cancelled"
    assert sqlite_backends.kinds("interrupted")[-2:] == ["step.cancelled", "pipeline.finished"]


def test_bad_runner_options_and_params_are_refused_before_anything_is_written(
    sqlite_backends: Backends,
) -> None:
    with pytest.raises(InvalidInputError, match=r"stale_after .* must be longer"):
        _runner(sqlite_backends, heartbeat_interval=5, stale_after=5)
    with pytest.raises(InvalidInputError, match="heartbeat_interval must be"):
        _runner(sqlite_backends, heartbeat_interval=0)
    p = Pipeline("params")
    p.add_step(lambda ctx: None, name="s")
    with pytest.raises(InvalidInputError, match=r"params\.when"):
        _runner(sqlite_backends).run(p, {"when": object()})
    with pytest.raises(InvalidInputError, match=r"run\(\) takes a Pipeline"):
        _runner(sqlite_backends).run("params")  # type: ignore[arg-type]
    assert sqlite_backends.store.runs.list().items == []
