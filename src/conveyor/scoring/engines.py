"""The engines that run partitions: local worker processes, or Ray Data on a cluster.

Both run :func:`score_partition` in a worker that loaded the model once, through the
registry, its artifact's sha256 checked and warmed up on its example rows
(:func:`conveyor.serving.pool.load_verified`, the server's own loader). A worker
reads its partition, splits each chunk into rows that fit the signature and rows
that do not (:func:`conveyor.scoring.rows.split_rows`), scores the former
(:func:`conveyor.scoring.rows.score_rows`) and commits the partition to the sink and
its rejected rows beside it, then returns a :class:`PartitionResult`; the
coordinator records it.

- ``local``: a ``ProcessPoolExecutor`` of ``workers`` processes started with
  ``spawn`` (no state inherited from the coordinator but what it sends), at most
  two partitions in flight per worker, so memory stays bounded by the partitions
  in flight whatever the input's size. A worker killed midway breaks the pool: the
  run fails, and ``resume`` scores the partitions not recorded.
- ``ray``: Ray Data (``pip install 'conveyor[ray]'``): the partitions as a data set,
  ``map_batches`` over an actor pool of ``workers`` actors, each holding the model.
  ``address`` is a Ray address (``ray://host:10001``, ``auto``) or None for a local
  Ray started for the run.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import BackendUnavailableError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.registry.versions import LoadedModel
    from conveyor.scoring.sinks import FolderSink, TableSink
    from conveyor.scoring.sources import Partition

__all__ = ["ENGINES", "PartitionResult", "WorkerSetup", "run_local", "run_ray", "score_partition"]

ENGINES = ("local", "ray")


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker needs, sent once: where the project is, which version, the sinks."""

    root: str
    env: Mapping[str, str]
    model: str
    number: int
    sink: FolderSink | TableSink
    rejected: FolderSink
    chunk_rows: int
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    text_columns: tuple[str, ...] = ()
    key: str | None = None
    #: The column holding each row's time, when the version was trained on a feature
    #: service: its features are joined as of that time.
    entity_time: str = "event_timestamp"


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """What one partition gave: rows read, scored, rejected, and where they went."""

    partition: str
    key: str
    rows: int
    scored: int
    rejected: int
    path: str | None
    sha256: str | None
    rejected_path: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.partition,
            "source": self.key,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "path": self.path,
            "sha256": self.sha256,
            "rejected_path": self.rejected_path,
        }


class Worker:
    """One worker's state: the project, the model (loaded once), the sinks."""

    def __init__(self, setup: WorkerSetup) -> None:
        from conveyor.project import Project
        from conveyor.serving.pool import load_verified

        self.setup = setup
        self.project: Project = Project.open(setup.root, env={**os.environ, **setup.env})
        self.loaded: LoadedModel = load_verified(
            self.project.registry, setup.model, setup.number, warm_ups=1
        )[0]

    def score(self, partition: Partition) -> PartitionResult:
        return score_partition(self.loaded, partition, self.setup, project=self.project)

    def close(self) -> None:
        close = getattr(self.setup.sink, "close", None)
        if close is not None:
            close()
        self.project.close()


def score_partition(
    loaded: LoadedModel, partition: Partition, setup: WorkerSetup, *, project: Project | None
) -> PartitionResult:
    """Read, check, score and commit one partition: the one scoring path of every engine."""
    from conveyor.scoring.rows import score_rows, split_rows
    from conveyor.scoring.sources import read_partition

    required = (setup.key,) if setup.key else ()
    service = feature_service(loaded)
    writer = setup.sink.writer(partition.id)
    rejected = setup.rejected.writer(partition.id, rejected=True)
    rows = 0
    try:
        for chunk in read_partition(
            partition,
            setup.chunk_rows,
            project=project,
            storage_options=setup.storage_options,
            text_columns=setup.text_columns,
        ):
            if service is not None:
                chunk = _with_features(project, chunk, service, setup.entity_time)
            model_input, passed, refused = split_rows(
                loaded.signature, chunk, offset=rows, required=required
            )
            rows += chunk.num_rows
            if passed.num_rows:
                writer.write(score_rows(loaded, model_input, passed))
            if refused.num_rows:
                rejected.write(refused)
        path, digest = writer.commit()
        rejected_path, _ = rejected.commit()
    except BaseException:
        writer.abort()
        rejected.abort()
        raise
    return PartitionResult(
        partition.id,
        partition.key,
        rows,
        writer.rows,
        rejected.rows,
        path,
        digest,
        rejected_path,
    )


def feature_service(loaded: LoadedModel) -> str | None:
    """The feature service ``loaded`` was trained on (its registry lineage), if any."""
    used = next((i for i in loaded.version.inputs if i.get("kind") == "feature_service"), None)
    return None if used is None else str(used["name"])


def _with_features(project: Project | None, chunk: Any, service: str, entity_time: str) -> Any:
    """``chunk`` with the service's features as of each row's ``entity_time``: the
    point-in-time join training frames are built with (a column of a feature's name in
    the input is replaced: the feature store is the one source of a feature)."""
    from conveyor.features.retrieval import requested_features, training_frame
    from conveyor.features.settings import features_of

    if project is None:
        raise InvalidInputError("joining features needs the project", field="features")
    for column in (entity_time,):
        if column not in chunk.column_names:
            raise InvalidInputError(
                f"the version was trained on feature service {service!r}: each row needs its "
                f"join keys and {entity_time!r}, the time its features are read as of "
                "(entity_time=, --entity-time)",
                field=entity_time,
            )
    names = {f for _, f in requested_features(features_of(project.spec), service)}
    chunk = chunk.select([c for c in chunk.column_names if c not in names])
    return training_frame(project, chunk, service, entity_time=entity_time, actor="scoring")


# -- local processes -------------------------------------------------------------------

_worker: Worker | None = None


def _start_worker(setup: WorkerSetup) -> None:
    global _worker
    _worker = Worker(setup)


def _run_one(partition: Partition) -> PartitionResult:
    assert _worker is not None, "the worker was not started"
    return _worker.score(partition)


def _worker_pid() -> int:
    return os.getpid()


def run_local(
    setup: WorkerSetup,
    partitions: Iterable[Partition],
    workers: int,
    on_result: Callable[[PartitionResult], None],
    *,
    on_start: Callable[[list[int]], None] | None = None,
) -> None:
    """Score ``partitions`` in ``workers`` spawned processes, two in flight per worker;
    ``on_result`` is called in this process as each partition is committed.
    ``workers=0`` scores in this process (no pool: small inputs, debugging)."""
    if workers == 0:
        worker = Worker(setup)
        try:
            for partition in partitions:
                on_result(worker.score(partition))
        finally:
            worker.close()
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(setup,)
    ) as pool:
        if on_start is not None:
            # Every process started and holding the model (what a caller watching them sees).
            warm = [pool.submit(_worker_pid) for _ in range(workers)]
            on_start(sorted({f.result() for f in warm}))
        _drive(pool, partitions, 2 * workers, on_result)


def _drive(
    pool: ProcessPoolExecutor,
    partitions: Iterable[Partition],
    limit: int,
    on_result: Callable[[PartitionResult], None],
) -> None:
    """Submit ``partitions`` with at most ``limit`` in flight, recording each result as
    soon as it is committed. A thread reads the input (a SQL cursor may wait on its
    database), so a finished partition is never left unrecorded behind a slow read."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    slots = threading.Semaphore(limit)
    stop = threading.Event()

    def feed() -> None:
        try:
            for partition in partitions:
                slots.acquire()
                if stop.is_set():
                    return
                events.put(("partition", partition))
            events.put(("end", None))
        except BaseException as exc:  # handed to the coordinator, raised there
            events.put(("error", exc))

    reader = threading.Thread(target=feed, name="scoring-input", daemon=True)
    reader.start()
    in_flight: set[Future[PartitionResult]] = set()
    ended = False
    try:
        while not ended or in_flight:
            kind, value = events.get()
            if kind == "partition":
                future = pool.submit(_run_one, value)
                in_flight.add(future)
                future.add_done_callback(lambda f: events.put(("done", f)))
            elif kind == "done":
                in_flight.discard(value)
                slots.release()
                on_result(value.result())
            elif kind == "end":
                ended = True
            else:
                raise value
    finally:
        stop.set()
        slots.release()  # a reader waiting for a slot sees stop and returns
        for future in in_flight:
            future.cancel()


# -- Ray Data --------------------------------------------------------------------------


class _RayScorer:
    """A Ray Data actor: a :class:`Worker` built once, a partition per batch."""

    def __init__(self, setup: bytes) -> None:
        self.worker = Worker(pickle.loads(setup))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = [
            pickle.dumps(self.worker.score(pickle.loads(bytes(blob)))) for blob in batch["p"]
        ]
        return {"r": results}


def run_ray(
    setup: WorkerSetup,
    partitions: Iterable[Partition],
    workers: int,
    on_result: Callable[[PartitionResult], None],
    *,
    address: str | None = None,
) -> None:
    """Score ``partitions`` with Ray Data: ``map_batches`` over ``workers`` actors."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            "the ray engine needs Ray Data: pip install 'conveyor[ray]'",
            extra="ray",
            module=exc.name or "ray",
        ) from None
    items = [{"p": pickle.dumps(p)} for p in partitions]
    if not items:
        return
    started = _connect(ray, address)
    try:
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        scored = dataset.map_batches(
            _RayScorer,
            fn_constructor_args=(pickle.dumps(setup),),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=1,
        )
        for row in scored.iter_rows():
            on_result(pickle.loads(row["r"]))
    finally:
        if started:  # a local Ray started for this run goes with it
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` (or start a local Ray); True when this call started it."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(
            f"cannot reach the Ray cluster at {address}: {exc}", url=address, seam="ray"
        ) from None
    return True


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise InvalidInputError(
            f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}", field="engine"
        )
    return engine


def chunks_of(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
