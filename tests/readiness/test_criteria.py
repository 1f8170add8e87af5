"""Each criterion of the readiness report against real stores and a real event log: a
pass, a failure, and an unmeasured case reported as a warning that says why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.checks.persist import get_report
from conveyor.events.schema import Event
from conveyor.governance.keys import ApiKeys
from conveyor.monitoring.feedback import record_feedback
from conveyor.project import Project, init_project
from conveyor.readiness.report import ReadinessReport, readiness_report

NOW = datetime.now(UTC).replace(microsecond=0)


def _open(
    root: Path, tmp_path: Path, backends: dict[str, str] | None = None, **env: str
) -> Project:
    return Project.open(
        root,
        env={
            "CONVEYOR_STORE": f"sqlite:///{tmp_path}/store.db",
            "CONVEYOR_EVENTS": f"sqlite:///{tmp_path}/events.db",
            **(backends or {}),
            "CONVEYOR_READINESS__MODELS": '["fraud"]',
            "CONVEYOR_READINESS__MIN_REQUESTS": "50",
            "CONVEYOR_READINESS__MIN_LABELLED": "20",
            **env,
        },
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    init_project(folder, name="ready")
    return folder


@pytest.fixture
def project(root: Path, tmp_path: Path) -> Iterator[Project]:
    with _open(root, tmp_path) as opened:
        yield opened


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def on_either(request: pytest.FixtureRequest, root: Path, tmp_path: Path) -> Iterator[Project]:
    """The project with its store and event log on SQLite, or both on PostgreSQL."""
    if request.param == "sqlite":
        with _open(root, tmp_path) as opened:
            yield opened
        return
    from conveyor.testing.services import postgres_schema

    with postgres_schema() as url:
        backends = {"CONVEYOR_STORE": url, "CONVEYOR_EVENTS": url}
        with _open(root, tmp_path, backends) as opened:
            yield opened


def _traffic(
    n: int, *, latency_ms: float = 5.0, failures: int = 0, start: datetime | None = None
) -> list[Event]:
    """``n`` answered one-row predictions of ``fraud`` a second apart (probabilities of a
    class-1 score rising with i), then ``failures`` 503s."""
    start = start or NOW - timedelta(minutes=30)
    events = []
    for i in range(n):
        p = (i % 10) / 10 + 0.05
        events.append(
            Event(
                "prediction",
                subject="fraud",
                subject_version="1",
                request_id=f"r{i}",
                time=start + timedelta(seconds=i),
                payload={
                    "version_id": "fraud-v1",
                    "arm": "direct",
                    "flag": None,
                    "latency_ms": latency_ms + (i % 7) * 0.1,
                    "cached": False,
                    "rows": 1,
                    "output": [[1 - p, p]],
                    "input": [{"amount": float(i)}],
                },
            )
        )
    for i in range(failures):
        events.append(
            Event(
                "prediction.failed",
                subject="fraud",
                subject_version="1",
                request_id=f"f{i}",
                time=start + timedelta(seconds=i, milliseconds=500),
                payload={
                    "status": 503,
                    "code": "overloaded",
                    "version_id": "fraud-v1",
                    "arm": "direct",
                    "latency_ms": 1.0,
                },
            )
        )
    return events


def _write(project: Project, events: list[Event]) -> None:
    project.events.append_many(events)
    project.events.flush()


def _checks(made: ReadinessReport) -> dict[str, Any]:
    return {item.check.name: item for item in made.items}


def test_live_latency_throughput_and_availability(project: Project) -> None:
    _write(project, _traffic(200, latency_ms=5.0, failures=0))
    checks = _checks(readiness_report(project, save=False))
    latency = checks["latency.fraud"].check
    assert latency.passed and latency.threshold == 50 and 5 <= latency.observed <= 6
    assert "200 answered requests" in latency.detail
    availability = checks["availability.fraud"].check
    assert availability.passed and availability.observed == 1.0
    # 1 request a second is far below throughput_rps 500: a warning, not a failure.
    throughput = checks["throughput.fraud"].check
    assert throughput.status == "warn" and throughput.observed == pytest.approx(1.0, abs=0.05)
    assert "Fix:" in throughput.detail


def test_slow_and_failing_traffic_fails(on_either: Project) -> None:
    project = on_either
    _write(project, _traffic(200, latency_ms=80.0, failures=20))
    made = readiness_report(project, save=False)
    checks = _checks(made)
    latency = checks["latency.fraud"]
    assert latency.check.status == "fail" and latency.check.observed > 50
    assert latency.fix and latency.fix in latency.check.detail
    availability = checks["availability.fraud"].check
    assert availability.status == "fail"
    assert availability.observed == pytest.approx(1 - 20 / 220, abs=1e-6)
    assert made.report.verdict == "failed"


def test_too_little_traffic_or_no_target_is_unmeasured(root: Path, tmp_path: Path) -> None:
    spec = root / "conveyor.yaml"
    spec.write_text(spec.read_text().replace("latency_p95_ms: 50", ""))
    with _open(root, tmp_path) as project:
        _write(project, _traffic(10))
        checks = _checks(readiness_report(project, save=False))
    assert checks["latency.fraud"].check.status == "warn"
    assert "slos.latency_p95_ms is not set" in checks["latency.fraud"].check.detail
    availability = checks["availability.fraud"].check
    assert availability.status == "warn" and "10 requests" in availability.detail
    assert availability.observed is None


def _labels(n: int, *, good: bool) -> list[dict[str, Any]]:
    """Labels that agree with the score (``good``) or contradict it; values a business
    outcome: 2.0 where the model was right."""
    records = []
    for i in range(n):
        p = (i % 10) / 10 + 0.05
        right = int(p > 0.5)
        label = right if good else 1 - right
        records.append({"request_id": f"r{i}", "label": label, "value": 2.0 if good else 0.5})
    return records


@pytest.mark.parametrize("good", [True, False], ids=["meets", "misses"])
def test_quality_and_business_from_feedback(root: Path, tmp_path: Path, good: bool) -> None:
    env = {
        "CONVEYOR_READINESS__BUSINESS": '{"name": "margin", "baseline": 1.0, "target": 1.5}',
        "CONVEYOR_SLOS__QUALITY__METRIC": "accuracy",
        "CONVEYOR_SLOS__QUALITY__FLOOR": "0.9",
    }
    with _open(root, tmp_path, **env) as project:
        _write(project, _traffic(100))
        record_feedback(project, _labels(60, good=good))
        project.events.flush()
        checks = _checks(readiness_report(project, save=False))
    quality, business = checks["quality.fraud"].check, checks["business.fraud"].check
    assert "60 production predictions with feedback" in quality.detail
    assert quality.threshold == ">= 0.9"
    assert business.threshold == ">= 1.5"
    if good:
        assert quality.passed and quality.observed == 1.0
        assert business.passed and business.observed == 2.0
        assert "+1 against the baseline 1" in business.detail
    else:
        assert quality.status == "fail" and quality.observed == 0.0
        assert business.status == "fail" and business.observed == 0.5


def test_without_feedback_quality_and_business_are_warnings(project: Project) -> None:
    _write(project, _traffic(100))
    checks = _checks(readiness_report(project, save=False))
    quality = checks["quality.fraud"].check
    assert quality.status == "warn" and "0 predictions of fraud have feedback" in quality.detail
    assert "hold-out" in quality.detail
    assert checks["business.fraud"].check.status == "warn"
    assert "readiness.business is not set" in checks["business.fraud"].check.detail


def test_security_auth_keys_audit_and_tls(root: Path, tmp_path: Path) -> None:
    with _open(root, tmp_path) as project:
        checks = _checks(readiness_report(project, save=False))
        assert checks["security.auth"].check.passed  # serving.auth defaults to required
        keys = checks["security.keys"].check
        assert keys.status == "fail" and "no active key" in keys.observed
        assert checks["security.audit"].check.status == "fail"
        assert checks["security.tls"].check.passed  # loopback, not required
        store = ApiKeys(project.store, project.events)
        store.create("admin", "admin")  # a default name, and no expiry
        store.create("ci", "deployer", expires_at=NOW + timedelta(days=30))
        checks = _checks(readiness_report(project, save=False))
        keys = checks["security.keys"].check
        assert keys.status == "fail"
        assert "admin keys without expiry: admin" in keys.observed
        assert "keys with a default name: admin" in keys.observed
        assert checks["security.audit"].check.passed  # key.created is audited
        store.revoke("admin")
        store.create("ops", "admin", expires_at=NOW + timedelta(days=7))
        checks = _checks(readiness_report(project, save=False))
        assert checks["security.keys"].check.passed, checks["security.keys"].check
        assert checks["security.keys"].check.observed == "2 active keys"
    env = {"CONVEYOR_SERVING__AUTH": "disabled", "CONVEYOR_READINESS__TLS_REQUIRED": "true"}
    with _open(root, tmp_path, **env) as project:
        checks = _checks(readiness_report(project, save=False))
    assert checks["security.auth"].check.status == "fail"
    tls = checks["security.tls"].check
    assert tls.status == "fail" and tls.observed == "not set"
    assert "serving.ssl_certfile" in checks["security.tls"].fix
    (root / "cert.pem").write_text("x")
    env |= {"CONVEYOR_SERVING__SSL_CERTFILE": "cert.pem", "CONVEYOR_SERVING__SSL_KEYFILE": "k"}
    with _open(root, tmp_path, **env) as project:
        tls = _checks(readiness_report(project, save=False))["security.tls"].check
    assert tls.status == "fail" and tls.observed == "files missing" and "k" in tls.detail


def test_security_sensitive_columns_need_a_key(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.data.crypto import generate_key

    monkeypatch.delenv("CONVEYOR_DATA_KEY", raising=False)
    with _open(root, tmp_path) as project:
        encryption = _checks(readiness_report(project, save=False))["security.encryption"]
    assert encryption.check.status == "warn" and "no data set" in encryption.check.detail
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(
            "datasets:\n  customers:\n    source: {kind: csv, path: c.csv}\n"
            "    sensitive: [email]\n    subject_keys: [customer_id]\n"
        )
    with _open(root, tmp_path) as project:
        encryption = _checks(readiness_report(project, save=False))["security.encryption"]
    assert encryption.check.status == "fail" and encryption.check.observed == "no key configured"
    assert "customers.email" in encryption.check.detail
    monkeypatch.setenv("CONVEYOR_DATA_KEY", generate_key())
    with _open(root, tmp_path) as project:
        encryption = _checks(readiness_report(project, save=False))["security.encryption"]
    assert encryption.check.passed


def test_compliance_deletion_and_retention(root: Path, tmp_path: Path) -> None:
    with _open(root, tmp_path) as project:
        checks = _checks(readiness_report(project, save=False))
        assert checks["compliance.deletion"].check.status == "fail"
        assert "conveyor data forget" in checks["compliance.deletion"].fix
        assert checks["compliance.retention"].check.status == "fail"  # undeclared
        project.data.forget("customer_id", 7, actor="cli:dpo")  # a deletion drill
        checks = _checks(readiness_report(project, save=False))
        assert checks["compliance.deletion"].check.passed
        assert "rows and" in checks["compliance.deletion"].check.detail
    with _open(root, tmp_path, CONVEYOR_READINESS__RETENTION_DAYS="30") as project:
        _write(project, _traffic(5, start=NOW - timedelta(days=31)))
        _write(project, _traffic(5))
        retention = _checks(readiness_report(project, save=False))["compliance.retention"]
        assert retention.check.status == "fail" and retention.check.observed == 5
    with _open(root, tmp_path, CONVEYOR_READINESS__RETENTION_DAYS="60") as project:
        retention = _checks(readiness_report(project, save=False))["compliance.retention"]
        assert retention.check.passed and retention.check.observed == 0


def test_the_report_is_saved_with_an_event(on_either: Project) -> None:
    project = on_either
    made = readiness_report(project, actor="cli:test")
    saved = get_report(project.store, made.report.id)
    assert saved.kind == "readiness" and saved.subject == "project:ready"
    assert [c.name for c in saved.checks] == [i.check.name for i in made.items]
    (event,) = project.events.query(kind="readiness.reported").items
    assert event.actor == "cli:test" and event.payload["report_id"] == made.report.id
    assert event.payload["verdict"] == "failed" and event.payload["load_test"] is False
    assert "compliance.deletion" in event.payload["failed"]
    assert "load_test" in event.payload["warnings"]  # not asked for: unmeasured, not passed
    body = made.to_dict()
    assert {i["status"] for i in body["items"]} <= {"pass", "warn", "fail"}
    assert all(i["fix"] for i in body["items"])


def test_the_load_test_fails_against_a_server_that_does_not_answer(
    root: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "CONVEYOR_READINESS__LOAD_TEST__URL": f"http://127.0.0.1:{port}",
        "CONVEYOR_READINESS__LOAD_TEST__DURATION_S": "0.5",
        "CONVEYOR_READINESS__LOAD_TEST__RATE_RPS": "20",
    }
    with _open(root, tmp_path, **env) as project:
        # No records declared and no sampled prediction: unmeasured, nothing sent.
        missing = _checks(readiness_report(project, load_test=True, save=False))
        assert missing["load_test"].check.status == "warn"
        assert "no request body" in missing["load_test"].check.detail
        _write(project, _traffic(3))  # sampled inputs: the load test sends the newest
        made = readiness_report(project, load_test=True, save=False)
    checks = _checks(made)
    assert made.load_test is not None
    assert made.load_test["sent"] == 10 and made.load_test["statuses"] == {"no answer": 10}
    assert made.load_test["url"] == f"http://127.0.0.1:{port}/v1/models/fraud/predict"
    assert checks["load_test.errors"].check.status == "fail"
    assert checks["load_test.errors"].check.observed == 0.0
    assert checks["load_test.throughput"].check.status == "fail"
    assert checks["load_test.latency_p95"].check.status == "fail"
    assert checks["load_test.latency_p95"].check.observed is None
