"""``conveyor rag build|list|show|search|eval|alias|delete`` in process (typer's runner), on a
project with no keys yet (the local user acts), with the real ONNX encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rag_collections_support import eval_set, make_project
from typer.testing import CliRunner

from conveyor.cli import app


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ragcli")
    make_project(folder, gate={"eval_set": "evals.jsonl", "tolerance": 0.05}).close()
    eval_set(folder)
    return folder


def _run(root: Path, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, [*args, "-C", str(root)], env={"CONVEYOR_API_KEY": ""})
    assert result.exit_code == code, result.output
    return result


def _json(root: Path, *args: str) -> Any:
    return json.loads(_run(root, *args, "--json").stdout)


def test_the_verbs_end_to_end(root: Path) -> None:
    built = _json(root, "rag", "build", "docs")
    assert built["version"] == 1 and built["status"] == "ready" and built["alias_moved"]
    assert built["counts"]["documents"] == 4 and built["gate"]["passed"]

    (root / "docs" / "onnx.md").write_text("# ONNX\n\nThe encoder runs on ONNX Runtime.\n")
    text = _run(root, "rag", "build", "docs").stdout
    assert "docs@2 ready" in text and "1 new" in text and "alias live: moved" in text

    # a version that loses a relevant document is refused by the gate: exit 3, live stays
    (root / "docs" / "bm25.md").rename(root / "bm25.md.bak")
    refused = _run(root, "rag", "build", "docs", code=3).stdout
    assert "docs@3 refused" in refused and "alias live: not moved" in refused
    (root / "bm25.md.bak").rename(root / "docs" / "bm25.md")

    listed = _json(root, "rag", "list")["items"]
    assert listed == [
        {
            "collection": "docs",
            "declared": True,
            "versions": 3,
            "latest": 3,
            "aliases": {"live": 2},
            "chunks": listed[0]["chunks"],
        }
    ]
    versions = _json(root, "rag", "show", "docs")["items"]
    assert [(v["version"], v["status"]) for v in versions] == [
        (3, "refused"),
        (2, "ready"),
        (1, "ready"),
    ]
    one = _json(root, "rag", "show", "docs@1")
    assert one["params"]["index_url"] == "exact://" and one["gate"]["passed"]
    lineage = _json(root, "rag", "show", "docs@2", "--documents")["documents"]
    assert [d["doc_id"] for d in lineage] == [
        "aliases.md",
        "bm25.md",
        "cache.md",
        "gdpr.md",
        "onnx.md",
    ]
    assert all(len(d["content_hash"]) == 64 and d["chunk_ids"] for d in lineage)
    assert [d["has_subject"] for d in lineage].count(True) == 1

    found = _json(root, "rag", "search", "docs", "roll back an alias", "-k", "2")
    assert found["hits"][0]["doc_id"] == "aliases.md" and found["version"] == 2
    shown = _run(root, "rag", "search", "docs", "roll back an alias").stdout
    assert "docs/aliases.md" in shown

    report = _json(root, "rag", "eval", "docs")
    assert report["n_queries"] == 4 and 0 < report["ndcg@10"] <= 1
    assert "total" in report["latency_ms"]
    table = _run(root, "rag", "eval", "docs@1", "--set", str(root / "evals.jsonl")).stdout
    assert "nDCG@10" in table and "MRR" in table
    docstrings = _json(root, "rag", "eval", "docs", "--set", "docstrings", "--size", "40")
    assert docstrings["n_queries"] == 40 and docstrings["ndcg@10"] > 0.5

    moved = _json(root, "rag", "alias", "docs", "1")
    assert (moved["from_version"], moved["to_version"]) == (2, 1)
    back = _json(root, "rag", "alias", "docs", "--rollback")
    assert back["to_version"] == 2
    _run(root, "rag", "alias", "docs", code=1)  # neither a version nor --rollback

    deleted = _json(root, "rag", "delete", "docs", "--subject", "customer-42")
    assert deleted["documents"] == 1 and deleted["versions"] == [1, 2, 3]
    after = _json(root, "rag", "search", "docs", "tulip orders erased under GDPR", "-k", "10")
    assert "gdpr.md" not in [h["doc_id"] for h in after["hits"]]

    failed = _run(root, "rag", "search", "docs", "x", "--filter", "colour=red", code=1)
    assert "colour" in failed.output
