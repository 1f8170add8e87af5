"""Promotion from staging (SQLite) to prod (the real PostgreSQL), with gates and approval."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import loans, write_project

from cli_support import conveyor
from conveyor.checks.result import Report
from conveyor.config import load_spec
from conveyor.errors import GateFailedError, InvalidInputError
from conveyor.project import Project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """staging holds risk@1 (gates passed) and risk@2 (failed); prod is a fresh schema."""
    from conveyor.testing.services import postgres_schema

    with postgres_schema() as prod_store:
        root = write_project(tmp_path_factory.mktemp("envs"), prod_store)
        with Project(load_spec(root, env={}, environment="staging")) as staging:
            staging.data.ingest("loans", loans(1200, seed=1))
        good = conveyor("--env", "staging", "train", "risk", "--seed", "1", "-C", str(root))
        assert good.returncode == 0, good.stdout + good.stderr
        bad = conveyor(
            "train", "risk", "--param", "sabotage=true", "--seed", "1", "--env", "staging",
            "-C", str(root),
        )  # fmt: skip
        assert bad.returncode == 3, bad.stdout + bad.stderr
        yield root, prod_store


def _prod(root: Path) -> Project:
    return Project(load_spec(root, env={}, environment="prod"))


def _passed_gates(staging: Project) -> Report:
    """risk@1's gate report in ``staging``: passed (what a promotion out of it needs)."""
    from conveyor.checks.persist import save_report
    from conveyor.checks.result import CheckResult
    from conveyor.registry.promotion import GATE_REPORT_KIND, gate_subject

    report = Report.of(
        gate_subject("risk"), [CheckResult("quality", True)], kind=GATE_REPORT_KIND,
        subject_version="1",
    )  # fmt: skip
    save_report(staging.store, report)
    return report


def test_a_version_whose_gates_failed_there_is_not_promoted(trained: tuple[Path, str]) -> None:
    root, _ = trained
    result = conveyor(
        "promote", "risk@2", "--from", "staging", "--approver", "ana", "-C", str(root)
    )
    assert result.returncode == 1
    assert "risk@2 failed its gates in 'staging'" in result.stderr
    assert "quality" in result.stderr
    from sklearn.dummy import DummyClassifier

    from conveyor.deploy.promotion import promote_version

    with Project(load_spec(root, env={})) as dev:
        dev.registry.register("risk", DummyClassifier().fit([[0.0], [1.0]], [0, 1]))
    with pytest.raises(GateFailedError, match="has no gate report in 'dev'"):
        promote_version(root, "risk@1", from_env="dev", env={})
    with _prod(root) as prod:
        assert prod.registry.search(name="risk").items == []


def test_prod_needs_an_approver_and_the_next_environment(trained: tuple[Path, str]) -> None:
    root, _ = trained
    from conveyor.deploy.promotion import promote_version

    with pytest.raises(InvalidInputError, match="need an approver"):
        promote_version(root, "risk@1", from_env="staging", env={})
    with pytest.raises(InvalidInputError, match=r"not to 'prod': promotion order is dev -> "):
        promote_version(root, "risk@1", from_env="dev", to_env="prod", approver="a", env={})
    with pytest.raises(InvalidInputError, match="'prod' is the last environment"):
        promote_version(root, "risk@1", from_env="prod", env={})
    refused = conveyor("promote", "risk@1", "--from", "qa", "-C", str(root))
    assert refused.returncode == 1 and "dev, staging, prod" in refused.stderr


def test_promotion_copies_the_version_its_gate_report_and_approver(
    trained: tuple[Path, str],
) -> None:
    root, _ = trained
    done = conveyor(
        "promote", "risk@1", "--from", "staging", "--approver", "ana", "--json", "-C", str(root)
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["from"] == {"environment": "staging", "version": 1}
    assert record["to"]["environment"] == "prod" and record["already_promoted"] is False
    with Project(load_spec(root, env={}, environment="staging")) as staging:
        source = staging.registry.get("risk", 1)
        source_report = staging.registry.gate_report(source)
    assert source_report is not None
    with _prod(root) as prod:
        copied = prod.registry.get("risk", record["to"]["version"])
        assert copied.artifact_digest == source.artifact_digest == record["sha256"]
        assert copied.signature == source.signature and copied.metrics == source.metrics
        # the formula a server answers from, copied with its sha256 checked: the same bytes
        assert source.compiled is not None and copied.compiled == source.compiled
        assert copied.tags["conveyor.promoted_from"] == "staging:risk@1"
        assert copied.tags["conveyor.approver"] == "ana"
        assert copied.tags["conveyor.gate_report"] == source_report.id
        assert copied.inputs[-1]["kind"] == "promotion"
        assert copied.inputs[-1]["version_id"] == source.id
        report = prod.registry.gate_report(copied)
        assert report is not None and report.passed
        assert [c.name for c in report.checks] == [c.name for c in source_report.checks]
        # the gated alias admits it there: its gates passed where it came from
        promoted = prod.registry.promote("risk", copied.number, actor="test")
        assert promoted.move is not None
        frame = loans(5, seed=4).to_pandas()[["income", "debt", "age"]]
        assert len(prod.registry.load(copied).predict(frame)) == 5
        events = [e for e in prod.events.query(kind="deploy.promoted")]
        assert [e.payload["approver"] for e in events] == ["ana"]
    again = conveyor(
        "promote", "risk@1", "--from", "staging", "--approver", "bo", "--json", "-C", str(root)
    )
    assert again.returncode == 0 and json.loads(again.stdout)["already_promoted"] is True
    assert json.loads(again.stdout)["to"] == record["to"]


def test_a_tampered_artifact_is_not_promoted(tmp_path: Path, pg_url: str) -> None:
    root = write_project(tmp_path, pg_url, prod_approval=False)
    from sklearn.dummy import DummyClassifier

    from conveyor.deploy.promotion import promote_version

    with Project(load_spec(root, env={}, environment="staging")) as staging:
        version = staging.registry.register("risk", DummyClassifier().fit([[0.0], [1.0]], [0, 1]))
        _passed_gates(staging)
        path = Path(staging.artifacts.root) / staging.artifacts.key(version.artifact_digest)
    path.write_bytes(path.read_bytes() + b"tampered")
    from conveyor.errors import ConveyorError

    with pytest.raises(ConveyorError, match=r"sha256|digest|integrity"):
        promote_version(root, "risk@1", from_env="staging", env={})
    with _prod(root) as prod:
        assert prod.registry.search(name="risk").items == []


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_the_formula_is_copied_with_its_hash_checked(
    tmp_path: Path, pg_url: str, damage: str
) -> None:
    """The copy takes the source's recorded formula as it is, sha256 checked like the
    model's artifact (a server would refuse it as artifact_tampered), not read off the
    model again; one missing from the source's store (derived data) leaves the copy
    without one."""
    root = write_project(tmp_path, pg_url, prod_approval=False)
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from conveyor.deploy.promotion import promote_version
    from conveyor.errors import ConveyorError

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["income", "debt"])
    labels = (frame["income"] > 0).astype("int64")
    with Project(load_spec(root, env={}, environment="staging")) as staging:
        version = staging.registry.register(
            "risk", LogisticRegression().fit(frame, labels), signature_from=frame
        )
        assert version.compiled is not None
        _passed_gates(staging)
        path = Path(staging.artifacts.root) / staging.artifacts.key(version.compiled["digest"])
    if damage == "missing":
        path.unlink()
        promote_version(root, "risk@1", from_env="staging", env={})
        with _prod(root) as prod:
            copied = prod.registry.get("risk", 1)
            assert copied.artifact_digest == version.artifact_digest
            assert copied.compiled is None
        return
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ConveyorError, match=r"sha256|digest|integrity"):
        promote_version(root, "risk@1", from_env="staging", env={})
    with _prod(root) as prod:
        assert prod.registry.search(name="risk").items == []


def test_a_viewer_key_cannot_promote(trained: tuple[Path, str]) -> None:
    root, _ = trained
    with _prod(root) as prod:
        from conveyor.governance.keys import ApiKeys

        keys = ApiKeys(prod.store, prod.events)
        viewer, _ = keys.create("watcher", role="viewer")
        deployer, _ = keys.create("shipper", role="deployer")
    refused = conveyor(
        "promote", "risk@1", "--from", "staging", "--approver", "ana", "-C", str(root),
        env={"CONVEYOR_API_KEY": viewer},
    )  # fmt: skip
    assert refused.returncode == 1
    assert "deploy.promote" in refused.stderr and "deployer" in refused.stderr
    allowed = conveyor(
        "promote", "risk@1", "--from", "staging", "--approver", "ana", "-C", str(root),
        env={"CONVEYOR_API_KEY": deployer},
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


def test_a_promotion_cut_short_after_the_copy_is_finished_by_the_next_one(
    tmp_path: Path, pg_url: str
) -> None:
    """A promotion killed between the copy and its gate report: run again, it copies the
    report and records the event, so prod's gated aliases admit the version."""
    from sklearn.dummy import DummyClassifier

    from conveyor.deploy.promotion import _copy, promote_version

    root = write_project(tmp_path, pg_url, prod_approval=False)
    with Project(load_spec(root, env={}, environment="staging")) as staging:
        version = staging.registry.register("risk", DummyClassifier().fit([[0.0], [1.0]], [0, 1]))
        report = _passed_gates(staging)
        payload = staging.registry.artifacts.get(version.artifact_digest)
    with _prod(root) as prod:  # the first run's copy, then the kill
        _copy(prod, version, payload, None, "staging:risk@1", report, None, "test")
        assert prod.registry.gate_report("risk@1") is None
    done = promote_version(root, "risk@1", from_env="staging", env={})
    assert done.already and done.target.number == 1
    with _prod(root) as prod:
        copied = prod.registry.gate_report("risk@1")
        assert copied is not None and copied.passed
        assert prod.registry.promote("risk", 1, actor="test").move is not None
        events = prod.events.query(kind="deploy.promoted").items
        assert [e.subject_version for e in events] == ["1"]
