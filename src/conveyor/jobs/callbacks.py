"""Callbacks: a finished job POSTed to its ``callback_url``, signed, retried, behind a breaker.

::

    callbacks = Callbacks(spec)
    outcome = await callbacks.deliver(record)    # {"status": "delivered" | "gave_up", ...}

The body is the job as ``GET /v1/jobs/{id}`` shows it. It is signed with
HMAC-SHA256 over ``"{timestamp}.{body}"`` with ``jobs.callback_secret``::

    X-Conveyor-Signature: t=1733328000,v1=5257a869e7...
    X-Conveyor-Job: 0193a0e4c1b27f3e9d...

A receiver recomputes the digest, compares in constant time and refuses a
timestamp older than a few minutes (replays); :func:`verify` does exactly
that and docs/jobs.md shows it in ten lines of standard library.

A delivery that fails (a connection error, a timeout, any status but 2xx)
is retried ``callback_attempts`` times in all, after ``callback_backoff_s``,
doubling up to ``callback_max_backoff_s``, each delay with jitter (half
fixed, half random: retries of many jobs spread out). Each target (scheme,
host and port) has a :class:`~conveyor.breaker.CircuitBreaker`: after three
failures in a row its attempts are short-circuited (counted, not sent) until
a trial call succeeds (the next attempt of a job that met it open waits for
the trial), so a dead receiver costs a few timeouts, not one per job and retry.
The last attempt's failure is recorded on the job (``callback.status:
gave_up``, with the last error) and as a ``job.callback`` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from conveyor.breaker import CircuitBreaker
from conveyor.jobs.records import public

if TYPE_CHECKING:
    from conveyor.jobs.settings import JobsSpec

__all__ = ["JOB_HEADER", "SIGNATURE_HEADER", "Callbacks", "sign", "verify"]

log = logging.getLogger("conveyor.jobs")

SIGNATURE_HEADER = "X-Conveyor-Signature"
JOB_HEADER = "X-Conveyor-Job"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value: ``t=TIMESTAMP,v1=HEX(HMAC-SHA256(secret, "t.body"))``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, body: bytes, header: str, *, tolerance_s: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of now."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Callbacks:
    """Delivers finished jobs to their callback URLs (one per worker: breakers are shared)."""

    def __init__(self, spec: JobsSpec) -> None:
        self.spec = spec
        self.breakers: dict[str, CircuitBreaker] = {}
        self._client: Any = None
        self.sent = 0  # requests actually sent (short-circuited attempts are not)

    def breaker(self, url: str) -> CircuitBreaker:
        parts = urlsplit(url)
        target = f"{parts.scheme}://{parts.netloc}"
        found = self.breakers.get(target)
        if found is None:
            found = CircuitBreaker(
                f"callback target {target}",
                failures=3,
                reset_s=max(1.0, self.spec.callback_backoff_s * 4),
                max_reset_s=max(30.0, self.spec.callback_max_backoff_s),
            )
            self.breakers[target] = found
        return found

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (1-based): exponential, capped, half jittered."""
        spec = self.spec
        ceiling = min(spec.callback_max_backoff_s, spec.callback_backoff_s * 2.0 ** (attempt - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def deliver(self, record: dict[str, Any]) -> dict[str, Any]:
        """Send ``record`` to its callback until it is taken or the attempts run out: the
        callback's new state (``status``: delivered | gave_up, ``attempts``, ``last_error``)."""
        import httpx

        spec = self.spec
        state = dict(record.get("callback") or {})
        url = state["url"]
        secret = spec.callback_secret.get_secret_value().encode() if spec.callback_secret else b""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=spec.callback_timeout_s)
        shown = dict(record)
        shown["callback"] = None  # the receiver learns of its own delivery from the headers
        body = orjson.dumps(public(shown))
        breaker = self.breaker(url)
        attempts = int(state.get("attempts") or 0)
        error: str | None = None
        while attempts < spec.callback_attempts:
            attempts += 1
            if not breaker.allow():
                error = f"circuit open for {breaker.name}: {breaker.last_error}"
            else:
                headers = {
                    "content-type": "application/json",
                    SIGNATURE_HEADER: sign(secret, body, int(time.time())),
                    JOB_HEADER: record["id"],
                    "user-agent": "conveyor-jobs",
                }
                self.sent += 1
                try:
                    answer = await self._client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    breaker.failure(error)
                else:
                    if 200 <= answer.status_code < 300:
                        breaker.success()
                        state.update(
                            status="delivered",
                            attempts=attempts,
                            last_error=error,
                            http_status=answer.status_code,
                            delivered_at=time.time(),
                        )
                        return state
                    error = f"HTTP {answer.status_code}"
                    breaker.failure(error)
            if attempts < spec.callback_attempts:
                wait = self.delay(attempts)
                if breaker.state != "closed":
                    # Open: the next attempt comes no sooner than the breaker's trial.
                    wait = max(wait, breaker.base_reset_s)
                await asyncio.sleep(wait)
        log.warning(
            "job %s: callback to %s given up after %d attempts: %s",
            record["id"],
            url,
            attempts,
            error,
        )
        state.update(status="gave_up", attempts=attempts, last_error=error)
        return state

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
