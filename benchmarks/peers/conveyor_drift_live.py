"""Conveyor's side of the live drift benchmark (runs in Conveyor's virtualenv).

``python conveyor_drift_live.py <project> <since> <until> [again]``: open the project, run one live
drift check of model ``m`` over ``[since, until)`` (its sampled prediction inputs read from
the event log's Parquet copy and tail, against its training data set version), record it
as the scheduled job does, with ``again`` run it a second time in the same process (a
long-lived scheduler's cost), and print the verdict with the checks' phases.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from drift_workload import Phases  # noqa: E402
from workload import emit_result  # noqa: E402


def main() -> None:
    root, since_text, until_text = sys.argv[1:4]
    twice = sys.argv[4:5] == ["again"]
    phases = Phases()
    with phases("import"):
        from datetime import datetime

        from conveyor.monitoring.drift_live import live_drift
        from conveyor.project import Project
    with phases("open"):
        project = Project.open(root, env={})
    with phases("check"):
        found = live_drift(
            project,
            "m",
            since=datetime.fromisoformat(since_text),
            until=datetime.fromisoformat(until_text),
            actor="bench",
        )
    # The same check again in this process: what a long-lived scheduler pays per run
    # (imports, the first connection and the model's library already loaded).
    again = None
    if twice:
        with phases("again"):
            again = live_drift(
                project,
                "m",
                since=datetime.fromisoformat(since_text),
                until=datetime.fromisoformat(until_text),
                actor="bench",
            )
    project.close()
    out = found.to_dict()
    emit_result(
        {
            "tool": "conveyor",
            "detected": out["detected"],
            "drifted": [c for c in out["drifted"] if not c.startswith("prediction:")],
            "prediction_drift": out["prediction_drift"],
            "share": out["share"],
            "rows": out["current"]["rows"],
            "reference_rows": out["reference"]["rows"],
            "cbpe": out["cbpe"],
            "check_seconds": out["seconds"],
            "check_phases": out["phases"],
            "again_seconds": None if again is None else again.seconds,
            "again_phases": None if again is None else again.to_dict()["phases"],
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
        }
    )


if __name__ == "__main__":
    main()
