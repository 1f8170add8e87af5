"""A house-price regression from a CSV through the command line, as a new user runs it.

    python examples/regression/run.py --project /tmp/houses --fresh

Every step is a `conveyor` command in a fresh folder (see README.md beside this
file); each outcome a user relies on is checked, and the first one that does not
hold stops the run with what was expected and what came back (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from houses import FEATURES, TARGET, generate  # noqa: E402

MODEL = "house-price"

SPEC = f"""
datasets:
  houses:
    description: Sold houses, one row per house (a later batch updates prices).
    source: {{kind: csv, path: data/houses.csv}}
    key: house_id            # not null and unique across the whole version
    mode: upsert             # a batch replaces the rows of the houses it holds
    expectations:
      - {{kind: schema, columns: {{house_id: int64, bedrooms: int64, price: double}}}}
      - {{kind: between, column: price, min: 10000, max: 5000000}}
      - {{kind: between, column: area_m2, min: 10, max: 1000}}
      - {{kind: row_count, min: 100}}
    on_failure: quarantine

models:
  {MODEL}:
    train: houses:fit
    dataset: houses
    features: [{", ".join(FEATURES)}]
    target: {TARGET}
    task: regression
    holdout: {{by: random, fraction: 0.2, seed: 0}}
    params: {{alpha: 1.0}}
    gates:
      - metric_floor: {{}}
      - data_checks: {{}}
    auto_promote: true
"""


class StepFailed(SystemExit):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {message}")


def conveyor(root: Path, *args: str, key: str | None = None, ok: bool | None = True) -> Any:
    """``conveyor ARGS --json`` in ``root``: its JSON. ``ok``: True, it must succeed; False,
    it must be refused (the error's JSON is returned); None, either (a check that failed
    exits 3 and still prints its report)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if key:
        env["CONVEYOR_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args, "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok is True and done.returncode != 0:
        raise StepFailed(" ".join(args), f"exit {done.returncode}: {done.stdout}{done.stderr}")
    if ok is False and done.returncode == 0:
        raise StepFailed(" ".join(args), f"expected a refusal, got: {done.stdout}")
    return json.loads(done.stdout) if done.stdout.strip() else {}


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    # 1. A project for a regression, keys for the people who use it.
    subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "init", str(root), "--template", "regression"],
        check=True,
        capture_output=True,
    )
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC)
    shutil.copy(HERE / "houses.py", root / "houses.py")
    admin = conveyor(root, "keys", "create", "admin", "--role", "admin")["token"]
    app = conveyor(root, "keys", "create", "app", "--role", "predictor", key=admin)["token"]
    say("1", "project with a regression template; an admin and a predictor key")

    # 2. Data: ingest, the same file again, a typo, an update by key.
    (root / "data").mkdir()
    generate(1_500, seed=1).to_csv(root / "data" / "houses.csv", index=False)
    first = conveyor(root, "data", "ingest", "houses", key=admin)
    if (first["rows_accepted"], first["rows_total"]) != (1_500, 1_500):
        raise StepFailed("ingest", f"expected 1,500 rows stored, got {first}")
    again = conveyor(root, "data", "ingest", "houses", key=admin, ok=False)
    if again["error"]["code"] != "batch_already_ingested":
        raise StepFailed("ingest again", f"expected batch_already_ingested, got {again}")
    typo = conveyor(root, "data", "ingest", "house", key=admin, ok=False)
    if "houses" not in typo["error"]["message"]:
        raise StepFailed("ingest house", f"expected a suggestion of 'houses', got {typo}")
    updates = generate(300, seed=2, first_id=1_201)  # 300 ids: 1,201-1,500, all known
    updates.to_csv(root / "data" / "updates.csv", index=False)
    upsert = conveyor(root, "data", "ingest", "houses", "-f", "data/updates.csv", key=admin)
    if upsert["rows_total"] != 1_500 or upsert["rows_replaced"] != 300:
        raise StepFailed("upsert", f"expected 300 replaced and 1,500 in all, got {upsert}")
    found["data"] = {"version": upsert["version"]["ref"], "rows": upsert["rows_total"]}
    say("2", "1,500 houses; the same file refused; 'house' refused (did you mean 'houses'?);")
    say("2", f"300 prices updated by key: {upsert['version']['ref']} holds 1,500 rows")

    # 3. Train: gates, registration, champion.
    trained = conveyor(root, "train", MODEL, key=admin)
    if trained["version"] != f"{MODEL}@1" or not trained["champion"]:
        raise StepFailed("train", f"expected {MODEL}@1 promoted to champion, got {trained}")
    found["trained"] = {"version": trained["version"], "r2": trained["metrics"]}
    say("3", f"trained {trained['version']}: gates {trained['verdict']}, champion")

    # 4. Its ONNX INT8 twin, which must answer in the same shape.
    optimized = conveyor(root, "optimize", f"{MODEL}@1", key=admin, ok=None)
    if optimized.get("version") != f"{MODEL}@2":
        raise StepFailed("optimize", f"expected {MODEL}@2 registered, got {optimized}")
    child = 2
    found["optimized"] = {"version": optimized["version"], "verdict": optimized["verdict"]}
    say("4", f"optimized to {optimized['version']}: report {optimized['verdict']}")

    # 5. A canary of the twin, served, with many users.
    conveyor(root, "deploy", f"{MODEL}@1", key=admin)
    conveyor(root, "deploy", f"{MODEL}@{child}", "--canary", "50", "--sticky-header",
             "x-user", key=admin)  # fmt: skip
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        found["serving"] = _serve_checks(url, app, admin, child)
        say("5", f"canary 50%: answers by version {found['serving']['versions']}, every "
            "predictions[0] a number; bedrooms 3.0 accepted, 3.5 refused")  # fmt: skip
        # 6. Back to the champion through the server.
        back = conveyor(root, "rollback", MODEL, "--url", url, "--reason", "demo", key=admin)
        answered = _predict(url, app, "u1")["version"]
        if answered != 1:
            raise StepFailed("rollback", f"expected version 1 to answer, got {answered}")
        found["rollback"] = back["revision"]
        say("6", f"rolled back through the server: revision {back['revision']}, @1 answers")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return found


def _predict(url: str, key: str, user: str, row: dict[str, Any] | None = None) -> Any:
    body = {"records": [row or {"area_m2": 90.0, "bedrooms": 3, "age_years": 20.0,
                                "distance_km": 5.0}]}  # fmt: skip
    answer = httpx.post(
        f"{url}/v1/models/{MODEL}/predict",
        json=body,
        headers={"authorization": f"Bearer {key}", "x-user": user},
        timeout=30,
    )
    return answer.json() | {"status": answer.status_code}


def _serve_checks(url: str, key: str, admin: str, child: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        try:
            ready = httpx.get(f"{url}/v2/health/ready", timeout=5)
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise StepFailed("serve", "the server was not ready within 120 s")
        time.sleep(0.2)
    versions: dict[int, int] = {}
    for i in range(60):
        answer = _predict(url, key, f"user-{i}")
        if answer["status"] != 200:
            raise StepFailed("predict", f"expected 200, got {answer}")
        first = answer["predictions"][0]
        if not isinstance(first, int | float) or isinstance(first, bool):
            raise StepFailed(
                "response shape",
                f"version {answer['version']} answered predictions[0] = {first!r}, not a number",
            )
        versions[answer["version"]] = versions.get(answer["version"], 0) + 1
    if set(versions) != {1, child}:
        raise StepFailed("canary", f"expected answers from 1 and {child}, got {versions}")
    integral = _predict(url, key, "u1", {"area_m2": 90.0, "bedrooms": 3.0, "age_years": 20.0,
                                         "distance_km": 5.0})  # fmt: skip
    if integral["status"] != 200:
        raise StepFailed("bedrooms 3.0", f"expected 200, got {integral}")
    fraction = _predict(url, key, "u1", {"area_m2": 90.0, "bedrooms": 3.5, "age_years": 20.0,
                                         "distance_km": 5.0})  # fmt: skip
    if fraction["status"] != 422 or fraction.get("field") != "bedrooms":
        raise StepFailed("bedrooms 3.5", f"expected 422 naming bedrooms, got {fraction}")
    return {"versions": dict(sorted(versions.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(".houses"), help="project folder")
    parser.add_argument("--fresh", action="store_true", help="delete the folder first")
    args = parser.parse_args(argv)
    if args.project.exists():
        if not args.fresh:
            parser.error(f"{args.project} exists: pass --fresh to start again")
        shutil.rmtree(args.project)
    found = run(args.project.resolve())
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
