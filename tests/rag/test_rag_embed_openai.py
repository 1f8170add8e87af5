"""The OpenAI-compatible backend against a real HTTP server: uvicorn serving Starlette in a
thread, answering ``/v1/embeddings`` with vectors from Conveyor's own ONNX encoder, and
with the failures an upstream gives (429 with Retry-After, 5xx, a refused key, 400)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conveyor.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidInputError,
    RateLimitedError,
)
from conveyor.rag.embed import CachedEmbedder, EmbeddingConfig, MemoryEmbeddingStore, open_embedder
from conveyor.rag.embed.openai import OpenAIEmbedder
from conveyor.rag.types import Embedder

KEY = "sk-test-123"


class Upstream:
    """The server's state: the encoder behind it and what it was sent."""

    def __init__(self, encoder: Embedder) -> None:
        self.encoder = encoder
        self.calls: Counter[str] = Counter()
        self.batches: list[int] = []
        self.times: list[float] = []

    async def embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        model = body["model"]
        self.calls[model] += 1
        self.times.append(time.monotonic())
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key provided"}}, 401)
        if model == "busy-twice" and self.calls[model] <= 2:
            return JSONResponse({"error": {"message": "slow down"}}, 429, {"Retry-After": "0.2"})
        if model == "always-busy":
            return JSONResponse({"error": {"message": "rate limit reached"}}, 429)
        if model == "broken":
            return JSONResponse({"error": {"message": "upstream exploded"}}, 503)
        if model == "strict":
            return JSONResponse({"error": {"message": "input too long for strict"}}, 400)
        texts = body["input"]
        self.batches.append(len(texts))
        vectors = self.encoder.embed(texts) * 3.0  # not normalized: the client normalizes
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in reversed(list(enumerate(vectors)))  # out of order on purpose
        ]
        return JSONResponse({"object": "list", "data": data, "model": model})


@pytest.fixture(scope="module")
def encoder() -> Embedder:
    # The user's encoder cache (as the collections' tests use it): exported once per
    # machine, the folder's lock keeping concurrent workers safe.
    return open_embedder(EmbeddingConfig(quantize="none", threads=1))


@pytest.fixture(scope="module")
def upstream(encoder: Embedder) -> Iterator[tuple[Upstream, str]]:
    state = Upstream(encoder)
    app = Starlette(routes=[Route("/v1/embeddings", state.embeddings, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield state, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def remote(url: str, model: str, **options: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(url, model, api_key=KEY, backoff_s=0.01, **options)


def test_embeds_through_the_endpoint_in_batches(
    upstream: tuple[Upstream, str], encoder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = upstream
    monkeypatch.setenv("TEST_EMBED_KEY", KEY)
    config = EmbeddingConfig(
        backend="openai", model="mini", url=url, api_key_env="TEST_EMBED_KEY", batch_size=3
    )
    state.batches.clear()
    texts = [f"text number {i} about arrays" for i in range(7)]
    with open_embedder(config) as embedder:  # type: ignore[attr-defined]
        vectors = embedder.embed(texts)
        assert isinstance(embedder, Embedder)  # after: isinstance reads .dimension
        assert embedder.model == f"mini@{url}/openai"
        assert embedder.dimension == 384
        assert embedder.embed([]).shape == (0, 384)
    assert state.batches == [3, 3, 1]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, encoder.embed(texts), atol=1e-4)  # order kept


def test_retries_a_429_honouring_retry_after(upstream: tuple[Upstream, str]) -> None:
    state, url = upstream
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with remote(url, "busy-twice", sleep=sleep) as e:
        vectors = e.embed(["once more"])
    assert vectors.shape == (1, 384)
    assert state.calls["busy-twice"] == 3 and e.requests == 3
    assert waits == [0.2, 0.2]  # Retry-After, over the 0.01 s and 0.02 s backoff


def test_gives_up_with_the_upstream_status(upstream: tuple[Upstream, str]) -> None:
    state, url = upstream
    with remote(url, "always-busy", max_retries=2) as e, pytest.raises(RateLimitedError) as info:
        e.embed(["x"])
    assert info.value.context["status"] == 429
    assert "after 3 tries" in str(info.value) and "rate limit reached" in str(info.value)
    assert state.calls["always-busy"] == 3

    with remote(url, "broken", max_retries=1) as e, pytest.raises(BackendUnavailableError) as bad:
        e.embed(["x"])
    assert bad.value.context["status"] == 503 and "upstream exploded" in str(bad.value)

    with remote(url, "strict") as e, pytest.raises(InvalidInputError) as refused:
        e.embed(["x"])
    assert refused.value.context["status"] == 400 and state.calls["strict"] == 1  # no retry


def test_a_refused_key_is_a_config_error(upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    with OpenAIEmbedder(url, "mini", api_key="wrong") as e, pytest.raises(ConfigError) as info:
        e.embed(["x"])
    assert info.value.context["status"] == 401 and "Incorrect API key" in str(info.value)


def test_missing_key_variable_and_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"\$NO_SUCH_KEY_VAR"):
        OpenAIEmbedder.from_env("http://127.0.0.1:9/v1", "m", "NO_SUCH_KEY_VAR")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = sock.getsockname()[1]
    try:
        with (
            OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01) as e,
            pytest.raises(BackendUnavailableError, match="did not answer after 2 tries"),
        ):
            e.embed(["x"])
    finally:
        sock.close()


def test_wrong_dimension_from_the_endpoint_is_refused(upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    with remote(url, "mini", dimension=768) as e, pytest.raises(Exception, match="768"):
        e.embed(["x"])


def test_cache_in_front_of_the_endpoint(upstream: tuple[Upstream, str]) -> None:
    state, url = upstream
    with remote(url, "cached-model") as e:
        cached = CachedEmbedder(e, MemoryEmbeddingStore())
        cached.embed(["a", "b"])
        cached.embed(["b", "a", "c"])
    assert state.calls["cached-model"] == 2 and (cached.hits, cached.misses) == (2, 3)
