"""What the stream tests share: each runs once per broker, NATS JetStream and Redis
Streams, through the same source seam (markers: nats, redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stream_support import Streams, broker


@pytest.fixture(
    params=[
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def streams(request: pytest.FixtureRequest) -> Iterator[Streams]:
    with broker(request.param) as made:
        yield made
