"""Concept drift judged from feedback, across seeds: how often a label flip is caught, how
often a steady stream is called drift.

    nice -n 19 .venv/bin/python benchmarks/concept_drift.py --seeds 20

Per seed, one SQLite project: a calibrated classifier's traffic (``--labels`` labelled
predictions an hour) for two steady hours, then an hour in which 10% of the labels of
half the traffic are flipped (the segment). :func:`conveyor.monitoring.concept_drift`
with a one-hour window and the hour before as reference judges the second hour (no
drift: a false alarm if it says drift) and the third (drift: a miss if it does not).
The test (``tests/monitoring/test_quality.py``) runs three of these seeds. Results go to
``results/concept_drift.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "monitoring"))

RESULTS = Path(__file__).resolve().parent / "results" / "concept_drift.json"


def one(seed: int, labels: int) -> dict[str, Any]:
    from quality_support import calibrated_stream

    from conveyor.monitoring import concept_drift, record_feedback
    from conveyor.project import Project, init_project

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "p"
        init_project(root, name="judged")
        with Project.open(root, env={}) as project:
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
            hours = [
                calibrated_stream(labels, start + timedelta(hours=h), seed=1000 * h + seed, flip=f)
                for h, f in ((0, 0.0), (1, 0.0), (2, 0.1))
            ]
            project.events.append_many([e for events, _ in hours for e in events])
            project.events.flush()
            record_feedback(project, [r for _, records in hours for r in records])

            def judge(h: int) -> Any:
                return concept_drift(
                    project,
                    "fraud",
                    at=start + timedelta(hours=h),
                    window=timedelta(hours=1),
                    metric="accuracy",
                    reference="window",
                )

            calm, flipped = judge(2), judge(3)
    return {
        "seed": seed,
        "steady": {"status": calm.status, "drop": calm.drop, "interval": [calm.low, calm.high]},
        "flipped": {
            "status": flipped.status,
            "drop": flipped.drop,
            "interval": [flipped.low, flipped.high],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--labels", type=int, default=3000, help="Labelled predictions an hour.")
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        runs.append(one(seed, args.labels))
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels_per_hour": args.labels,
        "seeds": args.seeds,
        "detected": sum(r["flipped"]["status"] == "drift" for r in runs),
        "false_alarms": sum(r["steady"]["status"] == "drift" for r in runs),
        "runs": runs,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"flip detected in {result['detected']}/{args.seeds} seeds; "
        f"false alarms {result['false_alarms']}/{args.seeds}"
    )


if __name__ == "__main__":
    main()
