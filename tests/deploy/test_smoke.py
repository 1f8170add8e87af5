"""conveyor smoke: golden requests recorded from the hold-out, asked of a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import loans, write_project

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.deploy.smoke import GOLDEN_FILE, GoldenSet, run_smoke
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.project import Project
from conveyor.serving.server import ThreadedServer
from conveyor.testing.ports import worker_port


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """staging: risk@1 trained and routed, its golden requests recorded; a predictor key."""
    root = write_project(tmp_path_factory.mktemp("smoke"), "sqlite:///.conveyor/prod.db")
    with Project(load_spec(root, env={}, environment="staging")) as proj:
        proj.data.ingest("loans", loans(1200, seed=2))
    for args in (
        ("train", "risk", "--seed", "1"),
        ("train", "risk", "--seed", "1", "--param", "sabotage=true"),
        ("deploy", "risk@1"),
        ("smoke", "record", "risk@1", "--rows", "12"),
    ):
        result = conveyor("--env", "staging", *args, "-C", str(root))
        assert result.returncode in (0, 3), result.stdout + result.stderr
    with Project(load_spec(root, env={}, environment="staging")) as proj:
        from conveyor.governance.keys import ApiKeys

        token, _ = ApiKeys(proj.store, proj.events).create("smoker", role="predictor")
    return root, token


@pytest.fixture
def server(staging: tuple[Path, str]) -> Iterator[str]:
    from conveyor.serving.app import create_app

    spec = load_spec(staging[0], env={}, environment="staging")
    with Project(spec) as proj, ThreadedServer(create_app(proj)) as running:
        yield running.url


def test_recorded_golden_requests_come_from_the_hold_out(staging: tuple[Path, str]) -> None:
    root, _ = staging
    golden = GoldenSet.read(root / GOLDEN_FILE)
    entry = golden.models["risk"]
    assert entry["version"] == 1 and entry["environment"] == "staging"
    assert len(entry["records"]) == len(entry["expected"]) == 12
    assert set(entry["records"][0]) == {"income", "debt", "age"}
    assert set(entry["expected"]) <= {0, 1}
    with Project(load_spec(root, env={}, environment="staging")) as proj:
        assert entry["sha256"] == proj.registry.get("risk", 1).artifact_digest


def test_smoke_passes_against_the_environment_and_saves_its_report(
    staging: tuple[Path, str], server: str
) -> None:
    root, token = staging
    result = conveyor(
        "smoke", "--env", "staging", "--url", server, "--json", "-C", str(root),
        env={"CONVEYOR_API_KEY": token},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "smoke" and report["passed"] is True
    names = [c["name"] for c in report["checks"]]
    assert names == ["live", "ready", "metadata:risk", "golden:risk", "latency"]
    golden = next(c for c in report["checks"] if c["name"] == "golden:risk")
    assert golden["observed"] == golden["threshold"] == 12
    latency = next(c for c in report["checks"] if c["name"] == "latency")
    assert latency["threshold"] == 500  # staging's SLO, not the spec's 2000
    assert latency["detail"].startswith("p95 of 100 requests after the golden pass, ms")
    with Project(load_spec(root, env={}, environment="staging")) as proj:
        from conveyor.checks.persist import get_report

        assert get_report(proj.store, report["id"]).passed
        events = proj.events.query(kind="deploy.smoke")
        assert [e.payload["report_id"] for e in events][-1] == report["id"]


def test_smoke_fails_when_the_server_answers_otherwise(
    staging: tuple[Path, str], server: str
) -> None:
    root, token = staging
    golden = GoldenSet.read(root / GOLDEN_FILE)
    entry = golden.models["risk"]
    flipped = dict(entry, expected=[1 - int(v) for v in entry["expected"]])
    spec = load_spec(root, env={}, environment="staging")
    report = run_smoke(spec, server, golden=GoldenSet({"risk": flipped}), api_key=token)
    failed = {c.name: c for c in report.failures}
    assert set(failed) == {"golden:risk"}
    assert (
        failed["golden:risk"].observed == 0
        and "request 0: expected" in failed["golden:risk"].detail
    )
    # an SLO the golden requests cannot meet fails the latency check
    strict = load_spec(root, env={"CONVEYOR_SLOS__LATENCY_P95_MS": "0.001"})
    slow = run_smoke(strict, server, golden=golden, api_key=token)
    assert [c.name for c in slow.failures] == ["latency"]
    # without a key, the server's refusal is the failed check's reason
    refused = run_smoke(spec, server, golden=golden, api_key="")
    assert {c.name for c in refused.failures} == {"metadata:risk", "golden:risk"}
    assert all("answered 401 unauthenticated: no API key" in c.detail for c in refused.failures)


def test_the_latency_pass_asks_the_golden_requests_again(
    staging: tuple[Path, str], server: str
) -> None:
    """After the golden pass (12 requests), ``latency_requests`` more, the rows in turn;
    0 takes the golden pass's own times."""
    root, token = staging
    spec = load_spec(root, env={}, environment="staging")
    golden = GoldenSet.read(root / GOLDEN_FILE)

    def served() -> int:
        with Project(spec) as proj:
            proj.events.flush()
            return len(proj.events.query(kind="prediction", subject="risk", limit=10_000).items)

    before = served()
    report = run_smoke(spec, server, golden=golden, api_key=token, latency_requests=30)
    assert report.passed, report.failures
    latency = report.checks[-1]
    assert latency.name == "latency" and "p95 of 30 requests after the golden pass" in (
        latency.detail
    )
    from conveyor.testing.wait import wait_until

    wait_until(lambda: served() == before + 12 + 30, message="42 predictions recorded")
    own = run_smoke(spec, server, golden=golden, api_key=token, latency_requests=0)
    assert own.checks[-1].detail.startswith("p95 of 12 golden requests, ms")
    wait_until(lambda: served() == before + 12 + 30 + 12, message="12 more predictions")


def test_smoke_of_a_server_that_cannot_be_reached_names_the_url_and_why(
    staging: tuple[Path, str],
) -> None:
    root, token = staging
    url = f"http://127.0.0.1:{worker_port('127.0.0.1')}"
    result = conveyor(
        "smoke", "--env", "staging", "--url", url, "--json", "-C", str(root),
        env={"CONVEYOR_API_KEY": token},
    )  # fmt: skip
    assert result.returncode == 3  # a check failed
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"]] == ["live"]
    assert f"{url}/v2/health/live cannot be reached" in report["checks"][0]["detail"]
    assert "ConnectError" in report["checks"][0]["detail"]


def test_smoke_needs_a_url_and_golden_requests(staging: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = staging
    refused = conveyor("smoke", "--env", "dev", "-C", str(root))
    assert refused.returncode == 1 and "environment 'dev' declares no url" in refused.stderr
    refused = conveyor("smoke", "-C", str(root))
    assert refused.returncode == 1 and "pass --env NAME" in refused.stderr
    spec = load_spec(root, env={}, environment="staging")
    with pytest.raises(NotFoundError, match="no golden requests for other"):
        run_smoke(spec, "http://127.0.0.1:1", golden=GoldenSet(), models=["other"])
    bad = tmp_path / "golden.json"
    bad.write_text('{"models": {"risk": {"records": [{}], "expected": []}}}')
    with pytest.raises(InvalidInputError, match="1 records but 0 expected"):
        GoldenSet.read(bad)
