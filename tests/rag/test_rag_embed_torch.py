"""The torch encoder in bfloat16 (optionally compiled): vectors that agree with float32,
an identity of its own (a bf16 vector never answers for a float32 one from a cache), the
order of the caller's texts, and settings that apply to this backend only."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conveyor.errors import InvalidInputError
from conveyor.rag.embed import EmbeddingConfig, open_embedder
from conveyor.rag.embed.factory import resolve_model
from conveyor.rag.embed.sentence_transformers import SentenceTransformerEmbedder
from conveyor.rag.types import Embedder

TEXTS = [
    "Compute the arithmetic mean along the specified axis.",
    "hello",
    "Fit the model with X. Parameters: X array-like of shape (n_samples, n_features). "
    "Returns self, the fitted estimator. " * 12,
    "Return a sorted copy of an array.",
    "Solve a linear matrix equation, or system of linear scalar equations.",
]


@pytest.fixture(scope="module")
def float32() -> Embedder:
    return open_embedder(EmbeddingConfig(backend="sentence-transformers", threads=2))


@pytest.fixture(scope="module")
def bfloat16() -> Embedder:
    return open_embedder(
        EmbeddingConfig(backend="sentence-transformers", precision="bfloat16", threads=2)
    )


def test_bfloat16_vectors_agree_with_float32(float32: Embedder, bfloat16: Embedder) -> None:
    reference = float32.embed(TEXTS)
    vectors = bfloat16.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() > 0.99, cosine
    # Each text's nearest float32 vector is its own: the ranking the index sees holds.
    assert list((vectors @ reference.T).argmax(axis=1)) == list(range(len(TEXTS)))


def test_bfloat16_has_an_identity_of_its_own(float32: Embedder, bfloat16: Embedder) -> None:
    assert float32.model.endswith("/sentence-transformers")
    assert bfloat16.model.endswith("/sentence-transformers-bf16")
    assert bfloat16.model.split("/")[0] == float32.model.split("/")[0]  # same weights


def test_compiled_matches_eager_in_the_callers_order(bfloat16: Embedder) -> None:
    compiled = open_embedder(
        EmbeddingConfig(
            backend="sentence-transformers",
            precision="bfloat16",
            compile=True,
            threads=2,
            batch_size=2,  # several batches of different lengths through one compile
        )
    )
    assert compiled.model == bfloat16.model
    eager = bfloat16.embed(TEXTS)
    shuffled = [TEXTS[i] for i in (2, 0, 4, 1, 3)]
    vectors = compiled.embed(shuffled)
    cosine = (vectors * eager[[2, 0, 4, 1, 3]]).sum(axis=1)
    assert cosine.min() > 0.995, cosine
    assert compiled.embed([]).shape == (0, compiled.dimension)


def test_settings_apply_to_the_torch_backend_only() -> None:
    with pytest.raises(ValidationError, match="precision apply to backend 'sentence-trans"):
        EmbeddingConfig(precision="bfloat16")
    with pytest.raises(ValidationError, match="compile apply to backend 'sentence-trans"):
        EmbeddingConfig(compile=True)
    with pytest.raises(ValidationError, match="precision, compile apply"):
        EmbeddingConfig(
            backend="openai", url="http://x/v1", model="m", precision="float32", compile=False
        )
    with pytest.raises(ValidationError):
        EmbeddingConfig(backend="sentence-transformers", precision="float16")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="precision must be"):
        SentenceTransformerEmbedder(resolve_model("all-MiniLM-L6-v2"), precision="int4")
