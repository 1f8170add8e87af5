"""Conveyor's side, set-up only: a project with one model routed, for ``conveyor serve``.

    python conveyor_serving.py ROOT lr|rf     # runs in Conveyor's .venv

Creates the project at ROOT with ``init_project``, appends the ``serving:``
section (auth required, one unlimited predictor key written to bench.key,
cache off; default batching for ``lr``, 64 rows / 2 ms for ``rf``),
registers the model fitted on the shared rows with a pandas signature
f0..f19, and routes all traffic to version 1.
The server itself is started by ``benchmarks/serving.py`` (uvicorn on
``conveyor.cli.serving:worker_app``), like any peer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from serving_workload import FEATURES, fit, training_rows

SERVING = {
    "lr": "serving:\n  auth: required\n  cache: false\n",  # default batching (32 rows, 2 ms)
    "rf": "serving:\n  auth: required\n  cache: false\n"
    "  batching:\n    max_batch_size: 64\n    max_wait_ms: 2\n",
}
#: Where the predictor key's token is written (the benchmark sends it, as production does).
KEY_FILE = "bench.key"


def _create_key(project: object) -> str:
    """An unlimited predictor key, with the ApiKeys of whichever version runs this."""
    try:
        from conveyor.governance.keys import ApiKeys
    except ImportError:  # Conveyor before governance moved out of serving
        from conveyor.serving.auth import ApiKeys  # type: ignore[no-redef]
    keys = ApiKeys(project.store, project.events)  # type: ignore[attr-defined]
    token, _ = keys.create("bench", "predictor")
    return str(token)


def main() -> None:
    import pandas as pd

    import conveyor
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    root, kind = Path(sys.argv[1]), sys.argv[2]
    spec = init_project(root, name=f"bench-serving-{kind}")
    with spec.open("a", encoding="utf-8") as f:
        f.write("\n" + SERVING[kind])
    rows, _ = training_rows()
    frame = pd.DataFrame(rows[:100], columns=FEATURES)
    project = Project.open(root)
    try:
        name = f"bench_{kind}"
        project.registry.register(name, fit(kind, frame=True), signature_from=frame)
        RouteStore(project.store, project.events, project.registry).set(
            name, RoutePolicy.fixed(1, cache=False)
        )
        (root / KEY_FILE).write_text(_create_key(project))
    finally:
        project.close()
    print(json.dumps({"model": name, "conveyor": conveyor.__version__}))


if __name__ == "__main__":
    main()
