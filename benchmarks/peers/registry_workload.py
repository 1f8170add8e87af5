"""The model-registry workload, shared by Conveyor's side and MLflow's.

Standard library only: each side imports it from its own virtualenv, so both
fill the same number of versions with the same tags and time the same reads
with the same stopwatch.

A side runs in one of two phases:

- ``fill``: make the registry hold ``versions`` versions of one model, with
  an alias on the middle one. Version 1 goes through the tool's own API
  (so the row is what the tool writes); the others are bulk INSERTs through
  the tool's own table definitions, 10,000 rows a transaction. Prints one
  JSON result.
- ``measure``: one measure (``MEASURES``), in a fresh process. After its
  set-up it prints ``<tool>: ready`` on stderr, then one line per completed
  call on stdout (``SAMPLE <seconds>``, flushed), and stops starting calls
  once ``budget`` seconds have passed. The caller kills a process still
  running at the budget: the samples written so far are what it measured.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

MODEL = "bench-model"
ALIAS = "champion"
SAMPLE = "SAMPLE "

#: Reads first (on exactly ``versions`` versions), then the writes.
MEASURES = ("alias", "first_page", "tagged_page", "all_versions", "register", "register_batch")


@dataclass(frozen=True, slots=True)
class Sizes:
    versions: int = 10_000
    page: int = 100
    all_page: int = 1_000
    lookups: int = 1_000
    searches: int = 50
    all_passes: int = 3
    registrations: int = 500
    batch: int = 100
    batches: int = 20
    fill_chunk: int = 10_000

    @classmethod
    def quick(cls, versions: int = 300) -> Sizes:
        return cls(
            versions=versions, lookups=100, searches=10, all_passes=1, registrations=50, batches=3
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sizes:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def tags(i: int) -> dict[str, str]:
    """Tags of version ``i`` (0-based): half odd, half even, for the filtered search."""
    return {"parity": "odd" if i % 2 else "even", "batch": str(i // 1000)}


def sample(call: Callable[[], object], repeats: int, budget: float) -> None:
    """Time ``call`` up to ``repeats`` times or ``budget`` seconds, one line per call."""
    deadline = time.perf_counter() + budget
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        sys.stdout.write(f"{SAMPLE}{elapsed!r}\n")
        sys.stdout.flush()
        if time.perf_counter() >= deadline:
            break


def emit_json(data: dict[str, object]) -> None:
    sys.stdout.write("RESULT " + json.dumps(data) + "\n")
    sys.stdout.flush()
