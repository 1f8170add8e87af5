"""The versions a worker serves: loaded through the registry, warmed up, each with its batcher.

A version is loaded (sha256 verified, signature kept) and warmed up on the
example rows its signature keeps, in a thread, so the event loop never waits on it; it is
only used by a route once that is done, which is what makes a route change
fail no request. Versions no route uses any more are closed after a grace
period, when the requests they were still answering have finished.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.errors import IntegrityError, ModelUnavailableError, VersionRefusedError
    from conveyor.registry.registry import Registry
    from conveyor.registry.versions import LoadedModel, ModelVersion
    from conveyor.serving.batcher import Batcher
    from conveyor.serving.settings import BatchingSpec

import logging

from conveyor._gc import long_lived
from conveyor.serving.dense import DenseRows, dense_columns

log = logging.getLogger("conveyor.serving")

__all__ = ["ModelPool", "Served", "load_verified", "refused", "verify_version", "warmup_table"]

_GRACE_S = 30.0
_RETRY_S = 5.0


@dataclass
class Served:
    """One loaded version and the batcher in front of it."""

    version: ModelVersion
    loaded: LoadedModel
    batcher: Batcher
    loaded_at: float = field(default_factory=time.monotonic)
    unused_since: float | None = None
    #: What the model answered to the warm-up rows: the shape of every answer it gives
    #: (Open Inference Protocol metadata declares its outputs from it). None: no warm-up.
    sample_output: Any = None
    #: The input names when the version takes rows as a float64 matrix (serving/dense.py):
    #: every input is float64 and the model predicts from a matrix. None otherwise.
    dense: tuple[str, ...] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.version.model, self.version.number

    def enforce(self, table: pa.Table | DenseRows) -> pa.Table | DenseRows:
        """The request rows in the signature's columns and types (InvalidInputError naming one).

        Dense rows of exactly this version's inputs are already that; dense rows made for
        another version (a shadow of another signature) are checked as the table they are.
        """
        if type(table) is DenseRows:
            if table.names == self.dense:
                return table
            table = table.to_arrow()
        signature = self.loaded.signature
        return table if signature is None else signature.enforce(table)


def warmup_table(loaded: LoadedModel, rows: int = 2) -> pa.Table | None:
    """``rows`` rows to warm the model up with: its signature's example (real rows of its
    training frame) when it has one, else rows of zeros and empty strings in the
    signature's types; None without a signature."""
    import pyarrow as pa

    signature = loaded.signature
    if signature is None:
        return None
    real = signature.example_table(rows)
    if real is not None:
        return real
    columns = {}
    for column in signature.arrow_schema():
        target = column.type
        if pa.types.is_string(target) or pa.types.is_large_string(target):
            columns[column.name] = pa.array([""] * rows, type=target)
        elif pa.types.is_boolean(target):
            columns[column.name] = pa.array([False] * rows, type=target)
        elif pa.types.is_timestamp(target):
            columns[column.name] = pa.array([0] * rows, type=pa.int64()).cast(target)
        elif pa.types.is_dictionary(target):
            columns[column.name] = pa.array([""] * rows).dictionary_encode()
        else:
            columns[column.name] = pa.array([0] * rows).cast(target)
    return pa.table(columns)


def warmup_failed(loaded: LoadedModel, exc: Exception) -> ModelUnavailableError:
    """The error for a version whose warm-up prediction failed: the model's own error, and,
    when it was warmed up on synthesized rows, how to give it real ones."""
    from conveyor.errors import ModelUnavailableError

    ref = loaded.version.ref
    signature = loaded.signature
    hint = ""
    if signature is not None and not signature.example:
        hint = (
            "; it was warmed up on synthesized rows (zeros, empty strings) because it was "
            "registered without an input example: register it again with signature_from= "
            "its training frame, whose first rows become the example"
        )
    return ModelUnavailableError(
        f"{ref} cannot serve: its warm-up prediction failed: {type(exc).__name__}: {exc}{hint}",
        model=loaded.version.model,
        version=loaded.version.number,
        reason="warm_up_failed",
    )


def _flavor_predict(loaded: LoadedModel) -> Any:
    flavor, estimator = loaded.flavor, loaded.model

    def predict(table: pa.Table) -> Any:
        return flavor.predict(estimator, table)

    return predict


_NAMES_WARNING = r"X does not have valid feature names"


def matrix_predict(loaded: LoadedModel, *, closed: bool = True) -> Any:
    """A faster ``predict`` for an all-numeric scikit-learn-style model, or None.

    The flavor hands scikit-learn a pandas frame, so that models fitted on
    named columns see their names; building that frame costs more than a
    linear model's prediction (it was 45% of a server's time). After the
    signature check the columns are exactly the model's, in its order, so a
    float matrix says the same. The fast path is used only when it gives the
    same predictions as the flavor on the warm-up rows, and scikit-learn's
    "X does not have valid feature names" warning is then silenced for the
    process (the names were checked by the signature).

    With ``closed`` (``serving.closed_form``), a linear model is predicted by its
    formula (:mod:`conveyor.serving.closed_form`), checked the same way.
    """
    import warnings

    from conveyor.registry.formula import numeric_inputs, probe_rows, same_answers
    from conveyor.serving.closed_form import closed_form

    if loaded.flavor.name not in ("sklearn", "xgboost", "lightgbm"):
        return None
    if not numeric_inputs(loaded.signature):
        return None
    estimator = loaded.model
    predict_fn = (closed_form(estimator) if closed else None) or getattr(estimator, "predict", None)
    if predict_fn is None:
        return None
    predict = _on_matrices(predict_fn)

    sample = warmup_table(loaded, rows=4)
    if sample is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NAMES_WARNING)
            for rows in (sample, probe_rows(sample)):
                if not same_answers(predict(rows), loaded.flavor.predict(estimator, rows)):
                    return None
    except Exception:  # the model wants its frame (a ColumnTransformer by name, ...)
        return None
    warnings.filterwarnings("ignore", message=_NAMES_WARNING)
    return predict


def _on_matrices(predict_fn: Any) -> Any:
    """``predict(rows)`` for dense rows or an Arrow table of numeric columns, through
    ``predict_fn(float64 matrix)``."""
    from conveyor.registry.formula import as_matrix

    def predict(table: pa.Table | DenseRows) -> Any:
        if isinstance(table, DenseRows):
            return predict_fn(table.matrix)
        return predict_fn(as_matrix(table))

    return predict


def load_compiled(
    registry: Registry, model: str, number: int
) -> tuple[LoadedModel, Any, Any] | None:
    """``model@number`` served from the formula recorded at its registration, without
    unpickling the model: ``(loaded, predict, what it answered to the warm-up rows)``,
    or None when the version records no formula (or its signature has no example).

    Both artifacts' sha256 are checked (the model's too, though only the formula is
    read into memory now): ModelUnavailableError ``artifact_tampered`` as for a full
    load. A formula missing from the store (derived data, say a store copied without
    it) is None too, with a warning: the version then loads whole. ``loaded.model`` is a
    :class:`~conveyor.registry.formula.DeferredModel`, which unpickles the model the
    first time something needs it (a matrix that is not all finite goes to the model's
    own ``predict``).
    """
    from conveyor.errors import IntegrityError, NotFoundError
    from conveyor.registry.flavors import Conformed, get_flavor
    from conveyor.registry.formula import KIND, DeferredModel, Formula
    from conveyor.registry.signature import Signature
    from conveyor.registry.versions import LoadedModel
    from conveyor.serving.closed_form import guarded

    found = registry.resolve(f"{model}@{number}")
    compiled = found.compiled
    if not compiled or compiled.get("kind") != KIND or not found.signature:
        return None
    signature = Signature.from_dict(found.signature)
    table = signature.example_table(2)
    if table is None:
        return None
    try:
        if not registry.artifacts.verify(found.artifact_digest):
            raise IntegrityError(
                "the model artifact does not hash to its digest",
                expected=found.artifact_digest,
            )
        try:
            data = registry.artifacts.get(compiled["digest"])
        except NotFoundError:  # derived data, not the model: serve the model itself
            log.warning(
                "%s@%s: its formula %s is not in the artifact store; loading the model itself",
                model,
                number,
                compiled["digest"],
            )
            return None
        formula = Formula.from_bytes(data)
    except IntegrityError as exc:
        raise _tampered(model, number, exc) from None
    flavor: Any = get_flavor(found.flavor)
    if signature.outputs:
        flavor = Conformed(flavor, signature.outputs)
    deferred = DeferredModel(lambda: registry.load(found).model)
    loaded = LoadedModel(found, deferred, flavor, signature, ())
    predict = _on_matrices(guarded(formula, lambda: deferred.predict))
    import warnings

    # A matrix the formula leaves to the model has the signature's columns (checked).
    warnings.filterwarnings("ignore", message=_NAMES_WARNING)
    try:
        sample = predict(table)
        if signature.outputs:
            from conveyor.registry.outputs import conform

            sample = conform(sample, signature.outputs)
    except Exception as exc:
        raise warmup_failed(loaded, exc) from exc
    return loaded, predict, sample


def load_verified(
    registry: Registry, model: str, number: int, *, warm_ups: int = 3
) -> tuple[LoadedModel, Any]:
    """``model@number`` loaded (its artifact's sha256 checked) and warmed up on its
    example rows: ``(loaded, what it answered)``. ModelUnavailableError (reason
    ``artifact_tampered`` or ``warm_up_failed``) when it cannot serve; the message never
    names a path of this machine (the log does)."""
    from conveyor.errors import IntegrityError

    try:
        loaded = registry.load(f"{model}@{number}")
    except IntegrityError as exc:
        raise _tampered(model, number, exc) from None
    table = warmup_table(loaded)
    sample = None
    if table is not None:
        try:
            for _ in range(warm_ups):  # first calls pay for lazy imports, JIT, allocator growth
                sample = loaded.flavor.predict(loaded.model, table)
        except Exception as exc:
            raise warmup_failed(loaded, exc) from exc
    return loaded, sample


def _tampered(model: str, number: int, exc: IntegrityError) -> ModelUnavailableError:
    """The error for a version whose artifact failed its sha256 check: logged with the
    store's detail, answered without it (no path of this machine)."""
    from conveyor.errors import ModelUnavailableError

    log.error("%s@%s cannot be loaded: %s", model, number, exc.message)
    return ModelUnavailableError(
        f"{model}@{number} cannot serve: its artifact failed its integrity check "
        f"(expected {exc.context.get('expected', 'its digest')}); the operator must "
        "restore it",
        model=model,
        version=number,
        reason="artifact_tampered",
    )


def refused(exc: ModelUnavailableError) -> VersionRefusedError:
    """A route change's refusal for a version that cannot serve (the reason kept)."""
    from conveyor.errors import VersionRefusedError

    return VersionRefusedError(
        f"route not changed: {exc.message}",
        **{k: v for k, v in exc.context.items() if k in ("model", "version", "reason")},
    )


def verify_version(registry: Registry, model: str, number: int) -> None:
    """What ``deploy`` and ``route set`` run before they commit a route naming a new
    version: its artifact hash checked and one warm-up prediction made, as a server
    loads it (from its recorded formula when it has one: both artifacts' hashes, no
    unpickling, so a deploy or a rollback of a linear model does not import
    scikit-learn). VersionRefusedError (with the reason) when it cannot serve."""
    from conveyor.errors import ModelUnavailableError

    try:
        if load_compiled(registry, model, number) is None:
            load_verified(registry, model, number, warm_ups=1)
    except ModelUnavailableError as exc:
        raise refused(exc) from None


class ModelPool:
    """Loaded versions by ``(model, number)``; loads run in a thread."""

    def __init__(
        self,
        registry: Registry,
        batching: BatchingSpec,
        *,
        on_batch: Any = None,
        closed_form: bool = True,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self.closed_form = closed_form
        self.on_batch = on_batch
        self._served: dict[tuple[str, int], Served] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[Served]] = {}
        #: Versions that failed to load: (error, monotonic time until which it is kept), so
        #: requests naming a tampered version do not each re-read and re-hash its artifact.
        self._failed: dict[tuple[str, int], tuple[BaseException, float]] = {}
        self.retry_s = _RETRY_S

    def get(self, model: str, number: int) -> Served | None:
        return self._served.get((model, number))

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._served

    @property
    def served(self) -> list[Served]:
        return list(self._served.values())

    async def ensure(self, model: str, number: int) -> Served:
        """The version, loaded and warmed up (loads once, however many ask at once)."""
        key = (model, number)
        found = self._served.get(key)
        if found is not None:
            found.unused_since = None
            return found
        failed = self._failed.get(key)
        if failed is not None:
            if time.monotonic() < failed[1]:
                raise failed[0]
            del self._failed[key]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(model, number))
            self._loading[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(pending)

    def _settled(self, key: tuple[str, int], done: asyncio.Future[Served]) -> None:
        self._loading.pop(key, None)
        if done.cancelled():
            return
        exc = done.exception()
        from conveyor.errors import ModelUnavailableError

        if isinstance(exc, ModelUnavailableError):  # not a store hiccup: keep it a while
            self._failed[key] = (exc, time.monotonic() + self.retry_s)

    async def _load(self, model: str, number: int) -> Served:
        from conveyor.serving.batcher import Batcher

        loop = asyncio.get_running_loop()
        loaded, sample, fast = await loop.run_in_executor(None, self._load_sync, model, number)
        spec = self.batching
        name = f"{model}@{number}"
        predict = fast or _flavor_predict(loaded)

        on_batch = None
        if self.on_batch is not None:
            callback = self.on_batch

            def on_batch(size: int, seconds: float) -> None:
                callback(model, number, size, seconds)

        batcher = Batcher(
            predict,
            max_batch_size=spec.max_batch_size,
            max_wait_ms=spec.max_wait_ms,
            max_queue=max(spec.max_queue, spec.max_batch_size),
            name=name,
            on_batch=on_batch,
            inline_max_ms=spec.inline_max_ms,
        )
        dense = dense_columns(loaded.signature) if fast is not None else None
        served = Served(loaded.version, loaded, batcher, sample_output=sample, dense=dense)
        self._served[(model, number)] = served
        return served

    def _load_sync(self, model: str, number: int) -> tuple[LoadedModel, Any, Any]:
        """``(loaded, warm-up answers, matrix predict or None)``: from the version's
        recorded formula when it has one and ``serving.closed_form`` is on (the model is
        not unpickled), else the model loaded, warmed up and its fast path checked; the
        collector off meanwhile, the model frozen afterwards (conveyor._gc)."""
        with long_lived():
            return self._load_now(model, number)

    def _load_now(self, model: str, number: int) -> tuple[LoadedModel, Any, Any]:
        if self.closed_form:
            compiled = load_compiled(self.registry, model, number)
            if compiled is not None:
                loaded, predict, sample = compiled
                return loaded, sample, predict
        loaded, sample = load_verified(self.registry, model, number)
        return loaded, sample, matrix_predict(loaded, closed=self.closed_form)

    async def retire(self, keep: set[tuple[str, int]], *, grace_s: float = _GRACE_S) -> None:
        """Mark versions outside ``keep`` unused; close those unused for ``grace_s``."""
        now = time.monotonic()
        for key, served in list(self._served.items()):
            if key in keep:
                served.unused_since = None
                continue
            if served.unused_since is None:
                served.unused_since = now
            elif now - served.unused_since >= grace_s and not served.batcher.queue_depth:
                del self._served[key]
                await served.batcher.close(drain=True)

    async def close(self) -> None:
        """Drain every batcher (in-flight requests finish) and forget the versions."""
        served, self._served = list(self._served.values()), {}
        for s in served:
            await s.batcher.close(drain=True)
