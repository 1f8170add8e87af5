"""The second example project (examples/regression) runs as a new user would run it: the
command line in a fresh folder, from a generated CSV through ingest, a refused re-ingest
and typo, an upsert by key, training, its ONNX twin, a served canary whose answers keep
one shape, integral floats for an integer column, and a rollback through the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regression" / "run.py"


def test_the_regression_example_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--project", str(tmp_path / "houses"), "--fresh"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert found["data"] == {"version": "houses@2", "rows": 1500}
    assert found["trained"]["version"] == "house-price@1"
    assert found["trained"]["r2"]["holdout_r2"] > 0.9
    assert found["optimized"]["version"] == "house-price@2"
    assert set(found["serving"]["versions"]) == {"1", "2"}
    assert found["rollback"] >= 3
