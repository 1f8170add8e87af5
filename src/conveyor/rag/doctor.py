"""``conveyor doctor``'s table of the collections' encoders against this machine's CPU.

The default encoder (ONNX Runtime, INT8 weights) is the fastest on a CPU with VNNI (its
8-bit products in one instruction); without VNNI, INT8 runs no faster than float32 and
costs a little quality (docs/rag/embeddings.md: 23.2 against 23.1 documents/s on a Zen 2
EPYC). bfloat16 without the CPU's bfloat16 instructions is emulated by torch, several times
slower than float32. Neither is an error: the encoder still gives its vectors, so each row
is ok and says what the CPU makes of the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.rag.settings import CollectionSpec

__all__ = ["cpu_flags", "doctor_check", "encoder_rows"]

#: CPU flags (as /proc/cpuinfo names them) that do 8-bit integer products in one instruction.
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: ... and bfloat16 products.
BF16 = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first CPU's flags, or None where the file does not list them (not Linux on x86)."""
    try:
        with cpuinfo.open() as lines:  # the first CPU's block only, not every CPU's
            for line in lines:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def doctor_check(spec: Any) -> tuple[str, list[dict[str, Any]]]:
    """``conveyor doctor``'s rows for the spec's collections (Capability.doctor)."""
    from conveyor.rag.settings import rag_of

    return "rag_encoders", encoder_rows(rag_of(spec).collections, cpu_flags())


def encoder_rows(
    collections: Mapping[str, CollectionSpec], flags: frozenset[str] | None
) -> list[dict[str, Any]]:
    """A row a collection: its encoder and what this CPU makes of it."""
    rows = []
    for name, collection in collections.items():
        config = collection.embedding
        if config.backend == "onnx":
            encoder = "onnx int8" if config.quantize == "int8" else "onnx float32"
            detail = _onnx(config.quantize, flags)
        elif config.backend == "sentence-transformers":
            encoder = f"sentence-transformers {config.precision}"
            detail = _torch(config.precision, flags)
        else:
            encoder, detail = config.backend, "remote: the endpoint's hardware does the work"
        rows.append({"collection": name, "encoder": encoder, "ok": True, "detail": detail})
    return rows


def _onnx(quantize: str, flags: frozenset[str] | None) -> str:
    if flags is None:
        return "CPU features unknown on this machine"
    if quantize != "int8":
        return "float32" + ("" if flags & VNNI else " (no VNNI: as fast as INT8 here)")
    if flags & VNNI:
        return "INT8 with VNNI: the fastest ONNX variant here"
    return (
        "this CPU has no VNNI: INT8 runs no faster than float32 here and loses a little "
        "quality; `quantize: none` is as fast (a different encoder: rebuild to switch)"
    )


def _torch(precision: str, flags: frozenset[str] | None) -> str:
    if precision != "bfloat16":
        return precision
    if flags is None:
        return "CPU features unknown on this machine"
    if flags & BF16:
        return "bfloat16 in hardware"
    return (
        "this CPU has no bfloat16 instructions: torch emulates them, several times slower "
        "than float32 (`precision: float32`, or the default ONNX INT8 encoder)"
    )
