"""The default encoder: ONNX export agrees with sentence-transformers, INT8 stays close,
batching by length keeps the caller's order, truncation, the export cache and its lock,
the embedding cache, the config and the dimension check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from conveyor.errors import ConfigError, InvalidInputError
from conveyor.rag.embed import (
    CachedEmbedder,
    EmbeddingConfig,
    MemoryEmbeddingStore,
    check_dimension,
    open_embedder,
)
from conveyor.rag.embed import export as export_module
from conveyor.rag.embed.onnx_encoder import OnnxEmbedder
from conveyor.rag.types import Embedder

TEXTS = [
    "Compute the arithmetic mean along the specified axis.",
    "A man is eating food.",
    "hello",
    "Fit the model with X. Parameters: X array-like of shape (n_samples, n_features). "
    "Returns self, the fitted estimator. " * 4,
    "The quick brown fox jumps over the lazy dog.",
    "Return a sorted copy of an array.",
]


class Counting:
    """An embedder that counts what it was asked to encode (the cache test)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls.append(list(texts))
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="module")
def opened(cache_dir: Path) -> dict[str, Any]:
    """The fp32 and int8 encoders, opened at once from two threads into an empty cache
    folder: both need the fp32 export, which the folder's lock lets only one make."""
    before = export_module.export_count()
    found: dict[str, Any] = {}

    def open_one(quantize: str) -> None:
        found[quantize] = open_embedder(
            EmbeddingConfig(quantize=quantize, threads=2, batch_size=4), cache_dir=cache_dir
        )

    threads = [threading.Thread(target=open_one, args=(q,)) for q in ("none", "int8")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found["exports"] = export_module.export_count() - before
    return found


@pytest.fixture(scope="module")
def fp32(opened: dict[str, Any]) -> OnnxEmbedder:
    embedder: OnnxEmbedder = opened["none"]
    return embedder


@pytest.fixture(scope="module")
def int8(opened: dict[str, Any]) -> OnnxEmbedder:
    embedder: OnnxEmbedder = opened["int8"]
    return embedder


@pytest.fixture(scope="module")
def reference() -> Embedder:
    return open_embedder(EmbeddingConfig(backend="sentence-transformers", threads=2))


def test_both_variants_opened_with_one_export(opened: dict[str, Any], cache_dir: Path) -> None:
    assert opened["exports"] == 1
    files = sorted(p.name for p in next(cache_dir.iterdir()).glob("*.onnx"))
    assert files == [f"{export_module.RECIPE}-fp32.onnx", f"{export_module.RECIPE}-int8.onnx"]
    assert not list(next(cache_dir.iterdir()).glob(".tmp-*"))  # no leftover temporary file


def test_second_open_reuses_the_cache_folder(int8: OnnxEmbedder, cache_dir: Path) -> None:
    mtime = int8.exported.path.stat().st_mtime_ns
    before = export_module.export_count()
    again = open_embedder(EmbeddingConfig(threads=1), cache_dir=cache_dir)
    assert isinstance(again, OnnxEmbedder)
    assert again.exported.created is False
    assert again.exported.path == int8.exported.path
    assert export_module.export_count() == before
    assert int8.exported.path.stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again.embed(TEXTS[:2]), int8.embed(TEXTS[:2]), atol=1e-5)


def test_model_identity_names_digest_and_variant(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    assert re.fullmatch(r"all-MiniLM-L6-v2@[0-9a-f]{12}/onnx-fp32", fp32.model)
    assert re.fullmatch(r"all-MiniLM-L6-v2@[0-9a-f]{12}/onnx-int8", int8.model)
    assert fp32.dimension == int8.dimension == 384
    assert fp32.max_tokens == 256
    assert isinstance(int8, Embedder)


def test_fp32_agrees_with_sentence_transformers(fp32: OnnxEmbedder, reference: Embedder) -> None:
    ours = fp32.embed(TEXTS)
    theirs = reference.embed(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


def test_int8_stays_close_to_sentence_transformers(
    int8: OnnxEmbedder, reference: Embedder, record_property: Any
) -> None:
    cosine = (int8.embed(TEXTS) * reference.embed(TEXTS)).sum(axis=1)
    record_property("int8_min_cosine", float(cosine.min()))
    print(f"int8 min cosine to sentence-transformers: {cosine.min():.4f}")
    assert cosine.min() > 0.98, cosine


def test_length_buckets_restore_the_callers_order(fp32: OnnxEmbedder) -> None:
    texts = [TEXTS[3], TEXTS[2], TEXTS[0], TEXTS[3][:50], TEXTS[4], TEXTS[1], TEXTS[5]]
    together = fp32.embed(texts)  # batch_size 4: two batches, padded per batch
    alone = np.vstack([fp32.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert (np.argmax(together @ alone.T, axis=1) == np.arange(len(texts))).all()


def test_long_input_is_truncated_at_the_models_limit(fp32: OnnxEmbedder) -> None:
    head = " ".join(f"word{i}" for i in range(400))
    a, b = fp32.embed([head + " apples and pears", head + " a completely different ending"])
    assert fp32.tokenizer.count(head) > 256
    np.testing.assert_allclose(a, b, atol=1e-6)  # what differs lies past token 256
    short = fp32.embed(["word0 word1 apples", "word0 word1 a completely different ending"])
    assert float(short[0] @ short[1]) < 0.99


def test_empty_list_and_bad_input(int8: OnnxEmbedder) -> None:
    assert int8.embed([]).shape == (0, 384)
    with pytest.raises(InvalidInputError, match="sequence of texts"):
        int8.embed("one string")
    with pytest.raises(InvalidInputError, match="max_tokens 300 is over"):
        open_embedder(EmbeddingConfig(max_tokens=300))


def test_query_path_does_not_import_torch(int8: OnnxEmbedder, cache_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from conveyor.rag.embed import EmbeddingConfig, open_embedder\n"
        f"e = open_embedder(EmbeddingConfig(threads=1), cache_dir=Path({str(cache_dir)!r}))\n"
        "v = e.embed(['a query'])\n"
        "print(v.shape, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["(1,", "384)", "False", "False"]


def test_cache_encodes_each_text_once(fp32: OnnxEmbedder) -> None:
    counting = Counting(fp32)
    store = MemoryEmbeddingStore()
    cached = CachedEmbedder(counting, store)
    first = cached.embed(["alpha", "beta", "alpha"])
    assert counting.calls == [["alpha", "beta"]]
    np.testing.assert_array_equal(first[0], first[2])
    second = cached.embed(["beta", "gamma", "alpha"])
    assert counting.calls == [["alpha", "beta"], ["gamma"]]
    np.testing.assert_array_equal(second[0], first[1])  # the stored vector, as stored
    np.testing.assert_allclose(second, fp32.embed(["beta", "gamma", "alpha"]), atol=1e-4)
    assert (cached.hits, cached.misses) == (2, 3)
    cached.embed(["alpha", "gamma"])
    assert len(counting.calls) == 2  # all hits: the encoder was not called
    assert cached.embed([]).shape == (0, 384)
    assert cached.model == fp32.model and len(store) == 3


def test_int8_vectors_vary_a_little_with_their_batch(int8: OnnxEmbedder) -> None:
    """Dynamic quantization scales activations per batch, so a text's int8 vector depends
    slightly on its batch-mates (why the cache keeps the first vector it was given)."""
    together = int8.embed(TEXTS)
    alone = np.vstack([int8.embed([t]) for t in TEXTS])
    cosine = (together * alone).sum(axis=1)
    # 0.9789 at worst with the model exported on a fresh machine (2026-12-05), 0.98 and
    # over on the machine that wrote this test: the export's rounding differs a little
    assert cosine.min() > 0.97, cosine
    assert cosine.min() < 1.0 - 1e-6, cosine  # and they do vary


def test_cache_is_keyed_by_model(int8: OnnxEmbedder, fp32: OnnxEmbedder) -> None:
    store = MemoryEmbeddingStore()
    a, b = Counting(int8), Counting(fp32)
    CachedEmbedder(a, store).embed(["shared text"])
    CachedEmbedder(b, store).embed(["shared text"])
    assert a.calls == b.calls == [["shared text"]]  # an int8 vector never answers for fp32
    assert len(store) == 2


def test_memory_store_evicts_least_recently_used() -> None:
    store = MemoryEmbeddingStore(max_entries=2)
    v = np.zeros(3, dtype=np.float32)
    store.put_many("m", {"a": v, "b": v})
    assert set(store.get_many("m", ["a"])) == {"a"}  # a is now the most recent
    store.put_many("m", {"c": v})
    assert set(store.get_many("m", ["a", "b", "c"])) == {"a", "c"}
    with pytest.raises(InvalidInputError):
        MemoryEmbeddingStore(max_entries=0)


def test_dimension_check_names_both_numbers(int8: OnnxEmbedder) -> None:
    check_dimension(int8, 384)
    with pytest.raises(ConfigError, match=r"dimension 384.*dimension 768") as info:
        check_dimension(int8, 768, what="collection docs v3")
    assert info.value.context == {"expected": 768, "actual": 384}
    assert "collection docs v3" in str(info.value)
    with pytest.raises(ConfigError, match="dimension 1536"):
        check_dimension(1536, 384)


def test_config_is_strict() -> None:
    config = EmbeddingConfig()
    assert (config.backend, config.quantize, config.model) == ("onnx", "int8", "all-MiniLM-L6-v2")
    with pytest.raises(ValidationError, match="extra"):
        EmbeddingConfig(modle="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="needs url"):
        EmbeddingConfig(backend="openai", model="text-embedding-3-small")
    with pytest.raises(ValidationError, match="needs model"):
        EmbeddingConfig(backend="openai", url="http://localhost:1/v1")
    with pytest.raises(ValidationError, match="openai' only"):
        EmbeddingConfig(url="http://localhost:1/v1")
    with pytest.raises(ValidationError, match="quantize applies"):
        EmbeddingConfig(backend="sentence-transformers", quantize="int8")
    with pytest.raises(ValidationError, match="frozen"):
        config.batch_size = 3  # type: ignore[misc]


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never downloaded"):
        open_embedder(EmbeddingConfig(model="no-such-model"))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        open_embedder(EmbeddingConfig(model=str(tmp_path)))


def test_default_cache_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONVEYOR_CACHE_DIR", str(tmp_path))
    assert export_module.default_cache_dir() == tmp_path / "encoders"
    monkeypatch.delenv("CONVEYOR_CACHE_DIR")
    assert export_module.default_cache_dir() == Path(
        os.path.expanduser("~/.cache/conveyor/encoders")
    )
