"""The default encoder: a sentence-transformers model run by ONNX Runtime.

The query and ingestion path imports tokenizers, numpy and onnxruntime only. A call
tokenizes every text in one parallel batch (the fast tokenizer, truncated at the model's
``max_seq_length``), sorts the texts by token count so each batch is padded only to its own
longest member, runs the batches through one ``InferenceSession`` and puts the rows back in
the caller's order. The graph itself pools and normalizes (see :mod:`.export`).

On a machine where ONNX Runtime offers ``CUDAExecutionProvider`` the same session runs on
the GPU; nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, MissingDependencyError
from conveyor.rag.embed.export import ModelFiles, Variant, ensure_onnx
from conveyor.rag.embed.tokenizer import HFTokenizer

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["OnnxEmbedder", "available_cores"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxEmbedder:
    """An :class:`~conveyor.rag.types.Embedder` over an exported ONNX sentence encoder.

    Thread-safe: ``InferenceSession.run`` may be called concurrently and the tokenizer is
    only read.
    """

    def __init__(
        self,
        files: ModelFiles,
        *,
        variant: Variant = "int8",
        batch_size: int = 32,
        threads: int | None = None,
        max_tokens: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError(
                "the onnx embedding backend needs onnxruntime and tokenizers: "
                "pip install 'conveyor[rag]'",
                model=files.name,
            ) from exc
        if max_tokens is not None and max_tokens > files.max_seq_length:
            raise InvalidInputError(
                f"max_tokens {max_tokens} is over {files.name}'s limit of "
                f"{files.max_seq_length} tokens",
                field="max_tokens",
            )
        self._files = files
        self._variant = variant
        self._batch_size = batch_size
        self._max_tokens = max_tokens or files.max_seq_length
        self.exported = ensure_onnx(files, variant, cache_dir)
        """The ONNX file and whether opening this embedder had to export it."""

        self._tokenizer = HFTokenizer.from_file(files.directory)
        encoder = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
        encoder.no_padding()
        encoder.enable_truncation(max_length=self._max_tokens)
        self._encoder = encoder

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(
            str(self.exported.path), sess_options=options, providers=providers
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    @property
    def model(self) -> str:
        return f"{self._files.name}@{self._files.sha256[:12]}/onnx-{self._variant}"

    @property
    def dimension(self) -> int:
        return self._files.dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, preferred first."""
        providers: list[str] = self._session.get_providers()
        return providers

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            raise InvalidInputError("embed takes a sequence of texts, not one string")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self._encoder.encode_batch(list(texts), add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Longest first: the first batch shows the peak memory at once, the rest shrink.
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = int(lengths[rows[0]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = int(lengths[i])
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            (vectors,) = self._session.run(["sentence_embedding"], feed)
            out[rows] = vectors
        return out
