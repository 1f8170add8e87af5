"""Traffic for the quickstart's servers: many users' requests at once, answers in order.

Real traffic comes from many callers at a time, and the server batches what arrives
together (``serving.batching``: a model's rows are predicted as one matrix). Sending the
demo's thousands of requests one after another would time the client's round trips
instead, and leave every batch one row long. ``post_many`` keeps ``concurrency`` requests
in flight on one keep-alive ``httpx.Client`` (safe to share between threads) and returns
the responses in the order of their bodies, so the caller pairs each with what it sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

#: Requests in flight at once: enough for the batcher to gather rows, few enough that the
#: client's threads do not crowd the server (they share the process and its two cores).
CONCURRENCY = 8


def post_many(
    client: httpx.Client,
    path: str,
    bodies: Sequence[Any],
    headers: Sequence[dict[str, str]] | dict[str, str],
    *,
    concurrency: int = CONCURRENCY,
    check: bool = True,
) -> list[httpx.Response]:
    """POST each body (as JSON) to ``path``; ``headers`` one dict for all or one per body.

    With ``check``, the first error answer raises :class:`httpx.HTTPStatusError` once every
    request is done (none is left running behind the caller).
    """
    each = [headers] * len(bodies) if isinstance(headers, dict) else list(headers)
    if len(each) != len(bodies):
        raise ValueError(f"{len(bodies)} bodies but {len(each)} header sets")

    def send(i: int) -> httpx.Response:
        return client.post(path, json=bodies[i], headers=each[i])

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="traffic") as pool:
        answers = list(pool.map(send, range(len(bodies))))
    if check:
        for answer in answers:
            answer.raise_for_status()
    return answers
