"""The instruction set faiss searches with (``conveyor.rag.index._faiss``): on a CPU where
faiss picks ``AVX512_SPR``, whose 8-bit quantizer has no code of its own (sq8 search at
about half the speed, measured), Conveyor's indexes run it at ``AVX512``; the
``CONVEYOR_FAISS_SIMD`` variable keeps faiss's choice (``auto``) or names a level, and a
level that cannot run here is refused naming the variable. Each case is a fresh process:
faiss keeps one level a process."""

from __future__ import annotations

import json
import os

from fresh_python import run_python

SCRIPT = """
import json, sys
import numpy as np
import faiss
chosen_by_faiss = faiss.SIMDConfig.get_level_name()
available = [n for n in ("AVX2", "AVX512", "AVX512_SPR")
             if faiss.SIMDConfig.is_simd_level_available(getattr(faiss, "SIMDLevel_" + n))]
from conveyor.errors import InvalidInputError
from conveyor.rag.index.hnsw import HnswIndex
try:
    index = HnswIndex(16, storage="sq8")
except InvalidInputError as exc:
    print(json.dumps({"refused": exc.message, "field": exc.context.get("field")}))
    raise SystemExit(0)
rng = np.random.default_rng(0)
vectors = rng.standard_normal((500, 16)).astype(np.float32)
index.add(np.arange(500), vectors)
_, ids = index.search(vectors[:20], 5)
print(json.dumps({"faiss": chosen_by_faiss, "available": available,
                  "level": faiss.SIMDConfig.get_level_name(), "ids": ids.tolist()}))
"""


def _run(simd: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_FAISS_SIMD"}
    if simd is not None:
        env["CONVEYOR_FAISS_SIMD"] = simd
    found: dict[str, object] = json.loads(run_python(SCRIPT, env=env).strip().splitlines()[-1])
    return found


def test_faiss_runs_at_avx512_where_it_would_pick_avx512_spr_and_auto_keeps_its_choice() -> None:
    default, auto = _run(None), _run("auto")
    assert auto["level"] == auto["faiss"]  # faiss's own choice, untouched
    if default["faiss"] == "AVX512_SPR" and "AVX512" in default["available"]:  # type: ignore[operator]
        assert default["level"] == "AVX512"
    else:
        assert default["level"] == default["faiss"]
    # the same neighbours whatever the level
    assert default["ids"] == auto["ids"] and len(default["ids"]) == 20  # type: ignore[arg-type]


def test_a_named_level_is_used_and_one_that_cannot_run_is_refused() -> None:
    assert _run("AVX2")["level"] == "AVX2"  # every x86-64 faiss wheel here has it
    refused = _run("PENTIUM")
    assert refused["field"] == "CONVEYOR_FAISS_SIMD"
    assert "CONVEYOR_FAISS_SIMD=PENTIUM" in str(refused["refused"]) and "auto" in str(
        refused["refused"]
    )
