"""Register many model versions at once: one transaction, one commit, one fsync.

::

    from conveyor.registry.batch import RegisterItem, register_many

    versions = register_many(registry, [
        RegisterItem("fraud", model_a, tags={"fold": "1"}),
        {"name": "fraud", "model": model_b, "metrics": {"auc": 0.91}},
    ])
    [v.number for v in versions]     # e.g. [7, 8]: contiguous, in item order

Each :meth:`Registry.register` commits on its own, so with ``synchronous=FULL``
on SQLite (or a PostgreSQL commit) every version costs one disk flush. A batch
checks and serialises every item first (an invalid item fails the whole batch
with the item's index, before anything is written), stores the artifacts,
then numbers and inserts every row in ONE transaction with the same rule as
``Registry._insert`` (an atomic ``UPDATE registered_models SET latest_version
= latest_version + k ... RETURNING``), and finally emits one durable
``model.registered`` event per version. The versions of one model in a batch
get contiguous numbers; a single registration running at the same time gets
a number before or after the whole run, never inside it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from conveyor.errors import ConveyorError, InvalidInputError, ModelUnavailableError
from conveyor.registry.events import MODEL_REGISTERED
from conveyor.registry.registry import _dataset_id, check_model_name
from conveyor.registry.versions import ModelVersion
from conveyor.store.retry import retry_on_conflict
from conveyor.store.runs import clean_metrics

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.registry.flavors import Flavor
    from conveyor.registry.outputs import Output
    from conveyor.registry.registry import Registry
    from conveyor.registry.signature import Signature

__all__ = ["RegisterItem", "copy_version", "register_many"]

log = logging.getLogger("conveyor.registry")


@dataclass(frozen=True, slots=True)
class RegisterItem:
    """One version to register: the arguments of :meth:`Registry.register`, as data."""

    name: str
    model: Any
    signature_from: Any = None
    params: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] | None = None
    run_id: str | None = None
    parent: ModelVersion | str | None = None
    dataset_versions: Sequence[Any] = ()
    tags: Mapping[str, Any] | None = None
    description: str | None = None
    actor: str | None = None
    inputs: Sequence[Mapping[str, Any]] = ()


_FIELDS = tuple(f.name for f in fields(RegisterItem))


@dataclass(slots=True)
class _Prepared:
    name: str
    description: str | None
    actor: str | None
    payload: bytes
    media_type: str
    values: dict[str, Any] = field(default_factory=dict)
    #: The formula's artifact (conveyor.registry.formula), when the model has one.
    compiled: bytes | None = None


def register_many(
    registry: Registry, items: Iterable[RegisterItem | Mapping[str, Any]]
) -> list[ModelVersion]:
    """Register every item as the next version of its model; versions in item order.

    All or nothing for the metadata: an invalid item raises (the error's
    message starts with ``item N:``, its context holds ``index`` and a field
    named ``items[N].<field>``) before any artifact or row is written; a
    failing transaction writes no row. Artifacts already stored when the
    transaction fails stay, unreferenced, as after a failed ``register``
    (content-addressed, so a retry reuses them). Items are serialised in
    memory before anything is written: split very large batches.
    """
    prepared = [_prepare(registry, i, item) for i, item in enumerate(items)]
    return store_prepared(registry, prepared)


def prepare_item(registry: Registry, item: RegisterItem) -> _Prepared:
    """Check and serialise one item, with errors naming its own fields (``register``'s path)."""
    return _prepare_item(registry, item)


def store_prepared(registry: Registry, prepared: list[_Prepared]) -> list[ModelVersion]:
    """Write the artifacts, then number and insert every row in one transaction, then the events.

    The one write path of :meth:`Registry.register` (a batch of one) and
    :func:`register_many`.
    """
    if not prepared:
        return []
    for p in prepared:
        ref = registry.artifacts.put(p.payload, media_type=p.media_type)
        p.values["artifact_digest"] = ref.digest
        p.values["artifact_size"] = ref.size
        p.values["compiled"] = None
        if p.compiled is not None:
            from conveyor.registry.formula import store

            p.values["compiled"] = store(registry.artifacts, p.compiled)
    versions = _insert_all(registry, prepared)
    if registry.events is not None:
        from conveyor.events.catalogue import check_payload
        from conveyor.events.schema import Event

        # One audit batch (one commit) rather than a record() per version: each payload is
        # checked against the kind as record() would, then all are committed together.
        batch = []
        for v, p in zip(versions, prepared, strict=True):
            payload = {
                "version_id": v.id,
                "flavor": v.flavor,
                "artifact_digest": v.artifact_digest,
                "run_id": v.run_id,
                "parent_id": v.parent_id,
                "dataset_version_ids": v.dataset_version_ids,
                "metrics": v.metrics,
            }
            check_payload(MODEL_REGISTERED, payload)
            batch.append(
                Event(
                    MODEL_REGISTERED.name,
                    subject=v.model,
                    subject_version=str(v.number),
                    actor=p.actor,
                    payload=payload,
                )
            )
        registry.events.append_many(batch, durable=MODEL_REGISTERED.durability == "audit")
    return versions


def copy_version(
    registry: Registry,
    version: ModelVersion,
    payload: bytes,
    formula: bytes | None,
    *,
    tags: Mapping[str, str],
    inputs: Sequence[Mapping[str, Any]],
    actor: str | None,
) -> ModelVersion:
    """Register ``version`` of another registry (another environment's) here, as is: its
    artifact's bytes ``payload`` and its recorded formula's ``formula`` (both read back
    with their sha256 checked; the formula was checked against the model when it was
    recorded, and these are the same model bytes, so it is not read off the model again),
    flavor, signature, libraries, parameters, metrics and code lineage, with ``tags`` and
    ``inputs`` in place of its own. Run, parent and data set ids are the other store's:
    they stay out of the row (``inputs`` may record them)."""
    prepared = _Prepared(
        name=version.model,
        description=None,
        actor=actor,
        payload=payload,
        compiled=formula,
        media_type=f"application/x-conveyor-{version.flavor}",
        values={
            "flavor": version.flavor,
            "signature": version.signature,
            "libraries": version.libraries,
            "params": version.params,
            "metrics": version.metrics,
            "tags": dict(tags),
            "run_id": None,
            "parent_id": None,
            "git_commit": version.git_commit,
            "git_dirty": version.git_dirty,
            "environment": version.environment,
            "dataset_version_ids": [],
            "inputs": _inputs(inputs),
        },
    )
    copied = store_prepared(registry, [prepared])[0]
    if copied.artifact_digest != version.artifact_digest:
        raise ModelUnavailableError(
            f"the copy of {version.ref} has digest {copied.artifact_digest}, expected "
            f"{version.artifact_digest}: the bytes given are not its artifact",
            model=version.model,
            version=version.number,
        )
    return copied


def _prepare(registry: Registry, index: int, item: RegisterItem | Mapping[str, Any]) -> _Prepared:
    """Check and serialise one item; any failure names the item's index."""
    try:
        return _prepare_item(registry, _item(item))
    except ConveyorError as exc:
        raise _at(exc, index) from exc
    except Exception as exc:  # a model that cannot be saved (pickling), a bad value...
        raise InvalidInputError(
            f"item {index}: cannot register: {exc}", field=f"items[{index}]", index=index
        ) from exc


def _item(item: RegisterItem | Mapping[str, Any]) -> RegisterItem:
    if isinstance(item, RegisterItem):
        return item
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"expected a RegisterItem or a mapping, got {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in _FIELDS)
    if unknown:
        raise InvalidInputError(
            f"unknown field {unknown[0]!r}; known: {', '.join(_FIELDS)}", field=unknown[0]
        )
    for required in ("name", "model"):
        if required not in item:
            raise InvalidInputError(f"{required!r} is required", field=required)
    return RegisterItem(**item)


def _prepare_item(registry: Registry, it: RegisterItem) -> _Prepared:
    from conveyor.registry.flavors import flavor_for
    from conveyor.registry.formula import compile_model
    from conveyor.registry.signature import Signature
    from conveyor.store.types import json_value

    check_model_name(it.name)
    flavor = flavor_for(it.model)
    payload = flavor.save(it.model)
    parent_id = registry._parent_id(it.parent)
    signature = None
    compiled = None
    if it.signature_from is not None:
        inferred = Signature.infer(it.signature_from)
        outputs = _outputs_of(registry, flavor, it.model, payload, inferred, it, parent_id)
        signature = inferred.with_outputs(outputs).to_dict()
        compiled = compile_model(flavor, it.model, signature)
    metrics = clean_metrics(it.metrics or {})
    clean_params = json_value(dict(it.params or {}), "params")
    clean_tags = {str(k): str(v) for k, v in (it.tags or {}).items()}
    dataset_ids = [_dataset_id(d) for d in it.dataset_versions]
    commit, dirty = registry._git()
    return _Prepared(
        name=it.name,
        description=it.description,
        actor=it.actor,
        payload=payload,
        media_type=f"application/x-conveyor-{flavor.name}",
        values={
            "flavor": flavor.name,
            "signature": signature,
            "libraries": flavor.libraries(),
            "params": clean_params,
            "metrics": metrics,
            "tags": clean_tags,
            "run_id": it.run_id,
            "parent_id": parent_id,
            "git_commit": commit,
            "git_dirty": dirty,
            "environment": registry._env(),
            "dataset_version_ids": dataset_ids,
            "inputs": _inputs(it.inputs),
        },
        compiled=compiled,
    )


def _inputs(inputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The lineage beyond data sets, as JSON; each input names its ``kind`` and ``name``."""
    from conveyor.store.types import json_value

    clean = []
    for i, item in enumerate(inputs):
        if not isinstance(item, Mapping) or not item.get("kind") or not item.get("name"):
            raise InvalidInputError(
                f"inputs[{i}] is a mapping with a kind and a name, got {item!r}",
                field=f"inputs[{i}]",
            )
        clean.append(json_value(dict(item), f"inputs[{i}]"))
    return clean or None


def _outputs_of(
    registry: Registry,
    flavor: Flavor,
    model: Any,
    payload: bytes,
    signature: Signature,
    item: RegisterItem,
    parent_id: str | None,
) -> tuple[Output, ...]:
    """The output signature: the model run on its input example (else the first rows of
    ``signature_from``), each output's dtype and per-row shape.

    A version derived from a parent with an output signature (an optimized copy) takes
    the parent's when its answers can be read so (see :mod:`conveyor.registry.outputs`),
    so it is served exactly as its parent; otherwise its own, which the optimization
    report then refuses. A model that cannot predict on those rows gets none (it is
    served as it answers), and registering it still succeeds.
    """
    import warnings

    from conveyor.data.frames import to_arrow
    from conveyor.registry.flavors import Conformed
    from conveyor.registry.outputs import infer_outputs
    from conveyor.registry.signature import EXAMPLE_ROWS, Signature

    try:
        table = signature.example_table(len(signature.example) or 1)
        if table is None:
            table = signature.enforce(to_arrow(item.signature_from).slice(0, EXAMPLE_ROWS))
        if table.num_rows == 0:
            return ()
        parent_outputs: tuple[Output, ...] = ()
        if parent_id is not None:
            recorded = registry.by_id(parent_id).signature
            if recorded:
                parent_outputs = Signature.from_dict(recorded).outputs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a probe: the model's warnings come at predict
            runnable = flavor.load(payload) if flavor.name == "onnx" else model
            if parent_outputs:
                try:
                    Conformed(flavor, parent_outputs).predict(runnable, table)
                    return parent_outputs
                except ModelUnavailableError:
                    pass  # it answers otherwise: record what it answers
            return infer_outputs(flavor.predict(runnable, table), table.num_rows)
    except Exception as exc:  # the model's own error, whatever it is
        log.warning(
            "%s: no output signature recorded: predicting on the input example failed: %s: %s",
            item.name,
            type(exc).__name__,
            exc,
        )
        return ()


def _at(exc: ConveyorError, index: int) -> ConveyorError:
    """``exc`` again, its message prefixed with the item and its field with ``items[N].``."""
    context = dict(exc.context)
    if "field" in context:
        context["field"] = f"items[{index}].{context['field']}"
    else:
        context["field"] = f"items[{index}]"
    context["index"] = index
    message = f"item {index}: {exc.message}"
    try:
        return type(exc)(message, **context)
    except TypeError:  # an error class with its own constructor
        return InvalidInputError(message, **context)


def _insert_all(registry: Registry, prepared: list[_Prepared]) -> list[ModelVersion]:
    """Number and write every row in one transaction.

    Each model's numbers come from one atomic ``UPDATE ... SET latest_version
    = latest_version + k RETURNING``: the row lock (PostgreSQL) or the write
    lock (SQLite) serialises concurrent registrations, so none has to retry;
    only two writers creating the same model at once do.

    Models are locked in name order, so two batches over the same models
    cannot deadlock on PostgreSQL; a single registration locks one model and
    so never deadlocks with a batch either.
    """

    def once() -> list[ModelVersion]:
        with registry.store.session() as session:
            return _write(session, prepared)

    # Another writer may create one of the models first: the next attempt's UPDATE finds it.
    return retry_on_conflict(once, what="registering a batch of model versions")


def _write(session: Session, prepared: list[_Prepared]) -> list[ModelVersion]:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord, RegisteredModelRecord
    from conveyor.store.types import utcnow

    models = cast("sa.Table", RegisteredModelRecord.__table__)
    versions = cast("sa.Table", ModelVersionRecord.__table__)
    count: dict[str, int] = {}
    description: dict[str, str] = {}
    for p in prepared:
        count[p.name] = count.get(p.name, 0) + 1
        if p.description is not None:
            description[p.name] = p.description  # the last one wins, as registering in turn
    now = utcnow()
    first: dict[str, int] = {}
    for name in sorted(count):
        changes: dict[str, Any] = {
            "latest_version": models.c.latest_version + count[name],
            "version": models.c.version + 1,
            "updated_at": now,
        }
        if name in description:
            changes["description"] = description[name]
        last = session.execute(
            sa.update(models)
            .where(models.c.name == name)
            .values(**changes)
            .returning(models.c.latest_version)
        ).scalar_one_or_none()
        if last is None:
            last = count[name]
            session.execute(
                sa.insert(models).values(
                    name=name,
                    description=description.get(name),
                    latest_version=last,
                    created_at=now,
                    updated_at=now,
                    version=1,
                )
            )
        first[name] = last - count[name] + 1
    rows = []
    for i, p in enumerate(prepared):
        number = first[p.name]
        first[p.name] += 1
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "model": p.name,
                "number": number,
                **p.values,
                "status": "registered",
                # One microsecond apart in item order, so newest-first listings
                # (created_at, id) show a batch in number order.
                "created_at": now + timedelta(microseconds=i),
            }
        )
    session.execute(sa.insert(versions), rows)
    return [ModelVersion(**{**row, "inputs": row["inputs"] or []}) for row in rows]
