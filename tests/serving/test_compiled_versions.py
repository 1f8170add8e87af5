"""A linear version is served from the formula recorded at its registration: the model's
answers, its artifact still verified, and no scikit-learn import until something needs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import ModelUnavailableError
from conveyor.registry import Registry
from conveyor.registry.formula import KIND
from conveyor.registry.versions import ModelVersion
from conveyor.serving.pool import ModelPool
from conveyor.serving.settings import BatchingSpec
from conveyor.store.database import MetadataStore

T = TypeVar("T")
RNG = np.random.default_rng(11)
FRAME = pd.DataFrame(RNG.normal(size=(300, 6)) * 3, columns=[f"x{i}" for i in range(6)])
LABELS = np.array(["no", "yes", "maybe"])[np.digitize(FRAME["x0"] - FRAME["x1"] * 0.5, [-2.0, 2.0])]


def _registry(tmp_path: Path) -> tuple[MetadataStore, ArtifactStore, Registry]:
    store = MetadataStore.from_url(f"sqlite:///{tmp_path}/c.db")
    artifacts = ArtifactStore.from_url(f"file://{tmp_path}/a")
    return store, artifacts, Registry(store, artifacts)


def _stored(tmp_path: Path, digest: str) -> Path:
    hex_digest = digest.split(":")[1]
    return tmp_path / "a" / "sha256" / hex_digest[:2] / hex_digest[2:]


def test_a_linear_version_records_its_formula_and_other_models_do_not(tmp_path: Path) -> None:
    scaled = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(FRAME, LABELS)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(FRAME, LABELS)
    words = pd.DataFrame({"plan": ["free", "pro"] * 50, "x0": RNG.normal(size=100)})
    encoded = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(
        words[["plan"]], (words["plan"] == "pro").astype(int)
    )
    store, artifacts, registry = _registry(tmp_path)
    with store, artifacts:
        linear = registry.register("m", scaled, signature_from=FRAME)
        assert linear.compiled is not None and linear.compiled["kind"] == KIND
        assert artifacts.verify(linear.compiled["digest"])
        assert registry.resolve("m@1").compiled == linear.compiled  # read back from the store
        assert registry.resolve("m@1").to_dict()["compiled"] == linear.compiled
        assert registry.register("m", forest, signature_from=FRAME).compiled is None
        assert registry.register("m", scaled).compiled is None  # no signature, no example rows
        assert registry.register("w", encoded, signature_from=words[["plan"]]).compiled is None


def test_the_pool_serves_the_formula_and_loads_the_model_only_when_asked(
    tmp_path: Path,
) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(FRAME, LABELS)
    store, artifacts, registry = _registry(tmp_path)
    with store, artifacts:
        registry.register("m", model, signature_from=FRAME)
    rows = RNG.normal(size=(50, 6)) * 3
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        import numpy as np, pyarrow as pa
        from conveyor.artifacts.store import ArtifactStore
        from conveyor.registry import Registry
        from conveyor.serving.pool import ModelPool, verify_version
        from conveyor.serving.settings import BatchingSpec
        from conveyor.store.database import MetadataStore

        rows = np.array({rows.tolist()!r})
        table = pa.table({{f"x{{i}}": rows[:, i] for i in range(6)}})

        async def main():
            with (
                MetadataStore.from_url("sqlite:///{tmp_path}/c.db") as store,
                ArtifactStore.from_url("file://{tmp_path}/a") as artifacts,
            ):
                registry = Registry(store, artifacts)
                verify_version(registry, "m", 1)  # what deploy, route set and rollback run
                pool = ModelPool(registry, BatchingSpec())
                served = await pool.ensure("m", 1)
                answers = (await served.batcher.submit(table)).tolist()
                before = "sklearn" in sys.modules
                # off the loop: on it, a model not loaded yet raises NotOnTheLoop
                frame = table.to_pandas()
                proba = (await asyncio.to_thread(
                    lambda: served.loaded.model.predict_proba(frame)
                )).tolist()
                await pool.close()
                return {{"answers": answers, "sklearn_before": before,
                        "sklearn_after": "sklearn" in sys.modules, "proba": proba}}

        print(json.dumps(asyncio.run(main())))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    frame = pd.DataFrame(rows, columns=FRAME.columns)
    assert seen["answers"] == model.predict(frame).tolist()
    # verified and answered without importing scikit-learn
    assert seen["sklearn_before"] is False
    assert seen["sklearn_after"] is True  # the model, unpickled when predict_proba was asked
    assert np.array_equal(np.array(seen["proba"]), model.predict_proba(frame))


@dataclass
class Linear:
    """A LogisticRegression registered as m@1, its formula recorded."""

    model: LogisticRegression
    registry: Registry
    version: ModelVersion


@pytest.fixture
def linear(tmp_path: Path) -> Iterator[Linear]:
    model = LogisticRegression(max_iter=2000).fit(FRAME, LABELS)
    store, artifacts, registry = _registry(tmp_path)
    with store, artifacts:
        version = registry.register("m", model, signature_from=FRAME)
        assert version.compiled is not None
        yield Linear(model, registry, version)


def _served(registry: Registry, use: Callable[[Any], Awaitable[T]], **pool: Any) -> T:
    """``use(served m@1)`` in a fresh pool, closed after."""

    async def run() -> T:
        models = ModelPool(registry, BatchingSpec(), **pool)
        try:
            return await use(await models.ensure("m", 1))
        finally:
            await models.close()

    return asyncio.run(run())


async def _nothing(served: Any) -> None:
    return None


@pytest.mark.parametrize("which", ["model", "formula"])
def test_a_tampered_artifact_is_refused_even_when_the_formula_would_serve(
    linear: Linear, tmp_path: Path, which: str
) -> None:
    version = linear.version
    assert version.compiled is not None
    digest = version.artifact_digest if which == "model" else version.compiled["digest"]
    stored = _stored(tmp_path, digest)
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(ModelUnavailableError) as caught:
        _served(linear.registry, _nothing)
    assert caught.value.context["reason"] == "artifact_tampered"
    assert str(tmp_path) not in caught.value.message


def test_non_finite_rows_get_the_models_own_error_through_the_deferred_model(
    linear: Linear,
) -> None:
    rows = FRAME.head(3).to_numpy().copy()
    rows[1, 2] = np.inf
    table = pa.table({name: rows[:, i] for i, name in enumerate(FRAME.columns)})

    async def predict(served: Any) -> object:
        assert not served.loaded.model.loaded  # served from the formula so far
        return await served.batcher.submit(table)

    with pytest.raises(ValueError) as ours:
        _served(linear.registry, predict)
    with pytest.raises(ValueError) as theirs:
        linear.model.predict(rows)
    assert str(ours.value) == str(theirs.value)


def test_closed_form_off_loads_the_model_itself(linear: Linear) -> None:
    async def model(served: Any) -> object:
        return served.loaded.model

    assert isinstance(_served(linear.registry, model, closed_form=False), LogisticRegression)


def test_a_formula_missing_from_the_store_falls_back_to_the_model_itself(
    linear: Linear, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert linear.version.compiled is not None
    _stored(tmp_path, linear.version.compiled["digest"]).unlink()  # a store copied without it
    table = pa.Table.from_pandas(FRAME.head(5), preserve_index=False)

    async def answer(served: Any) -> tuple[object, list[object]]:
        return served.loaded.model, (await served.batcher.submit(table)).tolist()

    with caplog.at_level("WARNING", logger="conveyor.serving"):
        loaded, answers = _served(linear.registry, answer)
    assert isinstance(loaded, LogisticRegression)  # loaded whole, and serving
    assert answers == linear.model.predict(FRAME.head(5)).tolist()
    assert "formula" in caplog.text and "not in the artifact store" in caplog.text


def test_the_model_behind_a_formula_never_loads_on_the_event_loop(linear: Linear) -> None:
    import threading

    from conveyor.registry.formula import DeferredModel, NotOnTheLoop

    async def on_the_loop() -> None:
        DeferredModel(lambda: "model").resolve()

    with pytest.raises(NotOnTheLoop):
        asyncio.run(on_the_loop())
    assert DeferredModel(lambda: "model").resolve() == "model"  # off any loop: loads

    registry = linear.registry
    loads: list[str] = []
    load = registry.load

    def counted(version: object) -> object:
        loads.append(threading.current_thread().name)
        return load(version)  # type: ignore[arg-type]

    registry.load = counted  # type: ignore[method-assign,assignment]
    finite = pa.Table.from_pandas(FRAME.head(1), preserve_index=False)
    rows = FRAME.head(1).to_numpy().copy()
    rows[0, 3] = np.nan
    bad = pa.table({name: rows[:, i] for i, name in enumerate(FRAME.columns)})

    async def predict(served: Any) -> str:
        for _ in range(20):  # lone cheap calls: measured, then run on the loop
            await served.batcher.submit(finite, alone=True)
        assert any(b.inline for b in served.batcher.history)
        with pytest.raises(ValueError) as caught:
            await served.batcher.submit(bad, alone=True)
        assert not served.batcher.history[-1].inline  # the NaN went to a thread
        return str(caught.value)

    loop_thread = threading.current_thread().name  # asyncio.run runs the loop here
    assert "NaN" in _served(registry, predict)
    assert len(loads) == 1 and loads[0] != loop_thread  # unpickled once, on a worker thread
