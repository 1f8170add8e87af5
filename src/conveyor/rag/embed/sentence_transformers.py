"""The reference encoder: a model run by sentence-transformers on torch.

Slower than the ONNX path (see ``docs/rag/embeddings.md``) but it runs any model folder
sentence-transformers reads, whatever its pooling, and it is what the ONNX export is
checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError, MissingDependencyError
from conveyor.rag.embed.export import ModelFiles
from conveyor.rag.embed.tokenizer import HFTokenizer

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["SentenceTransformerEmbedder"]


class SentenceTransformerEmbedder:
    """An :class:`~conveyor.rag.types.Embedder` over ``sentence_transformers.SentenceTransformer``
    on the CPU (or the GPU torch finds)."""

    def __init__(
        self,
        files: ModelFiles,
        *,
        batch_size: int = 32,
        threads: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                "the sentence-transformers embedding backend needs sentence-transformers and "
                "torch: pip install 'conveyor[rag]'",
                model=files.name,
            ) from exc
        if max_tokens is not None and max_tokens > files.max_seq_length:
            raise InvalidInputError(
                f"max_tokens {max_tokens} is over {files.name}'s limit of "
                f"{files.max_seq_length} tokens",
                field="max_tokens",
            )
        if threads:
            torch.set_num_threads(threads)
        self._files = files
        self._batch_size = batch_size
        self._model = SentenceTransformer(str(files.directory), local_files_only=True)
        if max_tokens:
            self._model.max_seq_length = max_tokens
        self._max_tokens = int(self._model.max_seq_length or files.max_seq_length)
        # Renamed get_embedding_dimension in sentence-transformers 6; the old name warns.
        get_dimension = getattr(self._model, "get_embedding_dimension", None)
        if get_dimension is None:
            get_dimension = self._model.get_sentence_embedding_dimension
        dimension = get_dimension()
        self._dimension = int(dimension or files.dimension)
        self._tokenizer = HFTokenizer.from_file(files.directory)

    @property
    def model(self) -> str:
        return f"{self._files.name}@{self._files.sha256[:12]}/sentence-transformers"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            raise InvalidInputError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
