"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, TEI,
Ollama, LiteLLM...), over httpx.

Texts are sent ``batch_size`` at a time. A request answered 429 or 5xx, or not answered
(connection refused, timeout), is retried with exponential backoff, waiting at least what
the server's ``Retry-After`` asks; when the retries run out the error is typed and carries
the upstream status: :class:`RateLimitedError` (429), :class:`BackendUnavailableError`
(5xx, no answer), :class:`ConfigError` (401/403: the key), :class:`InvalidInputError`
(another 4xx, with the server's message). Vectors are L2-normalized on arrival, since not
every server normalizes.

The tokenizer is the default model's (the remote one's is not known here): counts are
what the chunker sizes chunks with, and the server truncates or refuses over-long input.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    RateLimitedError,
)
from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir

if TYPE_CHECKING:
    import httpx
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["OpenAIEmbedder"]

#: The longest wait between two tries, whatever Retry-After says.
MAX_BACKOFF_S = 60.0
#: Token limit assumed for a remote model when none is configured (OpenAI's text-embedding-3).
DEFAULT_REMOTE_MAX_TOKENS = 8191


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return response.text[:300]


class OpenAIEmbedder:
    """An :class:`~conveyor.rag.types.Embedder` over an OpenAI-compatible endpoint."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 32,
        max_tokens: int | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            raise MissingDependencyError("the openai embedding backend needs httpx") from exc
        self._endpoint = url.rstrip("/") + "/embeddings"
        self._name = model
        self._dimension = dimension
        self._batch_size = batch_size
        self._max_tokens = max_tokens or DEFAULT_REMOTE_MAX_TOKENS
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)
        self._tokenizer: HFTokenizer | None = None
        self.requests = 0
        """HTTP requests sent, retries included."""

    @classmethod
    def from_env(
        cls, url: str, model: str, api_key_env: str | None, **options: Any
    ) -> OpenAIEmbedder:
        """Read the key from the environment variable ``api_key_env`` (refused if unset)."""
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"the embedding endpoint's key is read from ${api_key_env}, which is not set",
                    field="api_key_env",
                )
        return cls(url, model, api_key=key, **options)

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def model(self) -> str:
        return f"{self._name}@{self._endpoint.removesuffix('/embeddings')}/openai"

    @property
    def dimension(self) -> int:
        """Configured, else learned from the first reply (asking with one short text if no
        reply came yet: note that ``isinstance(e, Embedder)`` reads it)."""
        if self._dimension is None:
            self._dimension = int(self._request(["dimension probe"]).shape[1])
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> HFTokenizer:
        if self._tokenizer is None:
            self._tokenizer = HFTokenizer.from_file(default_model_dir())
        return self._tokenizer

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            raise InvalidInputError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        parts = [
            self._request(list(texts[i : i + self._batch_size]))
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(parts, axis=0)

    def _request(self, batch: list[str]) -> NDArray[np.float32]:
        import httpx

        payload = {"model": self._name, "input": batch, "encoding_format": "float"}
        attempt = 0
        while True:
            wait = min(MAX_BACKOFF_S, self._backoff_s * 2**attempt)
            self.requests += 1
            try:
                response = self._client.post(self._endpoint, json=payload)
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise BackendUnavailableError(
                        f"embedding endpoint {self._endpoint} did not answer after "
                        f"{attempt + 1} tries: {exc}",
                        url=self._endpoint,
                    ) from exc
            else:
                status = response.status_code
                if status == 200:
                    return self._vectors(response, len(batch))
                retryable = status == 429 or status >= 500
                if not retryable or attempt >= self._max_retries:
                    raise self._error(response, attempt + 1)
                asked = _retry_after(response)
                if asked is not None:
                    wait = min(MAX_BACKOFF_S, max(wait, asked))
            attempt += 1
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, response: httpx.Response, tries: int) -> Exception:
        status = response.status_code
        detail = _upstream_message(response)
        where = f"embedding endpoint {self._endpoint} answered {status}"
        context: dict[str, Any] = {"status": status, "url": self._endpoint}
        if status == 429:
            return RateLimitedError(f"{where} after {tries} tries: {detail}", **context)
        if status >= 500:
            return BackendUnavailableError(f"{where} after {tries} tries: {detail}", **context)
        if status in (401, 403):
            return ConfigError(f"{where}: the API key was refused: {detail}", **context)
        return InvalidInputError(f"{where}: {detail}", **context)

    def _vectors(self, response: httpx.Response, expected: int) -> NDArray[np.float32]:
        import numpy as np

        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda d: int(d["index"]))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"embedding endpoint {self._endpoint} sent a reply that is not an "
                f"embeddings list: {exc}",
                url=self._endpoint,
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != expected:
            raise BackendError(
                f"embedding endpoint {self._endpoint} returned {vectors.shape[0]} vectors "
                f"for {expected} texts",
                url=self._endpoint,
            )
        if self._dimension is None:
            self._dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self._dimension:
            raise BackendError(
                f"embedding endpoint {self._endpoint} returned vectors of dimension "
                f"{vectors.shape[1]}, expected {self._dimension}",
                url=self._endpoint,
                expected=self._dimension,
                actual=int(vectors.shape[1]),
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, 1e-12)
        return vectors
