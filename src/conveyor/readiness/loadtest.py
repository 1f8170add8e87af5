"""The built-in load test: requests at a fixed rate against a running server, for a few
seconds, with httpx's async client.

Open loop: request ``i`` is due at ``start + i / rate`` whatever the answers before it,
so a slow server shows as latency and as a lower rate achieved, not as a politely lower
offered load; at most ``concurrency`` are in flight (a request that waits for a slot
starts late, counted in ``late``). Latency is measured from the moment a request was
due, so the queueing a saturated server causes is in it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = ["LoadTestResult", "load_test", "run_load_test"]

#: A request that starts this much after it was due is counted late.
_LATE_S = 0.1


@dataclass(frozen=True, slots=True)
class LoadTestResult:
    """What one load test measured."""

    url: str
    rate_rps: float
    duration_s: float
    sent: int
    ok: int
    server_errors: int  # 5xx answers
    failed: int  # no answer: refused connections, timeouts
    statuses: dict[str, int]
    achieved_rps: float
    seconds: float
    late: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return (self.sent - self.ok) / self.sent if self.sent else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "rate_rps": self.rate_rps,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "server_errors": self.server_errors,
            "failed": self.failed,
            "error_rate": self.error_rate,
            "statuses": self.statuses,
            "achieved_rps": self.achieved_rps,
            "seconds": self.seconds,
            "late": self.late,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "errors": self.errors,
        }


async def load_test(
    url: str,
    body: dict[str, Any],
    *,
    rate_rps: float,
    duration_s: float,
    concurrency: int = 64,
    timeout_s: float = 10,
    token: str | None = None,
) -> LoadTestResult:
    """POST ``body`` to ``url`` at ``rate_rps`` for ``duration_s`` (see the module)."""
    import httpx
    import numpy as np

    if not rate_rps > 0:
        raise InvalidInputError(f"rate must be above 0, got {rate_rps}", field="rate_rps")
    if not 0 < duration_s <= 600:
        raise InvalidInputError(
            f"duration must be within (0, 600] seconds, got {duration_s}", field="duration_s"
        )
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be 1 or more, got {concurrency}")
    total = max(1, round(rate_rps * duration_s))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    late = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(due: float) -> None:
            nonlocal late
            async with slots:
                if loop.time() - due > _LATE_S:
                    late += 1
                try:
                    answer = await client.post(url, json=body)
                except httpx.HTTPError as exc:
                    statuses["no answer"] += 1
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                    return
                statuses[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    latencies.append((loop.time() - due) * 1000)
                elif len(errors) < 20:
                    errors[f"{answer.status_code}: {answer.text[:160]}"] += 1

        tasks = []
        for i in range(total):
            due = start + i / rate_rps
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        seconds = loop.time() - start
    ok = statuses.get("200", 0)
    server = sum(n for s, n in statuses.items() if s.startswith("5"))
    q: list[float | None] = [None, None, None]
    if latencies:
        q = [float(x) for x in np.quantile(np.asarray(latencies), (0.5, 0.95, 0.99))]
    return LoadTestResult(
        url=url,
        rate_rps=rate_rps,
        duration_s=duration_s,
        sent=total,
        ok=ok,
        server_errors=server,
        failed=statuses.get("no answer", 0),
        statuses=dict(statuses),
        achieved_rps=ok / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        late=late,
        p50_ms=q[0],
        p95_ms=q[1],
        p99_ms=q[2],
        errors=[f"{n}x {e}" for e, n in errors.most_common(5)],
    )


def run_load_test(url: str, body: dict[str, Any], **options: Any) -> LoadTestResult:
    """:func:`load_test` from synchronous code (the CLI; the server calls it in a thread)."""
    return asyncio.run(load_test(url, body, **options))
