"""A part built at most once, by the first caller, whichever thread it runs on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conveyor.web.lazy import Lazy


def test_it_is_built_once_by_the_first_get_and_not_by_asking() -> None:
    builds: list[int] = []

    def build() -> object:
        builds.append(threading.get_ident())
        time.sleep(0.05)  # a slow build: every thread below arrives while it runs
        return object()

    lazy = Lazy(build)
    assert lazy.built is None and builds == []
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: lazy.get(), range(8)))
    assert len(builds) == 1
    assert all(item is found[0] for item in found)
    assert lazy.built is found[0]


def test_a_failed_build_is_tried_again_by_the_next_get() -> None:
    attempts: list[int] = []

    def build() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the store is down")
        return "built"

    lazy = Lazy(build)
    try:
        lazy.get()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the first build should have raised")
    assert lazy.built is None
    assert lazy.get() == "built" and len(attempts) == 2
