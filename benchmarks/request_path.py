"""The request path's own cost: Conveyor's app driven in-process, today against a commit.

    .venv/bin/python benchmarks/request_path.py --baseline 9fba084   # ~2 minutes
    .venv/bin/python benchmarks/request_path.py --profile            # cProfile of today's
    .venv/bin/python benchmarks/request_path.py --layers             # each layer switched off

A load generator on the same two cores takes CPU from the server, and wrk's
numbers move by 10% from round to round on a shared machine. This benchmark
leaves the network out: each version's app (``create_app`` on a project with
the LogisticRegression deployed, auth off, cache off, routing, metrics and the
event log on) is called through ASGI, one request after another, in its own
process; versions alternate round by round, and the median of each is kept.
Both answer the same row and must give the model's own prediction.

``--layers`` runs today's code with each layer switched off in turn (auth,
events, metrics, tracing, the batcher's thread hand-off; see
``peers/request_path_driver.py``) and all of them off, in the same rounds:
a layer's cost is the time per request with everything on minus the time
with that layer off. Writes ``request-path-layers.json``.

Writes ``benchmarks/results/request-path.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

DRIVER = "request_path_driver.py"


def _project(folder: Path, kind: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "conveyor_serving.py", str(folder), kind],
        cwd=harness.PEER_SCRIPTS,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


LAYERS = ("auth", "events", "metrics", "tracing", "handoff")


def _drive(
    folder: Path, kind: str, n: int, env: dict[str, str], profile: bool, off: str = ""
) -> dict[str, Any]:
    out = subprocess.run(
        [
            *(sys.executable, DRIVER, str(folder), kind, str(n)),
            *(["--profile"] if profile else []),
            *(["--off", off] if off else []),
        ],
        cwd=harness.PEER_SCRIPTS,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if profile:
        print(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="", help="a commit to measure beside today's code")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000, help="per round and version")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of today's")
    parser.add_argument("--output", default="")
    parser.add_argument("--layers", action="store_true", help="switch each layer off in turn")
    args = parser.parse_args(argv)
    import os

    if args.layers:
        layers(args)
        return

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with tempfile.TemporaryDirectory(prefix="conveyor-request-path-") as tmp_name:
        tmp = Path(tmp_name)
        versions: dict[str, dict[str, str]] = {"conveyor": base_env}
        if args.baseline:
            archive = tmp / "baseline.tar"
            repo = harness.ROOT
            subprocess.run(
                ["git", "-C", str(repo), "archive", "-o", str(archive), args.baseline, "src"],
                check=True,
            )
            subprocess.run(["tar", "-xf", str(archive), "-C", str(tmp)], check=True)
            versions["conveyor-before"] = {**base_env, "PYTHONPATH": str(tmp / "src")}
        for name, env in versions.items():
            _project(tmp / name, "lr", env)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
        for index in range(args.rounds):
            order = list(versions) if index % 2 == 0 else list(reversed(versions))
            for name in order:
                measured = _drive(tmp / name, "lr", args.requests, versions[name], False)
                measured["loadavg_1m"] = os.getloadavg()[0]
                rounds[name].append(measured)
                print(
                    f"round {index + 1} {name}: {measured['us_per_request_wall']:.0f} us/request "
                    f"(cpu {measured['us_per_request_cpu']:.0f}), answer {measured['answer']}"
                )
        answers = {json.dumps(r[-1]["answer"]) for r in rounds.values()}
        if len(answers) != 1:
            raise SystemExit(f"the versions answer differently: {answers}")
        summary = {
            name: {
                "us_per_request_wall": statistics.median(r["us_per_request_wall"] for r in got),
                "us_per_request_cpu": statistics.median(r["us_per_request_cpu"] for r in got),
                "rounds": got,
            }
            for name, got in rounds.items()
        }
        if args.profile:
            _drive(tmp / "conveyor", "lr", args.requests, versions["conveyor"], True)
    result = {
        "benchmark": "request-path",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "settings": {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "baseline": args.baseline or None,
            "app": "create_app in-process through ASGI, one request at a time; LogisticRegression, "
            "auth off, cache off, routing + metrics + event log on (SQLite)",
        },
        "results": summary,
    }
    for name, got in summary.items():
        print(f"{name}: median {got['us_per_request_wall']:.0f} us/request")
    print(f"wrote {harness.write_result(args.output or 'request-path', result)}")


def layers(args: argparse.Namespace) -> None:
    """Today's code with each layer off in turn, and all off, in the same rounds."""
    import os

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    variants = {"all on": "", **{f"{x} off": x for x in LAYERS}, "all off": ",".join(LAYERS)}
    with tempfile.TemporaryDirectory(prefix="conveyor-request-path-") as tmp_name:
        folder = Path(tmp_name) / "conveyor"
        _project(folder, "lr", base_env)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for index in range(args.rounds):
            order = list(variants) if index % 2 == 0 else list(reversed(variants))
            for name in order:
                got = _drive(folder, "lr", args.requests, base_env, False, variants[name])
                got["loadavg_1m"] = os.getloadavg()[0]
                rounds[name].append(got)
                print(f"round {index + 1} {name:<12} {got['us_per_request_wall']:6.0f} us/request")
    medians = {
        name: statistics.median(r["us_per_request_wall"] for r in got)
        for name, got in rounds.items()
    }
    on = medians["all on"]
    costs = {layer: round(on - medians[f"{layer} off"], 1) for layer in LAYERS}
    costs["everything but the model and the HTTP app"] = round(on - medians["all off"], 1)
    result = {
        "benchmark": "request-path-layers",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "settings": {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "app": "create_app in-process through ASGI, one request at a time; LogisticRegression, "
            "auth on (a predictor key), cache off, routing + metrics + event log on (SQLite)",
            "method": "a layer's cost = median us/request with all on - with that layer off",
        },
        "us_per_request": {k: round(v, 1) for k, v in medians.items()},
        "cost_us": costs,
        "rounds": rounds,
    }
    for layer, cost in costs.items():
        print(f"{layer:<45} {cost:6.1f} us ({100 * cost / on:4.1f}% of {on:.0f} us)")
    print(f"wrote {harness.write_result(args.output or 'request-path-layers', result)}")


if __name__ == "__main__":
    main()
