"""faiss, imported once, with the instruction set its search code runs on chosen by measure.

faiss 1.15 picks its SIMD level at run time and takes ``AVX512_SPR`` on a CPU that has
it (Sapphire Rapids and later). There its 8-bit scalar quantizer has no code of its own:
``hnsw://?storage=sq8`` searched 1,467 queries/s on one thread against 2,547 with the
``AVX512`` level on the same machine and data (and the float graph 1,410 against 1,537;
``benchmarks/rag_index.py`` on 200k vectors: sq8 929 against over 2,000 q/s). So where
faiss chose ``AVX512_SPR`` and ``AVX512`` is available, ``AVX512`` is used.

``CONVEYOR_FAISS_SIMD`` overrides it: ``auto`` keeps faiss's own choice, a level name
(``AVX2``, ``AVX512``, ``AVX512_SPR``, ``NONE``) sets that one. The level is the
process's (faiss keeps one), so it is chosen where an index first makes faiss objects (an
index's constructor or load, IVF's training); searches then use plain ``import faiss``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = ["SIMD_ENV", "faiss_module"]

SIMD_ENV = "CONVEYOR_FAISS_SIMD"
_lock = threading.Lock()
_chosen = False


def faiss_module() -> Any:
    """``faiss``, its SIMD level set as the module docstring says (once a process)."""
    global _chosen
    import faiss

    if _chosen:
        return faiss
    with _lock:
        if not _chosen:
            _choose(faiss)
            _chosen = True
    return faiss


def _choose(faiss: Any) -> None:
    config = getattr(faiss, "SIMDConfig", None)
    if config is None or not config.has_dynamic_dispatch():
        return  # a build for one instruction set: nothing to choose
    wanted = os.environ.get(SIMD_ENV, "").strip().upper()
    if wanted == "AUTO":
        return
    if wanted:
        level = getattr(faiss, f"SIMDLevel_{wanted}", None)
        if level is None or not config.is_simd_level_available(level):
            raise InvalidInputError(
                f"{SIMD_ENV}={wanted}: not a SIMD level faiss can run here; available: "
                f"{', '.join(_available(faiss, config))} (or auto)",
                field=SIMD_ENV,
            )
        config.set_level(level)
        return
    if config.get_level_name() == "AVX512_SPR" and config.is_simd_level_available(
        faiss.SIMDLevel_AVX512
    ):
        config.set_level(faiss.SIMDLevel_AVX512)


def _available(faiss: Any, config: Any) -> list[str]:
    names = [n.removeprefix("SIMDLevel_") for n in dir(faiss) if n.startswith("SIMDLevel_")]
    return [
        n
        for n in names
        if n != "COUNT" and config.is_simd_level_available(getattr(faiss, f"SIMDLevel_{n}"))
    ]
