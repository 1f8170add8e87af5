"""Experiment statistics: the simulations at scale, and one report over many events.

    flock /tmp/conveyor-bench.lock nice -n 10 .venv/bin/python benchmarks/experiment_stats.py

1. **Simulations** (in-process, vectorised, the code the reports run): ``--runs``
   (default 10,000) seeded A-A experiments with a look after every 100 units per arm
   (60 looks): the mSPRT's false positive rate against a naive z-test repeated at each
   look, and the whole recommendation rule's; then as many A-B runs with a real 2-point
   lift (10 % -> 12 %) to the planned sample size: the share that ships. Each figure
   comes with its Monte Carlo standard error and the seconds it took.
2. **One report** over ``--events`` (default 200,000) requests split 50/50 between two
   arms of model ``m`` (SQLite store and event log, compacted into the columnar copy
   but for the last ``--tail``), 10 % of them converting (feedback by request id
   through ``record_feedback``), 1 % failed: ``project.experiments.report(save=False)``
   timed ``--rounds`` times (the first includes DuckDB's and SciPy's imports).

Results go to ``results/experiment_stats.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

ALPHA, BASELINE, LIFT, BATCH = 0.05, 0.10, 0.02, 100


def _se(p: float, n: int) -> float:
    return round(math.sqrt(p * (1 - p) / n), 4)


def simulations(runs: int, seed: int = 2026) -> dict[str, Any]:
    import numpy as np

    from conveyor.experiments.analysis import SHIP, MetricLooks, split_alpha, verdicts
    from conveyor.experiments.stats import sample_size_proportions, two_proportion_ztest

    rng = np.random.default_rng(seed)

    def cumulative(rate_b: float, looks: Any) -> MetricLooks:
        step = np.diff(np.r_[0, looks])
        a = rng.binomial(step, BASELINE, (runs, looks.size)).cumsum(axis=1)
        b = rng.binomial(step, rate_b, (runs, looks.size)).cumsum(axis=1)
        n = np.broadcast_to(looks, (runs, looks.size))
        return MetricLooks.proportion("conversion", a, n, b, n, tau=LIFT)

    out: dict[str, Any] = {"runs": runs, "alpha": ALPHA}
    t0 = time.perf_counter()
    peeks = np.arange(1, 61) * BATCH
    aa = cumulative(BASELINE, peeks)
    msprt = float((aa.sequential(ALPHA).p_value[:, -1] < ALPHA).mean())
    naive_p = two_proportion_ztest(
        aa.control.total, aa.control.n, aa.treatment.total, aa.treatment.n
    )
    naive = float((naive_p.p_value < ALPHA).any(axis=1).mean())
    out["aa_peeking"] = {
        "looks": int(peeks.size),
        "msprt_fpr": msprt,
        "msprt_se": _se(msprt, runs),
        "naive_z_fpr": naive,
        "naive_se": _se(naive, runs),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    n = sample_size_proportions(BASELINE, LIFT, alpha=split_alpha(ALPHA)[1], power=0.8)
    looks = np.minimum(np.arange(1, n // BATCH + 2) * BATCH, n)
    t0 = time.perf_counter()
    codes, _, _ = verdicts(cumulative(BASELINE, looks), planned_n=n, alpha=ALPHA)
    decided = float(np.isin(codes[:, -1], [SHIP, -1]).mean())
    out["aa_rule"] = {
        "planned_n": n,
        "significant": decided,
        "ship": float((codes[:, -1] == SHIP).mean()),
        "se": _se(decided, runs),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    t0 = time.perf_counter()
    codes, seq, _ = verdicts(cumulative(BASELINE + LIFT, looks), planned_n=n, alpha=ALPHA)
    power = float((codes[:, -1] == SHIP).mean())
    early = float((np.asarray(seq.p_value)[:, -1] < split_alpha(ALPHA)[0]).mean())
    out["ab_lift"] = {
        "planned_n": n,
        "ship": power,
        "se": _se(power, runs),
        "stopped_early": early,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return out


def report(events: int, tail: int, rounds: int, log: Any = print) -> dict[str, Any]:
    import numpy as np
    import sqlalchemy as sa

    from conveyor.events.schema import Event
    from conveyor.experiments.tables import ExperimentRecord
    from conveyor.monitoring import compact
    from conveyor.monitoring.feedback import record_feedback
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    start = datetime.now(UTC) - timedelta(hours=2)
    with tempfile.TemporaryDirectory(prefix="experiment-bench-") as tmp:
        root = Path(tmp) / "project"
        init_project(root, name="experiment-bench")
        with Project.open(root, env={}) as project:
            import pandas as pd
            from sklearn.linear_model import LinearRegression

            X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
            for _ in range(2):
                project.registry.register(
                    "m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X
                )
            RouteStore(project.store, project.events, project.registry).set(
                "m", RoutePolicy.fixed(1)
            )
            project.experiments.start(
                "bench",
                "m",
                {"control": 1, "treatment": 2},
                primary="conversion",
                baseline=BASELINE,
                mde=LIFT,
                guardrails=["error_rate", "p95_latency"],
                actor="bench",
            )
            with project.store.session() as s:  # the traffic below is in the past hour
                s.execute(sa.update(ExperimentRecord).values(started_at=start))
            log(f"appending {events:,} requests")
            t0 = time.perf_counter()
            rng = np.random.default_rng(5)
            arm = rng.integers(0, 2, events)
            failed = rng.random(events) < 0.01
            converted = (rng.random(events) < BASELINE) & ~failed
            latency = rng.lognormal(np.log(20), 0.4, events).round(3)
            batch: list[Event] = []
            held: list[Event] = []
            for i in range(events):
                label = ("control", "treatment")[arm[i]]
                version = str(arm[i] + 1)
                at = start + timedelta(seconds=3600 * i / events)
                payload: dict[str, Any] = (
                    {
                        "status": 500,
                        "code": "internal",
                        "version_id": f"m-v{version}",
                        "arm": label,
                        "latency_ms": float(latency[i]),
                    }
                    if failed[i]
                    else {
                        "version_id": f"m-v{version}",
                        "arm": label,
                        "flag": None,
                        "latency_ms": float(latency[i]),
                        "cached": False,
                        "rows": 1,
                        "output": [0.5],
                    }
                )
                kind = "prediction.failed" if failed[i] else "prediction"
                event = Event(
                    kind,
                    subject="m",
                    subject_version=version,
                    request_id=f"r{i}",
                    time=at,
                    payload=payload,
                )
                (held if i >= events - tail else batch).append(event)
                if len(batch) >= 50_000:
                    project.events.append_many(batch)
                    batch = []
            project.events.append_many(batch)
            project.events.flush()
            record_feedback(
                project,
                [{"request_id": f"r{i}", "label": 1} for i in np.flatnonzero(converted)],
                source="bench",
            )
            project.events.flush()
            fill_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            done = compact(project)
            compact_s = time.perf_counter() - t0
            project.events.append_many(held)
            project.events.flush()
            log(f"filled in {fill_s:.1f} s, compacted {done.events:,} in {compact_s:.1f} s")
            timings = []
            body: dict[str, Any] = {}
            for _ in range(rounds):
                t0 = time.perf_counter()
                body = project.experiments.report("bench", save=False)
                timings.append(time.perf_counter() - t0)
            log(f"report: {[round(t, 3) for t in timings]} s: {body['recommendation']}")
    warm = timings[1:] or timings
    return {
        "events": events,
        "feedback_records": int(converted.sum()),
        "tail_events": tail,
        "fill_s": round(fill_s, 2),
        "compaction_s": round(compact_s, 2),
        "rounds_s": [round(t, 4) for t in timings],
        "first_s": round(timings[0], 4),
        "warm_median_s": round(statistics.median(warm), 4),
        "recommendation": body["recommendation"],
        "counts": body["srm"]["counts"],
        "srm_p": body["srm"]["p_value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tail", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = {
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "simulations": simulations(args.runs),
        "report": report(args.events, args.tail, args.rounds),
    }
    out = Path(__file__).resolve().parent / "results" / "experiment_stats.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["simulations"], indent=1))


if __name__ == "__main__":
    main()
