"""A build killed with SIGKILL midway (at its gate: chunks stored, index archived, version
not finished): nothing of it is live, and the next build fails the version it left
``building`` and its run (they would say "building" and "running" for ever), reuses the
documents it had chunked (nothing embedded twice), and becomes live itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rag_collections_support import Counting, encoder, eval_set, make_project

from conveyor.project import Project
from conveyor.rag.builder import RUN_KIND, build_collection
from conveyor.rag.collections import Collections

_QUERY = "roll back an alias to the previous version"  # the eval set's first query

_CHILD = textwrap.dedent(
    """
    import os, signal, sys

    sys.path.insert(0, {support!r})
    from rag_collections_support import Counting, encoder

    from conveyor.project import Project
    from conveyor.rag.builder import build_collection


    class KilledAtTheGate(Counting):
        def embed(self, texts):
            if list(texts) == [{query!r}]:  # the gate embeds its first query: die here
                os.kill(os.getpid(), signal.SIGKILL)
            return super().embed(texts)


    with Project.open({root!r}, env={{}}) as project:
        build_collection(project, "docs", actor="ana", embedder=KilledAtTheGate(encoder()))
    """
)


def test_a_build_killed_midway_is_failed_by_the_next_one(tmp_path: Path) -> None:
    gate = {"eval_set": "evals.jsonl", "tolerance": 0.05}
    make_project(tmp_path, gate=gate).close()
    eval_set(tmp_path)
    script = _CHILD.format(support=str(Path(__file__).parent), query=_QUERY, root=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    killed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert killed.returncode == -9, killed.stderr

    with Project.open(tmp_path, env={}) as project:
        rag = project.service("rag", Collections)
        (left,) = rag.versions("docs")
        assert left.status == "building" and left.index_digest is not None
        assert rag.aliases("docs") == {}  # nothing half-built is live
        (run,) = project.store.runs.list(kind=RUN_KIND).items
        assert run.status == "running"

        time.sleep(0.3)  # the killed build's run goes without a heartbeat past stale_after_s
        counting = Counting(encoder())
        result = build_collection(
            project, "docs", actor="ana", embedder=counting, stale_after_s=0.2
        )
        assert result.version.number == 2 and result.version.status == "ready"
        assert result.moved and rag.aliases("docs") == {"live": 2}
        # the documents the killed build chunked and embedded are reused, not embedded again
        assert result.counts["embedded_chunks"] == 0
        assert result.counts["reused_documents"] == result.counts["documents"]

        failed = rag.version("docs", 1)
        assert failed.status == "failed" and "interrupted" in (failed.error or "")
        runs = {r.name: r for r in project.store.runs.list(kind=RUN_KIND).items}
        assert runs["docs@1"].status == "failed" and "interrupted" in (runs["docs@1"].error or "")
        assert runs["docs@2"].status == "succeeded"


def test_a_live_build_of_another_process_is_left_alone(tmp_path: Path) -> None:
    # a version "building" whose run beats (or is younger than stale_after_s) is someone's
    # build in progress: a second build does not fail it
    with make_project(tmp_path) as project:
        rag = project.service("rag", Collections)
        other = rag.new_version("docs", parent=None, params={}, actor="bo")
        run = project.store.runs.start(RUN_KIND, other.ref, params={"version": other.number})
        result = build_collection(project, "docs", actor="ana", embedder=encoder())
        assert result.version.number == 2 and result.version.status == "ready"
        assert rag.version("docs", 1).status == "building"
        assert project.store.runs.get(run.id).status == "running"


def test_a_version_whose_build_died_before_its_run_started_is_failed(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        rag = project.service("rag", Collections)
        rag.new_version("docs", parent=None, params={}, actor="bo")  # then the process died
        time.sleep(0.3)  # the version is now older than stale_after_s, with no run
        result = build_collection(project, "docs", embedder=encoder(), stale_after_s=0.2)
        assert result.version.number == 2 and result.version.status == "ready"
        assert rag.version("docs", 1).status == "failed"
