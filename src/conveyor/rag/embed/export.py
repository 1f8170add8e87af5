"""Turn a sentence-transformers model folder into ONNX files, once, in a shared cache.

The transformer is exported with ``torch.onnx.export`` together with its mean pooling and
L2 normalization (so the graph's output is the sentence embedding), then optimized offline
by ONNX Runtime's transformer optimizer (attention, LayerNorm, GELU and the embedding layer
fused into single kernels for BERT-like models) and, for the ``int8`` variant, dynamically
quantized (weights int8, activations quantized per batch at run time).

The files land in ``<cache>/<model name>-<sha256 of the weights>/<variant>.onnx``. Each is
written to a temporary name and renamed into place while an exclusive file lock is held,
so two processes asking at once (pytest-xdist workers, two servers) export it once and a
reader never sees a half-written file. torch is imported here only, and only when a file
is missing: the query path never loads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conveyor.errors import ConfigError, MissingDependencyError

__all__ = [
    "RECIPE",
    "ExportedModel",
    "ModelFiles",
    "default_cache_dir",
    "ensure_onnx",
    "export_count",
    "model_files",
]

#: Bumped whenever the export, optimization or quantization recipe changes, so files made
#: by an older recipe are never reused.
RECIPE = "r1"

Variant = Literal["fp32", "int8"]

_exports = 0


def export_count() -> int:
    """How many torch exports this process ran (a test checks the cache is reused)."""
    return _exports


def default_cache_dir() -> Path:
    """``$CONVEYOR_CACHE_DIR/encoders``, else ``~/.cache/conveyor/encoders``."""
    root = os.environ.get("CONVEYOR_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "encoders"
    return Path.home() / ".cache" / "conveyor" / "encoders"


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """What a sentence-transformers model folder says about itself."""

    directory: Path
    name: str
    weights: Path
    sha256: str
    dimension: int
    max_seq_length: int
    model_type: str
    num_heads: int
    pooling: str


@dataclass(frozen=True, slots=True)
class ExportedModel:
    """An ONNX file ready to load, and whether this call had to make it."""

    path: Path
    variant: Variant
    created: bool


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", path=str(path)) from exc
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def model_files(directory: Path, name: str | None = None) -> ModelFiles:
    """Read a model folder (``config.json``, the weights, the pooling and length settings).

    Refuses, with :class:`ConfigError`, a folder without weights or whose pooling is not the
    mean (the ONNX graph computes the mean; other poolings go through the
    ``sentence-transformers`` backend).
    """
    if not directory.is_dir():
        raise ConfigError(f"embedding model folder {directory} does not exist", path=str(directory))
    config = _read_json(directory / "config.json")
    if not config:
        raise ConfigError(
            f"{directory} has no config.json: not a Hugging Face model folder",
            path=str(directory),
        )
    weights = next(
        (
            directory / f
            for f in ("model.safetensors", "pytorch_model.bin")
            if (directory / f).is_file()
        ),
        None,
    )
    if weights is None:
        raise ConfigError(
            f"{directory} holds no weights (model.safetensors or pytorch_model.bin)",
            path=str(directory),
        )
    pooling_cfg = _read_json(directory / "1_Pooling" / "config.json")
    pooling = "mean"
    if pooling_cfg and not pooling_cfg.get("pooling_mode_mean_tokens", False):
        pooling = next(
            (k.removeprefix("pooling_mode_") for k, v in pooling_cfg.items() if v is True),
            "unknown",
        )
    st_cfg = _read_json(directory / "sentence_bert_config.json")
    max_positions = int(config.get("max_position_embeddings", 512))
    max_seq = int(st_cfg.get("max_seq_length") or max_positions)
    return ModelFiles(
        directory=directory,
        name=name or directory.name,
        weights=weights,
        sha256=_sha256(weights),
        dimension=int(config.get("hidden_size", 0)),
        max_seq_length=min(max_seq, max_positions),
        model_type=str(config.get("model_type", "")),
        num_heads=int(config.get("num_attention_heads", 0)),
        pooling=pooling,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _temp_path(folder: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    return Path(name)


def ensure_onnx(
    files: ModelFiles, variant: Variant, cache_dir: Path | None = None
) -> ExportedModel:
    """The ``variant`` ONNX file of ``files``, exported and optimized (and quantized) if the
    cache does not hold it yet."""
    if files.pooling != "mean":
        raise ConfigError(
            f"{files.name} pools by {files.pooling!r}; the onnx backend exports mean pooling "
            "only: use backend 'sentence-transformers' for this model",
            model=files.name,
        )
    folder = (cache_dir or default_cache_dir()) / f"{files.name}-{files.sha256[:16]}"
    target = folder / f"{RECIPE}-{variant}.onnx"
    if target.is_file():
        return ExportedModel(target, variant, created=False)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        if target.is_file():  # another process made it while this one waited
            return ExportedModel(target, variant, created=False)
        fp32 = folder / f"{RECIPE}-fp32.onnx"
        if not fp32.is_file():
            _build_fp32(files, fp32)
        if variant == "int8":
            _quantize(fp32, target)
        note = _temp_path(folder, ".json")  # what the folder holds, for a person looking
        note.write_text(
            json.dumps({"model": files.name, "weights_sha256": files.sha256, "recipe": RECIPE})
        )
        note.chmod(0o644)
        os.replace(note, folder / "source.json")
    return ExportedModel(target, variant, created=True)


def _build_fp32(files: ModelFiles, target: Path) -> None:
    raw = _temp_path(target.parent, ".raw.onnx")
    try:
        _export(files, raw)
        optimized = _temp_path(target.parent, ".opt.onnx")
        try:
            _optimize(files, raw, optimized)
            optimized.chmod(0o644)
            os.replace(optimized, target)
        finally:
            optimized.unlink(missing_ok=True)
    finally:
        raw.unlink(missing_ok=True)


def _export(files: ModelFiles, target: Path) -> None:
    """torch.onnx.export of the transformer followed by mean pooling and L2 normalization."""
    global _exports
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependencyError(
            "exporting the encoder to ONNX needs torch and transformers: "
            "pip install 'conveyor[rag]'",
            model=files.name,
        ) from exc

    # The eager attention exports as the MatMul/Softmax pattern the optimizer fuses.
    transformer = AutoModel.from_pretrained(str(files.directory), attn_implementation="eager")
    transformer.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    sample = torch.ones((2, 16), dtype=torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    # The TorchScript exporter (dynamo=False) warns that it is deprecated; the dynamo one
    # needs onnxscript, which the rag extra does not install. The warning is not the user's.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(transformer),
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "token_type_ids": dynamic,
                "sentence_embedding": {0: "batch"},
            },
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    _exports += 1


def _optimize(files: ModelFiles, source: Path, target: Path) -> None:
    """Offline graph fusion for BERT-like encoders; other types get ORT's generic passes."""
    from onnxruntime.transformers import optimizer

    model_type = files.model_type if files.model_type in {"bert", "roberta", "distilbert"} else ""
    if model_type:
        optimized = optimizer.optimize_model(
            str(source),
            model_type="bert" if model_type == "roberta" else model_type,
            num_heads=files.num_heads,
            hidden_size=files.dimension,
            opt_level=1,
            use_gpu=False,
        )
        optimized.save_model_to_file(str(target))
    else:
        target.write_bytes(source.read_bytes())


def _quantize(source: Path, target: Path) -> None:
    """Dynamic INT8 quantization of the optimized graph's weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _temp_path(target.parent, ".int8.onnx")
    # quantize_dynamic logs a hint on the root logger (run its pre-processing, which is
    # for static quantization of CNNs); the optimizer already ran, so the hint is noise.
    quiet = _DropMessage("pre-processing before quantization")
    logging.getLogger().addFilter(quiet)
    try:
        # The fused contrib ops (Attention, SkipLayerNormalization) have no type in ONNX's
        # shape inference: their outputs are float32.
        # Per output channel: one scale per column keeps the small MiniLM's weights within
        # 0.99 cosine of fp32 (one scale per matrix dropped to 0.85 on long docstrings). The
        # embedding table stays float32: it is a lookup, quantizing it saves memory only.
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        logging.getLogger().removeFilter(quiet)
        tmp.unlink(missing_ok=True)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
