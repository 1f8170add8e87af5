"""CLI start-up: ``conveyor --help`` and ``conveyor rollback`` against ``mlflow --help``.

    .venv/bin/python benchmarks/cli_start.py [--runs 15]

Each command runs ``--runs`` times in a fresh process, the tools alternating, with the
bytecode compiled (as ``pip install`` leaves it); the table shows the median wall time of
the whole process. ``rollback`` is measured both ways: on the project's store (SQLite, as
on a laptop) and through a running server with ``--url`` (what an operator in an incident
uses: the server holds the store). A rollback then a ``route set`` back keep the route's
history growing the same way in every run. Results: ``results/cli_start.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.table import Table

PEERS = ("mlflow",)
Log = Callable[[str], None]
CONVEYOR = Path(sys.executable).with_name("conveyor")


def _project(root: Path) -> tuple[Any, str]:
    """A project whose model ``m`` has two versions and a route, and an admin key."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="cli-start")
    project = Project.open(root, env={})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for scale in (1.0, 2.0):
        project.registry.register("m", LinearRegression().fit(X, scale * X.sum(axis=1)))
    routes = RouteStore(project.store, project.events, project.registry)
    routes.set("m", RoutePolicy.fixed(1), actor="bench")
    routes.set("m", RoutePolicy.fixed(2), actor="bench")
    token, _ = ApiKeys(project.store, project.events).create("bench", "admin")
    return project, token


def _time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(
    *, quick: bool = False, pythons: dict[str, Path], log: Log = print, runs: int | None = None
) -> dict[str, Any]:
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    runs = runs or (5 if quick else 15)
    harness.compile_bytecode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    mlflow = pythons["mlflow"].with_name("mlflow")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project, token = _project(root)
        server = ThreadedServer(create_app(project))
        server.start()
        keyed = {**env, "CONVEYOR_API_KEY": token}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "conveyor --help": ([str(CONVEYOR), "--help"], env),
            "mlflow --help": ([str(mlflow), "--help"], {**env, **harness.PEER_ENV}),
            "conveyor version": ([str(CONVEYOR), "version"], env),
            "conveyor rollback (store)": ([str(CONVEYOR), "rollback", "m"], keyed),
            "conveyor rollback --url": (
                [str(CONVEYOR), "rollback", "m", "--url", server.url],
                keyed,
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        restore = [str(CONVEYOR), "deploy", "m@2"]
        try:
            for i in range(runs + 1):  # the first round warms the file cache: not kept
                for name, (argv, environment) in commands.items():
                    took = _time(argv, environment, root)
                    if "rollback" in name:
                        _time(restore, keyed, root)
                    if i:
                        times[name].append(took)
                log(f"round {i}/{runs}")
        finally:
            server.stop()
            project.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "machine": harness.machine(),
        "runs": runs,
        "median_s": medians,
        "all_s": times,
        "ratio_help_to_mlflow": medians["conveyor --help"] / medians["mlflow --help"],
    }
    result["path"] = str(harness.write_result("cli_start", result))
    return result


def summary(result: dict[str, Any]) -> Table:
    table = Table(title=f"CLI start, median of {result['runs']} runs (whole process)")
    table.add_column("command")
    table.add_column("median", justify="right")
    for name, value in result["median_s"].items():
        table.add_row(name, f"{value * 1000:.0f} ms")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from rich.console import Console

    pythons = {peer: harness.ensure_venv(peer) for peer in PEERS}
    result = run(pythons=pythons, runs=args.runs)
    Console().print(summary(result))


if __name__ == "__main__":
    main()
