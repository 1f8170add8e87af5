"""Seeded simulations of rollout steps: per-request outcomes of both arms drawn with numpy,
judged by the same :func:`conveyor.rollouts.analysis.analyze` the controller calls."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conveyor.rollouts.analysis import ArmSample, analyze
from conveyor.rollouts.settings import RolloutDefaults, parse_steps

RATE = 20.0  # requests per second
INTERVAL_S = 600.0  # 10 min steps
STABLE_ERRORS = 0.001
MEDIAN_MS = 20.0
SIGMA = 0.5


@dataclass(frozen=True)
class Arm:
    error_rate: float = STABLE_ERRORS
    latency_factor: float = 1.0
    output_shift: float = 0.0


@dataclass(frozen=True)
class Outcome:
    result: str  # "promoted", "rolled_back" or "stalled"
    step: int  # index of the step it ended at
    intervals: int  # intervals spent in that step (1: judged at the first window)
    reason: str


def _draw(rng: np.random.Generator, arm: Arm, n: int) -> ArmSample:
    errors = rng.random(n) < arm.error_rate
    answered = int(n - errors.sum())
    lat = rng.lognormal(np.log(MEDIAN_MS), SIGMA, answered) * arm.latency_factor
    out = rng.beta(2, 5, answered) + arm.output_shift
    return ArmSample(n, int(errors.sum()), lat, out)


def _join(a: ArmSample | None, b: ArmSample) -> ArmSample:
    if a is None:
        return b
    return ArmSample(
        a.requests + b.requests,
        a.errors + b.errors,
        np.concatenate([a.latencies_ms, b.latencies_ms]),
        np.concatenate([a.outputs, b.outputs]),
    )


def simulate(seed: int, candidate: Arm, plan: RolloutDefaults | None = None) -> Outcome:
    """One rollout through every step of ``plan``, judged at the end of each interval over
    the step's traffic so far (too little traffic: one more interval, as the controller)."""
    plan = plan or RolloutDefaults()
    rng = np.random.default_rng(seed)
    stable = Arm()
    steps = [s for s in parse_steps(plan.steps) if s.kind == "percent"]
    for index, step in enumerate(steps):
        canary_sum: ArmSample | None = None
        stable_sum: ArmSample | None = None
        for interval in range(1, plan.max_extensions + 2):
            total = rng.poisson(RATE * INTERVAL_S)
            n_canary = rng.binomial(total, step.percent / 100)
            canary_sum = _join(canary_sum, _draw(rng, candidate, n_canary))
            if step.percent < 100:
                stable_sum = _join(stable_sum, _draw(rng, stable, total - n_canary))
            verdict = analyze(canary_sum, stable_sum, plan.analysis)
            if verdict.outcome == "fail":
                return Outcome("rolled_back", index, interval, verdict.reason)
            if verdict.outcome == "pass":
                break
        else:
            return Outcome("stalled", index, interval, "too little traffic")
    return Outcome("promoted", len(steps) - 1, 1, "")
