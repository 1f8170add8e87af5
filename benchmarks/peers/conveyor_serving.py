"""Conveyor's side, set-up only: a project with one model routed, for ``conveyor serve``.

    python conveyor_serving.py ROOT lr|rf     # runs in Conveyor's .venv

Creates the project at ROOT with ``init_project``, appends the ``serving:``
section (auth disabled and no key created, cache off; default batching for
``lr``, 64 rows / 2 ms for ``rf``), registers the model fitted on the shared
rows with a pandas signature f0..f19, and routes all traffic to version 1.
The server itself is started by ``benchmarks/serving.py`` (uvicorn on
``conveyor.cli.serving:worker_app``), like any peer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from serving_workload import FEATURES, fit, training_rows

SERVING = {
    "lr": "serving:\n  auth: disabled\n  cache: false\n",  # default batching (32 rows, 2 ms)
    "rf": "serving:\n  auth: disabled\n  cache: false\n"
    "  batching:\n    max_batch_size: 64\n    max_wait_ms: 2\n",
}


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
    finally:
        project.close()
    print(json.dumps({"model": name, "conveyor": conveyor.__version__}))


if __name__ == "__main__":
    main()
