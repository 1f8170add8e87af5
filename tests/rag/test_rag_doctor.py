"""``conveyor doctor`` says what this CPU makes of each collection's encoder: INT8 without
VNNI is no faster than float32 (measured on a Zen 2 EPYC, docs/rag/embeddings.md), and
bfloat16 without the CPU's bfloat16 instructions is emulated. Advice, never a failure."""

from __future__ import annotations

import json
from pathlib import Path

from rag_collections_support import make_project
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.rag.doctor import cpu_flags, encoder_rows
from conveyor.rag.settings import CollectionSpec

ZEN2 = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
ZEN4 = ZEN2 | {"avx512f", "avx512_vnni", "avx512_bf16"}


def _collections(**embeddings: dict[str, object]) -> dict[str, CollectionSpec]:
    return {
        name: CollectionSpec.model_validate(
            {"sources": [{"kind": "files", "path": "docs"}], "embedding": embedding}
        )
        for name, embedding in embeddings.items()
    }


def test_int8_on_a_cpu_without_vnni_is_pointed_at_float32() -> None:
    collections = _collections(docs={}, exact={"quantize": "none"})
    without = {row["collection"]: row for row in encoder_rows(collections, ZEN2)}
    assert without["docs"]["encoder"] == "onnx int8" and without["docs"]["ok"] is True
    assert "no VNNI" in without["docs"]["detail"]
    assert "quantize: none" in without["docs"]["detail"]
    assert without["exact"]["encoder"] == "onnx float32"
    assert "as fast as INT8" in without["exact"]["detail"]

    with_vnni = {row["collection"]: row for row in encoder_rows(collections, ZEN4)}
    assert "fastest" in with_vnni["docs"]["detail"]
    assert with_vnni["exact"]["detail"] == "float32"


def test_bfloat16_without_the_instructions_is_called_emulated() -> None:
    collections = _collections(
        fast={"backend": "sentence-transformers", "precision": "bfloat16"},
        plain={"backend": "sentence-transformers"},
    )
    rows = {row["collection"]: row for row in encoder_rows(collections, ZEN2)}
    assert "emulates" in rows["fast"]["detail"] and rows["fast"]["ok"] is True
    assert rows["plain"]["detail"] == "float32"
    rows = {row["collection"]: row for row in encoder_rows(collections, ZEN4)}
    assert rows["fast"]["detail"] == "bfloat16 in hardware"


def test_unknown_cpu_features_are_said_so(tmp_path: Path) -> None:
    rows = encoder_rows(_collections(docs={}), None)
    assert rows[0]["detail"] == "CPU features unknown on this machine"
    assert cpu_flags(tmp_path / "missing") is None
    listing = tmp_path / "cpuinfo"
    listing.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    assert cpu_flags(listing) is None
    listing.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_flags(listing) == {"fpu", "avx2", "avx512_vnni"}


def test_the_doctor_lists_each_collections_encoder(tmp_path: Path) -> None:
    make_project(tmp_path).close()
    result = CliRunner().invoke(
        app, ["doctor", "--json", "-C", str(tmp_path)], env={"CONVEYOR_API_KEY": ""}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    (row,) = report["rag_encoders"]
    assert row["collection"] == "docs" and row["encoder"] == "onnx int8" and row["ok"]
    flags = cpu_flags()
    if flags is not None:  # this machine's own answer, whichever CPU runs the suite
        assert ("no VNNI" in row["detail"]) == (not flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
