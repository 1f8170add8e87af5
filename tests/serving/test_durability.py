"""``kill -9`` under load, counted: with ``events.durability: acknowledged`` every answered
prediction is in the event log; with ``buffered`` only those answered in the last flush
window before the kill may be missing (and the doctor says so)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving_support import conveyor_serve, linear_project

from conveyor.project import Project
from conveyor.testing.wait import wait_until

ROW = [{"a": 1.0, "b": 2.0}]
_CLIENTS = 8
_LOAD_S = 2.0
#: How much earlier than the kill a lost answer may have been sent, beyond the flush
#: interval: a commit in progress, and a busy shared machine.
_MARGIN_S = 2.0


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    def ready() -> bool:
        assert process.poll() is None, "conveyor serve exited"
        try:
            return httpx.get(f"{url}/v2/models/m/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, message="conveyor serve is ready", timeout=60)


def _answered_then_killed(root: Path, durability: str) -> tuple[dict[str, float], float]:
    """Serve the project at ``root``, drive it with concurrent clients, ``kill -9`` it
    mid-traffic; the answered request ids (with when each answer arrived) and the kill time."""
    process, port = conveyor_serve(
        root, "-C", str(root), env={"CONVEYOR_EVENTS__DURABILITY": durability}
    )
    url = f"http://127.0.0.1:{port}"
    answered: dict[str, float] = {}
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            i = 0
            while not stop.is_set():
                rid = f"c{n}-{i}"
                i += 1
                try:
                    got = http.post("/v1/models/m/predict", json={"records": ROW, "id": rid})
                except httpx.TransportError:
                    return  # the server is gone
                if got.status_code == 200:
                    answered[rid] = time.monotonic()

    try:
        _wait_ready(process, url)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(_CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(_LOAD_S)  # traffic flows: the kill must land mid-stream
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        process.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    return answered, killed_at


def _persisted(root: Path) -> set[str]:
    with Project.open(root, env={}) as project:
        project.events.load_spilled(timeout=30)  # what the dead server spilled counts too
        return {
            e.request_id
            for e in project.events.iter(kind="prediction", subject="m")
            if e.request_id is not None
        }


@pytest.mark.parametrize("durability", ["acknowledged", "buffered"])
def test_kill_9_under_load_loses_no_acknowledged_prediction(
    tmp_path: Path, durability: str
) -> None:
    linear_project(tmp_path, name="durable", serving="{auth: disabled}").close()
    answered, killed_at = _answered_then_killed(tmp_path, durability)
    assert len(answered) > 50, f"too little traffic before the kill: {len(answered)}"
    persisted = _persisted(tmp_path)
    lost = sorted(set(answered) - persisted)
    if durability == "acknowledged":
        assert lost == [], f"{len(lost)} of {len(answered)} answered predictions lost: {lost[:5]}"
    else:
        with Project.open(tmp_path, env={}) as project:
            window = project.spec.events.flush_interval_s
        late = killed_at - window - _MARGIN_S
        early = [rid for rid in lost if answered[rid] < late]
        assert early == [], (
            f"{len(early)} predictions answered more than the flush window before the kill "
            f"were lost: {early[:5]}"
        )


def test_the_doctor_states_the_loss_window(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app

    linear_project(tmp_path, name="window").close()
    out = CliRunner().invoke(app, ["doctor", "--json", "-C", str(tmp_path)]).output
    assert "durability buffered" in out and "~50 ms" in out, out
    env = {"CONVEYOR_EVENTS__DURABILITY": "acknowledged"}
    out = CliRunner().invoke(app, ["doctor", "--json", "-C", str(tmp_path)], env=env).output
    assert "durability acknowledged" in out and "loses none" in out, out


def test_metrics_show_how_many_answers_each_commit_carried(tmp_path: Path) -> None:
    linear_project(tmp_path, name="groups", serving="{auth: disabled}").close()
    process, port = conveyor_serve(
        tmp_path, "-C", str(tmp_path), env={"CONVEYOR_EVENTS__DURABILITY": "acknowledged"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url)

        def events_metrics() -> dict[str, float]:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            return {
                line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("conveyor_events{")
            }

        before = events_metrics()
        assert before["acknowledged_waits"] == 0 and before["acknowledged_groups"] == 0

        statuses: list[int] = []

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                for _ in range(10):
                    got = http.post("/v1/models/m/predict", json={"records": ROW})
                    statuses.append(got.status_code)

        threads = [threading.Thread(target=client) for _ in range(_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [200] * _CLIENTS * 10
        after = events_metrics()
        # every answer waited for a commit; a group holds one or more of them
        assert after["acknowledged_waits"] == _CLIENTS * 10
        assert 1 <= after["acknowledged_groups"] <= _CLIENTS * 10
        assert after["commits"] >= 1 and after["unwritten"] == 0
    finally:
        process.terminate()
        process.wait(30)
