"""Ground truth through the real server: predictions answered over HTTP, their labels sent
back over HTTP and loaded from a file by the CLI, and the quality report equal to the
training gates' metrics computed here on the same labels, on SQLite and PostgreSQL.
Duplicates, unknown request ids, malformed records and roles."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from quality_support import Logistic

from conveyor.checks.metrics import metric
from conveyor.monitoring import compact
from conveyor.monitoring.quality import quality_report
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

#: One window holding the whole test (windows are aligned to the epoch).
WHOLE = timedelta(days=365 * 30)
BINARY = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "calibration_error")


def _serve(
    root: Path, env: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[Project, ThreadedServer]:
    import pandas as pd

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    project = Project.open(root, env=env)
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    project.registry.register("fraud", Logistic(), signature_from=X)
    RouteStore(project.store, project.events, project.registry).set("fraud", RoutePolicy.fixed(1))
    server = ThreadedServer(create_app(project))
    server.start()
    wait_until(
        lambda: (
            httpx.get(
                f"{server.url}/v2/models/fraud/ready", headers=headers, timeout=10
            ).status_code
            == 200
        ),
        message="the route reaches the worker",
    )
    return project, server


@pytest.fixture
def served(tmp_path: Path, backends: dict[str, str]) -> Iterator[tuple[Project, ThreadedServer]]:
    root = tmp_path / "proj"
    init_project(root, name="graded")
    project, server = _serve(root, {**backends, "CONVEYOR_SERVING__AUTH": "disabled"})
    try:
        yield project, server
    finally:
        server.stop()
        project.close()


def _traffic(url: str, n: int, seed: int) -> dict[tuple[str, int], float]:
    """``n`` requests (one in ten with three rows): (request id, row) -> P(y = 1) answered."""
    rng = random.Random(seed)
    answered = {}
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            rows = [
                {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)} for _ in range(3 if i % 10 == 0 else 1)
            ]
            rid = f"q{seed}-{i}"
            response = client.post(
                f"{url}/v1/models/fraud/predict",
                json={"records": rows},
                headers={"x-request-id": rid},
            )
            assert response.status_code == 200, response.text
            for row, (_, p) in enumerate(response.json()["predictions"]):
                answered[(rid, row)] = p
    return answered


def _expected(
    labels: dict[tuple[str, int], int], scores: dict[tuple[str, int], float]
) -> dict[str, float]:
    """The gates' metrics on the labelled rows, computed here."""
    keys = sorted(labels)
    y = np.array([labels[k] for k in keys])
    s = np.array([scores[k] for k in keys])
    out = {}
    for name in BINARY:
        m = metric(name)
        out[name] = m(y, s) if m.needs == "score" else m(y, (s >= 0.5).astype(int))
    return out


def _post(url: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json=body, timeout=30, **kw)


def test_feedback_over_http_and_the_cli_gives_the_gates_metrics(
    served: tuple[Project, ThreadedServer], backends: dict[str, str], tmp_path: Path
) -> None:
    project, server = served
    since = datetime.now(UTC) - timedelta(minutes=1)
    scores = _traffic(server.url, 120, seed=1)
    rng = random.Random(2)
    truth = {k: int(rng.random() < p) for k, p in scores.items()}
    labelled = sorted(k for k in truth if rng.random() < 0.7)  # some stay unlabelled
    over_http, from_file = labelled[::2], labelled[1::2]

    # Over HTTP: a list, then the {"records": [...]} form.
    records = [
        {"request_id": rid, "row": row, "label": truth[(rid, row)]} for rid, row in over_http
    ]
    first = _post(server.url, records[:30])
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 30 and first.json()["by_request_id"] == 30
    assert _post(server.url, {"records": records[30:]}).json()["accepted"] == len(records) - 30
    # Duplicates: a wrong label first, then the right one again; the last one counts.
    twice = over_http[:4]
    wrong = [{"request_id": r, "row": w, "label": 1 - truth[(r, w)]} for r, w in twice]
    right = [{"request_id": r, "row": w, "label": truth[(r, w)], "value": 5.0} for r, w in twice]
    assert _post(server.url, wrong).status_code == 200
    assert _post(server.url, right).status_code == 200
    # Unknown request ids are accepted, and quarantined.
    unknown = [{"request_id": f"nobody-{i}", "label": 1} for i in range(3)]
    assert _post(server.url, unknown).json()["accepted"] == 3

    # Malformed: the whole request is refused with a stable code, nothing is written.
    project.events.flush()
    before = project.events.count(kind="feedback")
    bad = _post(server.url, [{"request_id": "x", "label": 1}, {"request_id": "y"}])
    assert bad.status_code == 422, bad.text
    assert bad.json()["code"] == "invalid_input"
    assert bad.json()["field"] == "records[1].label" and bad.json()["reason"] == "no_label_or_value"
    typo = _post(server.url, {"request_id": "x", "lable": 1})
    assert typo.status_code == 422 and typo.json()["reason"] == "unknown_field"
    not_json = httpx.post(f"{server.url}/v1/feedback", content=b"{nope", timeout=30)
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_input"
    project.events.flush()
    assert project.events.count(kind="feedback") == before

    # The rest from a file, through the installed CLI (another process, the same log).
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "request_id,row,label\n" + "".join(f"{r},{w},{truth[(r, w)]}\n" for r, w in from_file)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")} | backends
    done = subprocess.run(
        [str(Path(sys.executable).with_name("conveyor")), "feedback", "load", str(csv), "--json",
         "-C", str(project.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == len(from_file)

    want = _expected({k: truth[k] for k in labelled}, scores)
    answer = httpx.get(
        f"{server.url}/v1/monitor/quality",
        params={"model": "fraud", "since": since.isoformat(), "window": "10950d"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "binary" and body["metrics"] == list(BINARY)
    (window,) = body["windows"]
    assert window["predictions"] == len(scores) and window["labelled"] == len(labelled)
    assert window["overwritten"] == 2 * len(twice)  # each of them was written three times
    assert window["value_sum"] == 5.0 * len(twice)
    for name in BINARY:
        assert window[name] == pytest.approx(want[name], rel=1e-9), name
    assert body["feedback"]["joined"] == len(labelled)

    # The same from the columnar copy.
    compact(project)
    copied = quality_report(project, "fraud", since=since, window=WHOLE).windows[0]
    assert {k: copied[k] for k in BINARY} == pytest.approx({k: window[k] for k in BINARY})

    quarantine = httpx.get(
        f"{server.url}/v1/feedback/quarantine", params={"since": since.isoformat()}, timeout=60
    ).json()
    assert quarantine["reasons"] == {"unknown_request_id": 3}
    assert sorted(f["request_id"] for f in quarantine["feedback"]) == [
        f"nobody-{i}" for i in range(3)
    ]


def test_feedback_needs_the_predictor_role(tmp_path: Path) -> None:
    from conveyor.governance.keys import ApiKeys

    root = tmp_path / "proj"
    init_project(root, name="guarded")
    with Project.open(root, env={}) as project:
        keys = ApiKeys(project.store, project.events)
        predictor, _ = keys.create("scorer", "predictor")
        viewer, _ = keys.create("watcher", "viewer")
    project, server = _serve(root, {}, headers={"x-api-key": viewer})
    try:
        record = {"request_id": "r1", "label": 1}

        def as_key(token: str | None) -> httpx.Response:
            headers = {} if token is None else {"x-api-key": token}
            return _post(server.url, record, headers=headers)

        assert as_key(predictor).status_code == 200
        too_many = _post(
            server.url,
            [{"request_id": f"r{i}", "label": 1} for i in range(10_001)],
            headers={"x-api-key": predictor},
        )
        assert too_many.status_code == 422 and too_many.json()["field"] == "records"
        empty = _post(server.url, {"records": []}, headers={"x-api-key": predictor})
        assert empty.status_code == 422 and empty.json()["field"] == "records"
        refused = as_key(viewer)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert as_key(None).status_code == 401
        quality = httpx.get(
            f"{server.url}/v1/monitor/quality",
            params={"model": "fraud"},
            headers={"x-api-key": viewer},
            timeout=60,
        )
        assert quality.status_code == 200, quality.text
        no_model = httpx.get(f"{server.url}/v1/monitor/quality", headers={"x-api-key": viewer})
        assert no_model.status_code == 422 and no_model.json()["field"] == "model"
    finally:
        server.stop()
        project.close()
