"""The model-registry workload, shared by Conveyor's side and MLflow's.

Standard library only: each side imports it from its own virtualenv, so both
register the same number of versions with the same tags and time the same
reads with the same stopwatch.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

MODEL = "bench-model"
ALIAS = "champion"


@dataclass(frozen=True, slots=True)
class Sizes:
    versions: int = 10_000
    page: int = 100
    all_page: int = 1_000
    lookups: int = 1_000
    searches: int = 50

    @classmethod
    def quick(cls) -> Sizes:
        return cls(versions=300, lookups=100, searches=10)

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


def median_ms(call: Callable[[], object], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3,
        "calls": repeats,
    }


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux: the whole process's peak, loading included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
