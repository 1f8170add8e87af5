"""What a process loads and keeps (a RAG version, a model on a route change) is loaded with
the collector off, and in a server frozen afterwards (conveyor._gc)."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import _gc


class _Kept:
    """A tracked object a load creates and the process keeps."""

    def __init__(self) -> None:
        self.parts: list[object] = []


def _tracked(obj: object) -> bool:
    """Whether the collector still walks ``obj`` (a frozen object is in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture
def collector() -> Iterator[None]:
    """The process's collector as it was, and nothing left frozen by the test."""
    was = gc.isenabled()
    yield
    _gc._serving = False
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_during_a_load_and_back_as_it_was(collector: None) -> None:
    gc.enable()
    with _gc.long_lived():
        assert not gc.isenabled()
    assert gc.isenabled()
    # a collector already off (a server's start-up) stays off
    gc.disable()
    with _gc.long_lived():
        assert not gc.isenabled()
    assert not gc.isenabled()
    # an error in the load restores it too
    gc.enable()
    with pytest.raises(RuntimeError), _gc.long_lived():
        raise RuntimeError("the load failed")
    assert gc.isenabled()


def test_overlapping_loads_turn_it_back_on_after_the_last(collector: None) -> None:
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def other_load() -> None:
        with _gc.long_lived():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_load)
    with _gc.long_lived():
        thread.start()
        assert inside.wait(10)
    # this load ended, the other's still runs: the collector stays off
    assert not gc.isenabled()
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_library_process_keeps_walking_what_it_loaded(collector: None) -> None:
    gc.enable()
    with _gc.long_lived():
        kept = _Kept()
    assert _tracked(kept)


def test_a_server_freezes_what_it_loads_after_its_start_up(collector: None) -> None:
    gc.disable()  # as conveyor._start leaves it
    started = _Kept()
    _gc.serving()
    assert gc.isenabled() and not _tracked(started)
    with _gc.long_lived():
        kept = _Kept()
        kept.parts.append(_Kept())
        assert _tracked(kept)
    assert gc.isenabled()
    assert not _tracked(kept) and not _tracked(kept.parts[0])
    # frozen objects are still freed by reference counting when the process lets go
    before = gc.get_freeze_count()
    del kept
    assert gc.get_freeze_count() == before - 4  # two objects, each with its list


def test_a_served_rag_version_is_out_of_the_collectors_walks(
    tmp_path: Path, collector: None
) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "rag"))
    from rag_collections_support import encoder, make_project

    from conveyor.rag.api import RagService
    from conveyor.rag.builder import build_collection

    with make_project(tmp_path) as project:
        build_collection(project, "docs", embedder=encoder())
        # a library process: the version (its chunk table, index and the rest) is walked
        # by every full collection
        library = RagService(project)
        try:
            loaded = library.loaded("docs")
            assert len(loaded.chunks) and _tracked(loaded.chunks) and _tracked(loaded)
        finally:
            library.close()
        # a server (start-up over): the same version loaded there is frozen
        _gc.serving()
        served = RagService(project)
        try:
            answer = served.search("docs", "embedding cache keyed by model", k=2)
            assert answer["hits"]
            loaded = served.loaded("docs")
            assert not _tracked(loaded.chunks) and not _tracked(loaded)
        finally:
            served.close()


def test_a_model_a_server_loads_on_a_route_change_is_frozen(
    tmp_path: Path, collector: None
) -> None:
    import asyncio

    sys.path.insert(0, str(Path(__file__).parent / "serving"))
    from serving_support import linear_project

    from conveyor.serving.pool import ModelPool
    from conveyor.serving.settings import BatchingSpec

    project = linear_project(tmp_path, name="gcpool", scales=(1.0, 2.0))
    try:
        _gc.serving()

        async def load(number: int) -> object:
            pool = ModelPool(project.registry, BatchingSpec(), closed_form=False)
            try:
                return (await pool.ensure("m", number)).loaded.model
            finally:
                await pool.close()

        model = asyncio.run(load(2))  # the unpickled estimator, as a route change loads it
        assert gc.is_tracked(model) and not _tracked(model)
    finally:
        project.close()


def test_a_server_ready_during_a_load_turns_the_collector_on_after_it(collector: None) -> None:
    # start-up keeps the collector off; a load begun then (on another thread) is still
    # running when the server is ready: the collector must stay off until it ends, and
    # what it loaded is frozen with the rest
    gc.disable()
    loading, finish = threading.Event(), threading.Event()
    kept: list[_Kept] = []

    def load() -> None:
        with _gc.long_lived():
            loading.set()
            assert finish.wait(30)
            kept.append(_Kept())

    thread = threading.Thread(target=load)
    thread.start()
    assert loading.wait(30)
    _gc.serving()
    assert not gc.isenabled()  # not in the middle of the load
    finish.set()
    thread.join(30)
    assert gc.isenabled()
    assert not _tracked(kept[0])  # frozen after the load
