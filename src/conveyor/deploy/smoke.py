"""Smoke tests of a deployed environment: ``conveyor smoke --env staging``.

A golden request set is recorded once, from a model version's hold-out rows and what that
version answers to them (``conveyor smoke record fraud@3``), into ``smoke/golden.json``
(kept in git beside the spec). A smoke test then asks the environment's server
(``environments.NAME.url``, or ``--url``):

- ``live`` and ``ready``: the health endpoints answer 200 (ready: every routed version
  loaded and warmed);
- ``metadata:MODEL``: the model's Open Inference Protocol metadata names the inputs the
  golden rows carry;
- ``golden:MODEL``: every golden request answered, each prediction equal to the recorded one
  (numbers within 1e-6, relative);
- ``latency``: the p95 of a latency pass within the environment's ``slos.latency_p95_ms``
  (plus the network's share, ``--network-ms``), a warning-free check when the SLO is unset.
  The pass asks the golden requests again, round after round, ``--latency-requests`` times
  (100 by default) once the golden pass has warmed the connection and the models: the p95
  of 20 requests is their second slowest, so one scheduler hiccup on a busy host would fail
  it, and the first requests carry the connection's set-up. ``--latency-requests 0`` takes
  the golden pass's own times instead.

The result is a :class:`~conveyor.checks.result.Report` (kind ``smoke``), saved in the
environment's store when it can be reached, and a ``deploy.smoke`` event. A server that
cannot be reached is a failed check naming the URL and the reason, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import httpx

    from conveyor.checks.result import CheckResult, Report
    from conveyor.config import ProjectSpec
    from conveyor.project import Project

__all__ = [
    "GOLDEN_FILE",
    "SMOKE_REPORT_KIND",
    "GoldenSet",
    "record_golden",
    "run_smoke",
    "smoke_url",
]

GOLDEN_FILE = "smoke/golden.json"
SMOKE_REPORT_KIND = "smoke"
API_KEY_ENV = "CONVEYOR_API_KEY"


@dataclass
class GoldenSet:
    """Per model: the version recorded, its input rows and the answers expected."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> GoldenSet:
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidInputError(f"{path}: not JSON: {exc}", field="golden") from None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise InvalidInputError(
                f"{path}: expected {{'models': {{MODEL: {{records, expected}}}}}}", field="golden"
            )
        for name, entry in models.items():
            records, expected = entry.get("records"), entry.get("expected")
            if not isinstance(records, list) or not isinstance(expected, list):
                raise InvalidInputError(
                    f"{path}: models.{name} needs the lists 'records' and 'expected'",
                    field="golden",
                )
            if len(records) != len(expected):
                raise InvalidInputError(
                    f"{path}: models.{name} has {len(records)} records but "
                    f"{len(expected)} expected answers",
                    field="golden",
                )
        return cls(models)

    def write(self, path: Path) -> None:
        from conveyor.deploy.files import write_whole

        write_whole(path, json.dumps({"models": self.models}, indent=2, sort_keys=True) + "\n")


def record_golden(
    project: Project, ref: str, *, rows: int = 20, path: Path | None = None
) -> dict[str, Any]:
    """Record ``rows`` hold-out rows of ``ref``'s model and what ``ref`` answers to them.

    The rows come from the model's training spec (its data set's latest version, prepared
    and split as training does); the answers from the version loaded here.
    """
    import orjson

    from conveyor.training.flow import prepare
    from conveyor.training.settings import model_spec

    if rows < 1:
        raise InvalidInputError("--rows must be at least 1", field="rows")
    version = project.registry.resolve(ref)
    spec = model_spec(project.spec, version.model)
    prepared = prepare(project, spec, actor="smoke")
    frame = prepared.X_holdout.head(rows)
    if frame.empty:
        raise NotFoundError(
            f"the hold-out of {version.model!r} is empty: nothing to record", model=version.model
        )
    if version.signature:
        wanted = [c["name"] for c in version.signature.get("inputs", [])]
        frame = frame[[c for c in wanted if c in frame.columns]]
    # Through JSON and back, as a client sends them: what the server will be asked.
    records = orjson.loads(frame.to_json(orient="records", date_format="iso"))
    output = project.registry.load(version).predict(frame)
    expected = orjson.loads(orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY))
    target = path or project.root / GOLDEN_FILE
    golden = GoldenSet.read(target)
    golden.models[version.model] = {
        "version": version.number,
        "sha256": version.artifact_digest,
        "environment": project.spec.environment,
        "records": records,
        "expected": list(expected),
    }
    golden.write(target)
    return {"model": version.model, "version": version.number, "rows": len(records)}


def smoke_url(spec: ProjectSpec, url: str | None) -> str:
    """The URL to smoke: ``url``, else the loaded environment's ``url``."""
    if url:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"--url {url!r}: expected http:// or https://", field="url")
        return url.rstrip("/")
    if spec.environment is None:
        raise InvalidInputError(
            "no server to smoke: pass --env NAME (an environment with a url) or --url",
            field="url",
        )
    found = spec.environment_spec().url
    if not found:
        raise InvalidInputError(
            f"environment {spec.environment!r} declares no url: set "
            f"environments.{spec.environment}.url or pass --url",
            field="url",
        )
    return found


def run_smoke(
    spec: ProjectSpec,
    url: str,
    *,
    golden: GoldenSet,
    models: Sequence[str] | None = None,
    timeout_s: float = 10.0,
    network_ms: float = 0.0,
    api_key: str | None = None,
    latency_requests: int = 100,
) -> Report:
    """Smoke the server at ``url``: health, metadata, golden requests, latency (see the
    module)."""
    import httpx

    from conveyor.checks.result import CheckResult, Report

    chosen = list(models) if models else sorted(golden.models)
    unknown = [m for m in chosen if m not in golden.models]
    if unknown:
        raise NotFoundError(
            f"no golden requests for {', '.join(unknown)}: record them first "
            f"(conveyor smoke record MODEL@N)",
            models=unknown,
        )
    token = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    headers = {"x-api-key": token} if token else {}
    report = Report(
        subject=f"environment:{spec.environment or url}",
        kind=SMOKE_REPORT_KIND,
        subject_version=url,
    )
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as client:
        live = _get(client, "/v2/health/live")
        report.add(_status_check("live", url, "/v2/health/live", live))
        if isinstance(live, str):  # unreachable: the rest would say the same
            return report
        ready = _get(client, "/v2/health/ready")
        report.add(_ready_check(url, ready))
        for name in chosen:
            entry = golden.models[name]
            report.add(_metadata_check(client, url, name, entry))
            report.add(_golden_check(client, url, name, entry, latencies))
        what = f"{len(latencies)} golden requests"
        if latency_requests > 0 and latencies and report.passed:
            latencies, failed = _latency_pass(client, golden, chosen, latency_requests)
            what = f"{len(latencies)} requests after the golden pass"
            if failed:
                report.add(
                    CheckResult(
                        "latency",
                        False,
                        observed=len(failed),
                        threshold=0,
                        detail=f"{len(failed)} of {latency_requests} requests of the latency "
                        f"pass failed: {failed[0]}",
                    )
                )
                return report
    budget = spec.slos.latency_p95_ms
    if latencies:
        p95 = _percentile(latencies, 95)
        if budget is None:
            report.add(
                CheckResult(
                    "latency",
                    True,
                    observed=round(p95, 2),
                    detail=f"p95 of {what}, ms (no slos.latency_p95_ms to hold)",
                )
            )
        else:
            limit = budget + network_ms
            report.add(
                CheckResult(
                    "latency",
                    p95 <= limit,
                    observed=round(p95, 2),
                    threshold=limit,
                    detail=f"p95 of {what}, ms, against "
                    f"slos.latency_p95_ms {budget} + {network_ms} of network",
                )
            )
    return report


def _latency_pass(
    client: httpx.Client, golden: GoldenSet, models: Sequence[str], requests: int
) -> tuple[list[float], list[str]]:
    """``requests`` golden requests asked again, the models' rows in turn: each one's time
    (ms), and what went wrong with those that failed."""
    asks = [
        (f"/v1/models/{name}/predict", record)
        for name in models
        for record in golden.models[name]["records"]
    ]
    latencies: list[float] = []
    failed: list[str] = []
    for index in range(requests):
        path, record = asks[index % len(asks)]
        answer = _timed_post(client, path, record, latencies)
        if isinstance(answer, str):
            failed.append(f"POST {path}: {answer}")
        elif answer.status_code != 200:
            failed.append(f"POST {path} answered {answer.status_code}{_why(answer)}")
    return latencies, failed


def _timed_post(
    client: httpx.Client, path: str, record: Any, latencies: list[float]
) -> httpx.Response | str:
    """``record`` predicted at ``path``, its time (ms) added to ``latencies``; the answer,
    or why the server could not be reached (as :func:`_get`)."""
    import httpx

    started = time.perf_counter()
    try:
        answer = client.post(path, json={"records": [record]})
    except httpx.HTTPError as exc:
        return _reason(exc)
    latencies.append((time.perf_counter() - started) * 1000)
    return answer


def _get(client: httpx.Client, path: str) -> httpx.Response | str:
    import httpx

    try:
        return client.get(path)
    except httpx.HTTPError as exc:
        return _reason(exc)


def _reason(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return f"{type(exc).__name__}: {text}"


def _status_check(name: str, url: str, path: str, answer: httpx.Response | str) -> CheckResult:
    from conveyor.checks.result import CheckResult

    if isinstance(answer, str):
        return CheckResult(name, False, detail=f"{url}{path} cannot be reached: {answer}")
    detail = f"GET {url}{path}"
    if answer.status_code != 200:
        detail += f" answered {answer.status_code}{_why(answer)}"
    return CheckResult(
        name,
        answer.status_code == 200,
        observed=answer.status_code,
        threshold=200,
        detail=detail,
    )


def _why(answer: httpx.Response) -> str:
    """`` CODE: message`` of an error answer (the server's stable code), or its text."""
    body = _json(answer)
    code = body.get("code") or body.get("error") or ""
    message = body.get("message") or body.get("detail") or answer.text[:200]
    return f" {code}: {message}" if code else f": {message}"


def _ready_check(url: str, answer: httpx.Response | str) -> CheckResult:
    from conveyor.checks.result import CheckResult

    check = _status_check("ready", url, "/v2/health/ready", answer)
    if check.status == "pass" or isinstance(answer, str):
        return check
    body = _json(answer)
    why = body.get("detail") or body.get("degraded") or body.get("error") or answer.text[:200]
    return CheckResult(
        "ready",
        False,
        observed=answer.status_code,
        threshold=200,
        detail=f"GET {url}/v2/health/ready: not ready: {why}",
    )


def _metadata_check(
    client: httpx.Client, url: str, model: str, entry: Mapping[str, Any]
) -> CheckResult:
    from urllib.parse import quote

    from conveyor.checks.result import CheckResult

    path = f"/v2/models/{quote(model, safe='')}"
    answer = _get(client, path)
    name = f"metadata:{model}"
    if isinstance(answer, str) or answer.status_code != 200:
        return _status_check(name, url, path, answer)
    served = {i.get("name") for i in _json(answer).get("inputs") or []}
    wanted = set().union(*(set(r) for r in entry["records"])) if entry["records"] else set()
    missing = sorted(wanted - served)
    if missing:
        return CheckResult(
            name,
            False,
            observed=sorted(served),
            detail=f"the served model lacks the golden rows' inputs {missing}",
        )
    return CheckResult(name, True, observed=len(served), detail=f"GET {url}{path}")


def _golden_check(
    client: httpx.Client,
    url: str,
    model: str,
    entry: Mapping[str, Any],
    latencies: list[float],
) -> CheckResult:
    from conveyor.checks.result import CheckResult

    path = f"/v1/models/{model}/predict"
    wrong: list[str] = []
    for index, (record, expected) in enumerate(
        zip(entry["records"], entry["expected"], strict=True)
    ):
        answer = _timed_post(client, path, record, latencies)
        if isinstance(answer, str):
            return CheckResult(
                f"golden:{model}", False, detail=f"POST {url}{path} cannot be reached: {answer}"
            )
        if answer.status_code != 200:
            return CheckResult(
                f"golden:{model}",
                False,
                observed=answer.status_code,
                threshold=200,
                detail=f"request {index}: POST {url}{path} answered {answer.status_code}"
                f"{_why(answer)}",
            )
        got = (_json(answer).get("predictions") or [None])[0]
        if not _same(got, expected):
            wrong.append(f"request {index}: expected {expected!r}, got {got!r}")
    total = len(entry["records"])
    return CheckResult(
        f"golden:{model}",
        not wrong,
        observed=total - len(wrong),
        threshold=total,
        detail="; ".join(wrong[:3]) or f"{total} answers as recorded from v{entry['version']}",
    )


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        if not isinstance(got, int | float) or not isinstance(expected, int | float):
            return False
        return math.isclose(float(got), float(expected), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(expected, list) and isinstance(got, list):
        return len(got) == len(expected) and all(map(_same, got, expected))
    if isinstance(expected, dict) and isinstance(got, dict):
        return got.keys() == expected.keys() and all(_same(got[k], expected[k]) for k in got)
    return bool(got == expected)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        found = answer.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]
