"""The reference encoder: a model run by sentence-transformers on torch.

In float32 it is slower than the ONNX path (see ``docs/rag/embeddings.md``) but it runs
any model folder sentence-transformers reads, whatever its pooling, and it is what the
ONNX export is checked against. In bfloat16, compiled by ``torch.compile``, it is the
fastest encoder on a CPU with AMX (Intel Sapphire Rapids and later) or on a GPU: the
matrix units do bfloat16, not INT8 through ONNX Runtime's kernels.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, InvalidInputError, MissingDependencyError
from conveyor.rag.embed.export import ModelFiles
from conveyor.rag.embed.tokenizer import HFTokenizer

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["SentenceTransformerEmbedder"]

log = logging.getLogger(__name__)


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
        precision: str = "float32",
        compile: bool = False,
    ) -> None:
        if precision not in ("float32", "bfloat16"):
            raise InvalidInputError(
                f"precision must be 'float32' or 'bfloat16', got {precision!r}",
                field="precision",
            )
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
        self._precision = precision
        model_kwargs: dict[str, Any] = {}
        if precision == "bfloat16":
            model_kwargs["torch_dtype"] = torch.bfloat16
        self._model = SentenceTransformer(
            str(files.directory), local_files_only=True, model_kwargs=model_kwargs
        )
        if precision == "bfloat16" and self._model.device.type == "cpu" and not _cpu_bf16():
            log.warning(
                "embedding in bfloat16 on a CPU without AVX512-BF16 or AMX: torch emulates "
                "it, which is slower than float32; use precision float32 or the onnx backend"
            )
        if compile:
            self._compile(torch)
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

    def _compile(self, torch: Any) -> None:
        """Swap the transformer module for its ``torch.compile`` wrapper (dynamic shapes:
        batches differ in length; the compile runs at the first batch)."""
        transformers = [m for m in self._model if hasattr(m, "auto_model")]
        if not transformers:
            raise ConfigError(
                f"compile: {self._files.name} has no transformer module sentence-transformers "
                "names auto_model; turn compile off for this model",
                field="compile",
                model=self._files.name,
            )
        with _torch_deprecations_quiet():
            for module in transformers:
                module.auto_model = torch.compile(module.auto_model, dynamic=True)

    @property
    def model(self) -> str:
        # Compiling changes no numbers beyond rounding: the identity names the precision.
        suffix = "" if self._precision == "float32" else "-bf16"
        return f"{self._files.name}@{self._files.sha256[:12]}/sentence-transformers{suffix}"

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
        import torch

        if isinstance(texts, str):
            raise InvalidInputError("embed takes a sequence of texts, not one string")
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        with torch.inference_mode():
            tensors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=False,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        # Normalized in float32 whatever the model ran in.
        vectors: NDArray[np.float32] = np.ascontiguousarray(
            tensors.float().cpu().numpy(), dtype=np.float32
        )
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
        return vectors


@contextlib.contextmanager
def _torch_deprecations_quiet() -> Iterator[None]:
    """torch's compiler imports modules of its own that warn of torch's deprecations
    (``torch.jit.script_method``): not the caller's to act on, so not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        yield


def _cpu_bf16() -> bool:
    """Whether this CPU does bfloat16 in hardware (AVX512-BF16 or AMX), as torch reports."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False
