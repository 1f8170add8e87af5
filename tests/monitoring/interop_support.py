"""Helpers of the interop tests: promtool, a real Prometheus server, a model that sleeps."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conveyor.registry import PythonModel
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until


class Sleepy(PythonModel):
    """Sums the row after ``seconds``: the injected slowness."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, frame: Any) -> Any:
        time.sleep(self.seconds)  # slow on purpose: the behaviour under test
        return frame.sum(axis=1).to_numpy()


def tool(name: str) -> str:
    """The path of a Prometheus binary (scripts/services.sh prometheus installs them)."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run scripts/services.sh prometheus"
    return found


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Prometheus:
    """A Prometheus server of this test, on a free port."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        return list(answer.json()["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        answer.raise_for_status()
        return list(answer.json()["data"]["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/rules", timeout=5)
        answer.raise_for_status()
        return [rule for group in answer.json()["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[tuple[str, str, str]]:
        """(job, health, last error) of each target."""
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=5)
        active = answer.json()["data"]["activeTargets"]
        return [(t["scrapePool"], t["health"], t["lastError"]) for t in active]

    def targets_up(self) -> bool:
        found = self.targets()
        return bool(found) and all(health == "up" for _, health, _ in found)


@contextmanager
def prometheus(folder: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    """A Prometheus server with ``config`` (a prometheus.yml as a dict), on a free port;
    stopped on exit."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = worker_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={path}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, interval=0.1, message="prometheus to be ready")
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
