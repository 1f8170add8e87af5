"""Open the encoder an :class:`EmbeddingConfig` names, and check it fits an index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError
from conveyor.rag.embed.config import EmbeddingConfig
from conveyor.rag.embed.tokenizer import DEFAULT_MODEL, default_model_dir

if TYPE_CHECKING:
    from conveyor.rag.embed.export import ModelFiles
    from conveyor.rag.types import Embedder

__all__ = ["check_dimension", "open_embedder", "resolve_model"]


def resolve_model(model: str) -> ModelFiles:
    """The files of ``model``: the packaged default by name, else a local folder."""
    from conveyor.rag.embed.export import model_files

    if model == DEFAULT_MODEL:
        return model_files(default_model_dir(), DEFAULT_MODEL)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"embedding model {model!r} is neither {DEFAULT_MODEL!r} (the packaged default) "
            "nor a local model folder; models are never downloaded",
            field="model",
            model=model,
        )
    return model_files(folder.resolve())


def open_embedder(
    config: EmbeddingConfig | None = None, *, cache_dir: Path | None = None
) -> Embedder:
    """The :class:`~conveyor.rag.types.Embedder` ``config`` describes (the default one when
    ``None``).

    For backend ``onnx`` the first open of a model exports it into ``cache_dir`` (default
    ``$CONVEYOR_CACHE_DIR/encoders`` or ``~/.cache/conveyor/encoders``), which takes a few
    seconds and needs torch; every later open, in any process, loads the cached file.
    """
    config = config or EmbeddingConfig()
    if config.backend == "openai":
        from conveyor.rag.embed.openai import OpenAIEmbedder

        assert config.url is not None  # the config's validator requires it
        return OpenAIEmbedder.from_env(
            config.url,
            config.model,
            config.api_key_env,
            dimension=config.dimension,
            batch_size=config.batch_size,
            max_tokens=config.max_tokens,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
    files = resolve_model(config.model)
    if config.backend == "sentence-transformers":
        from conveyor.rag.embed.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            files,
            batch_size=config.batch_size,
            threads=config.threads,
            max_tokens=config.max_tokens,
            precision=config.precision,
            compile=config.compile,
        )
    from conveyor.rag.embed.onnx_encoder import OnnxEmbedder

    return OnnxEmbedder(
        files,
        variant="int8" if config.quantize == "int8" else "fp32",
        batch_size=config.batch_size,
        threads=config.threads,
        max_tokens=config.max_tokens,
        cache_dir=cache_dir,
    )


def check_dimension(embedder: Embedder | int, expected: int, *, what: str = "the index") -> None:
    """Refuse an encoder whose vectors do not fit ``what`` (built for ``expected``
    dimensions), naming both numbers: a collection built with one model cannot be searched
    or extended with another's vectors."""
    actual = embedder if isinstance(embedder, int) else embedder.dimension
    if actual != expected:
        name = "" if isinstance(embedder, int) else f" {embedder.model}"
        raise ConfigError(
            f"embedding model{name} makes vectors of dimension {actual}, but {what} holds "
            f"vectors of dimension {expected}: rebuild it with this model or configure the "
            "model it was built with",
            expected=expected,
            actual=actual,
        )
