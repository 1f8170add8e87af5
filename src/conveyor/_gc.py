"""The garbage collector around what a long-running process loads and keeps.

A server loads long-lived things after its start-up too: a RAG collection version on its
first query (a 200k-chunk one was about 250,000 tracked objects, its chunks and their
metadata, before they were held in columns: ``conveyor.rag.chunk_table``) or a model
version when a route moves. Two costs follow, measured on a 200k-chunk collection on a
2-vCPU machine (``benchmarks/rag_load.py``), before the chunk table:

- **During the load**, every object it creates counts toward the next collection, so the
  collector walks the growing structure again and again: 3.2 s to load the version against
  2.2 s with the collector off.
- **Afterwards**, each full collection walks it again: 82 ms per full collection with the
  version loaded, about 0 once it is frozen. A full collection runs when enough objects have
  survived since the last one, so under steady traffic it lands on some request, a pause
  the request's own stages do not show.

:func:`long_lived` answers both: the collector is off for the load (nested and concurrent
loads share one pause: it is back on when the last one ends, and only if it was on before
the first), and in a server (:func:`serving`, called once its start-up is over) the loaded
objects are then frozen, like the start-up's (``gc.freeze()``: out of every later
collection, still freed by reference counting when a version is unloaded). A library user's
process (``conveyor.rag.search`` in a notebook) gets the first and not the second: a freeze
there would also keep any garbage cycle alive at that moment for good.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["long_lived", "serving"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False
_serving = False


def serving() -> None:
    """A server's start-up is over: freeze what it loaded, turn the collector on (the
    entry point, ``conveyor._start``, kept it off) and freeze after each later load."""
    global _serving, _was_enabled
    with _lock:
        gc.freeze()
        _serving = True
        if _depth:
            # a load is under way (a route's model, a first query's version, on a thread):
            # the collector comes on when it ends, after its objects are frozen too
            _was_enabled = True
        else:
            gc.enable()


@contextmanager
def long_lived() -> Iterator[None]:
    """Load something the process keeps: the collector off meanwhile, the result frozen
    afterwards in a server (see the module)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _serving:
                    # everything alive now is kept out of later collections, the loaded
                    # objects with the rest; cycles freed meanwhile by other requests
                    # would be kept too: a young collection first frees those
                    gc.collect(1)
                    gc.freeze()
                if _was_enabled:
                    gc.enable()
