"""Pipeline definitions: the graph, its order, and every definition error with its names."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import InvalidInputError
from conveyor.pipelines import OnNewVersion, Pipeline, PipelineDefinitionError, StepOutputError
from fresh_python import loaded_of


def _noop(ctx: Any, **inputs: Any) -> Any:
    return None


def test_steps_run_in_topological_order_with_declaration_order_among_ready_steps() -> None:
    p = Pipeline("order")

    @p.step(inputs=("b", "c"), outputs="d")
    def join(ctx: Any, b: int, c: int) -> int:
        return b + c

    @p.step(inputs="a", outputs="b")
    def left(ctx: Any, a: int) -> int:
        return a

    @p.step(outputs="a")
    def source(ctx: Any) -> int:
        return 1

    @p.step(inputs="a", outputs="c")
    def right(ctx: Any, a: int) -> int:
        return a

    @p.step(outputs="z")
    def lonely(ctx: Any) -> int:
        return 0

    assert [s.name for s in p.steps] == ["join", "left", "source", "right", "lonely"]
    assert [s.name for s in p.order()] == ["source", "left", "right", "join", "lonely"]
    assert p.upstream("join") == ("left", "right")
    assert p.downstream("source") == {"left", "right", "join"}
    assert p.downstream("lonely") == set()


def test_a_cycle_is_refused_when_the_step_closing_it_is_declared() -> None:
    p = Pipeline("cyclic")
    p.add_step(_noop, name="a", inputs=("z",), outputs=("x",))
    p.add_step(_noop, name="b", inputs=("x",), outputs=("y",))
    with pytest.raises(PipelineDefinitionError, match=r"step 'c'.*cycle: c -> a -> b -> c"):
        p.add_step(_noop, name="c", inputs=("y",), outputs=("z",))
    assert [s.name for s in p.steps] == ["a", "b"]  # the refused step was not added


def test_a_step_cannot_consume_its_own_output() -> None:
    p = Pipeline("selfish")
    with pytest.raises(PipelineDefinitionError, match="'x' is both an input and an output"):
        p.add_step(_noop, name="a", inputs=("x",), outputs=("x",))


def test_missing_producer_names_the_step_and_the_input() -> None:
    p = Pipeline("gap")

    @p.step(inputs=("features",))
    def train(ctx: Any, features: Any) -> None:
        pass

    with pytest.raises(PipelineDefinitionError) as info:
        p.validate()
    assert "step 'train' needs input 'features'" in str(info.value)
    assert info.value.context["step"] == "train"
    assert info.value.context["input"] == "features"
    with pytest.raises(PipelineDefinitionError, match="needs input 'features'"):
        p.order()


def test_empty_pipeline_is_refused_on_use() -> None:
    with pytest.raises(PipelineDefinitionError, match="has no steps"):
        Pipeline("empty").validate()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": ("x",)}, "already produced by step 'first'"),
        ({"inputs": ("not valid",)}, "inputs name 'not valid' is not a Python identifier"),
        ({"outputs": ("class",)}, "outputs name 'class' is not a Python identifier"),
        ({"outputs": ("y", "y")}, "outputs name 'y' is given twice"),
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"retries": 1.5}, "retries must be an integer >= 0"),
        ({"backoff": float("nan")}, "backoff must be a finite number"),
        ({"timeout": 0}, r"timeout must be a finite number of seconds > 0"),
        ({"retry_on": (ValueError, "oops")}, "retry_on must be an exception class"),
        ({"name": "two words"}, "must be a Python identifier"),
        ({"name": "first"}, "step 'first' is declared twice"),
    ],
)
def test_bad_step_options_name_the_pipeline_step_and_field(
    kwargs: dict[str, Any], message: str
) -> None:
    p = Pipeline("opts")
    p.add_step(_noop, name="first", outputs=("x",))
    options = {"name": "second", **kwargs}
    with pytest.raises(PipelineDefinitionError, match=message) as info:
        p.add_step(_noop, **options)
    assert info.value.context["pipeline"] == "opts"
    assert str(info.value).startswith("pipeline 'opts'")


def test_signature_must_match_the_declared_inputs() -> None:
    p = Pipeline("sig")
    with pytest.raises(PipelineDefinitionError, match="must take the step context first"):
        p.add_step(lambda: None, name="no_ctx")
    with pytest.raises(PipelineDefinitionError, match="input 'raw' has no parameter"):

        @p.step(inputs=("raw",))
        def wrong_name(ctx: Any, data: Any = None) -> None:
            pass

    with pytest.raises(PipelineDefinitionError, match=r"parameter 'extra' .* not a declared input"):

        @p.step(inputs=("raw",))
        def extra_param(ctx: Any, raw: Any, extra: Any) -> None:
            pass

    # **kwargs takes any input; a parameter with a default need not be an input.
    @p.step(outputs=("raw",))
    def produce(ctx: Any, scale: int = 2) -> int:
        return scale

    @p.step(inputs=("raw",))
    def anything(ctx: Any, **inputs: Any) -> None:
        pass

    p.validate()


def test_decorator_returns_the_function_unchanged_and_works_bare() -> None:
    p = Pipeline("bare")

    @p.step
    def hello(ctx: Any) -> None:
        return None

    assert hello(None) is None
    assert p["hello"].outputs == ()
    with pytest.raises(PipelineDefinitionError, match="has no step 'nope'"):
        p["nope"]


def test_a_single_string_is_one_name_not_its_letters() -> None:
    p = Pipeline("strings")
    step = p.add_step(_noop, name="a", outputs="raw")
    assert step.outputs == ("raw",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "* * * *"}, "not a cron expression of five fields"),
        ({"schedule": "*/5 * * * * *"}, "not a cron expression of five fields"),
        ({"schedule": "61 * * * *"}, "is not a valid cron expression"),
        ({"catch_up": "all"}, "catch_up must be 'latest' or 'none'"),
        ({"triggers": ["sales"]}, "is not a trigger"),
        ({"triggers": [OnNewVersion("s"), OnNewVersion("s")]}, "given twice"),
        ({"retry_crashed": "yes"}, "retry_crashed must be True or False"),
    ],
)
def test_bad_pipeline_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message) as info:
        Pipeline("p", **kwargs)
    assert "pipeline 'p'" in str(info.value)


@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "x" * 201, None])
def test_bad_pipeline_names(name: Any) -> None:
    with pytest.raises(PipelineDefinitionError, match="a pipeline name is"):
        Pipeline(name)


def test_cron_schedule_is_normalised() -> None:
    assert Pipeline("p", schedule="  */5   * * * *").schedule == "*/5 * * * *"


def test_outputs_are_checked_against_the_declaration() -> None:
    p = Pipeline("outs")
    one = p.add_step(_noop, name="one", outputs=("a",))
    two = p.add_step(_noop, name="two", outputs=("b", "c"))
    none = p.add_step(_noop, name="none")
    assert one.outputs_from([1]) == {"a": [1]}
    assert two.outputs_from({"c": 2, "b": 1}) == {"b": 1, "c": 2}
    assert none.outputs_from(None) == {}
    with pytest.raises(StepOutputError, match=r"step 'two' .* missing 'c'; undeclared 'd'"):
        two.outputs_from({"b": 1, "d": 2})
    with pytest.raises(StepOutputError, match="must return a dict with those keys"):
        two.outputs_from([1, 2])
    with pytest.raises(StepOutputError, match=r"step 'none' .* declares no outputs"):
        none.outputs_from(3)
    # A wrong return value is a bug: never retried, whatever retry_on says.
    assert not two.retryable(StepOutputError("x"))
    assert isinstance(StepOutputError("x"), InvalidInputError)


@given(
    retry=st.integers(min_value=0, max_value=60),
    backoff=st.floats(min_value=0, max_value=100),
    max_backoff=st.floats(min_value=0, max_value=100),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_full_jitter_under_the_capped_exponential(
    retry: int, backoff: float, max_backoff: float, seed: int
) -> None:
    p = Pipeline("jitter")
    step = p.add_step(_noop, name="s", retries=3, backoff=backoff, max_backoff=max_backoff)
    delay = step.delay(retry, random.Random(seed))
    cap = min(max_backoff, backoff * 2.0**retry)
    assert 0.0 <= delay <= cap
    # The formula is random.uniform(0, cap), draw for draw.
    assert delay == random.Random(seed).uniform(0, cap)
    # Retry 5000 does not overflow: its cap is max_backoff.
    assert 0.0 <= step.delay(5000, random.Random(seed)) <= max_backoff


def test_importing_the_package_and_defining_pipelines_stays_light() -> None:
    code = (
        "from conveyor.pipelines import Pipeline, OnNewVersion\n"
        "Pipeline('x', triggers=[OnNewVersion('d')])"
    )
    assert loaded_of(("sqlalchemy", "croniter", "typer", "rich", "pyarrow"), code) == []


def test_package_exports_every_name_in_all() -> None:
    import conveyor.pipelines as package

    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert callable(package.history)  # the function, not a submodule of that name
