"""The quickstart's progressive-delivery step: rollouts that judge themselves, an A-A
experiment that says "no difference", the readiness report.

All on the real server, the real event log and the rollout controller's real analysis
(steps of two seconds here; minutes in production):

1. a "hotfix" of the champion that crashes on foreign cards. It never went through
   training, so it has no gate report: starting its rollout is refused, then forced
   with a recorded reason. Its first step (10 % of traffic) fails on its error rate
   and the controller rolls the route back to the champion by itself;
2. the candidate the drift alert retrained in step 10 (its gates passed) is rolled out
   10 % -> 50 % -> 100 %, judged at every step, and promoted to champion at the end;
3. an A-A experiment (both arms on the new champion, users sticky by ``x-user-id``,
   conversions posted as feedback) says what it should: no difference, keep running,
   no sample ratio mismatch;
4. the production readiness report holds the project against its spec's targets.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pandas as pd
from monitor_demo import HOOK_ENV, _Receiver
from rich.console import Console
from traffic import post_many

import conveyor
from conveyor.errors import ConveyorError
from conveyor.governance.keys import ApiKeys
from conveyor.registry import PythonModel
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.training.flow import train_candidate

#: Appended to conveyor.yaml by the quickstart.
DELIVERY_SPEC = """
# Step 12, progressive delivery: each rollout step is a 2-second window here (10m in
# production) and needs 150 canary requests before it is judged (enough to tell an
# 8% error rate from the SLO's 0.1% every time). Latency limits are left wide (in
# production: the SLO and +10% against stable): the demo's server shares one
# process and two cores with the traffic it judges, and a version's first seconds
# there are milliseconds slower than its twin's. A step short of its 150 requests is
# extended up to 30 times (6 in production): a slow or busy machine sends fewer
# requests a window, which is a reason to wait, not to roll back.
rollouts:
  defaults:
    interval: 2s
    alias: champion
    max_extensions: 30
    analysis: {min_requests: 150, max_p95_ms: 10000, max_latency_increase: 50.0}
"""


#: The good challenger of step 12: a bigger network, trained longer.
BIGGER: dict[str, Any] = {"hidden_layers": [128, 64], "epochs": 20}


class ForeignCardHotfix(PythonModel):
    """The champion behind a "hotfix" with a bug: any foreign card crashes it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, frame: Any) -> Any:
        if (frame["is_foreign"] > 0).any():
            raise ValueError("no exchange rate for a foreign card")
        return self.inner.predict(frame)


def _drive(
    project: conveyor.Project,
    client: httpx.Client,
    model: str,
    records: list[dict[str, Any]],
    rollout: str,
    key: dict[str, str],
) -> Any:
    """Traffic in rounds of 100 requests, one controller tick after each, until it ends."""
    deadline = time.monotonic() + 240
    position = 0
    while time.monotonic() < deadline:
        bodies = [{"records": [records[(position + i) % len(records)]]} for i in range(100)]
        position += len(bodies)
        # error answers are what the bad rollout is judged on: not raised here
        post_many(client, f"/v1/models/{model}/predict", bodies, key, check=False)
        project.events.flush()
        project.rollouts.tick("quickstart")
        found = project.rollouts.get(rollout)
        if not found.active:
            return found, position
    raise RuntimeError(f"rollout {rollout} did not end within 240 s")


def run_delivery(
    project: conveyor.Project,
    console: Console,
    raw: pd.DataFrame,
    features: list[str],
    *,
    model: str,
    step: str,
) -> dict[str, Any]:
    """Steps 1-4 of the module; returns what the quickstart's summary and tests read."""
    from model import add_features

    registry = project.registry
    champion = registry.get(model, "champion")
    keys = ApiKeys(project.store, project.events)
    predictor = {"x-api-key": keys.create("quickstart-delivery", "predictor")[0]}
    rows = add_features(raw).sample(1200, random_state=11)[features]
    records = rows.astype({"merchant_category": str}).to_dict("records")
    summary: dict[str, Any] = {}

    # 1. The buggy hotfix: refused without gates, forced, rolled back at its first step.
    hotfix = registry.register(
        model,
        ForeignCardHotfix(registry.load(champion).model),
        # its output signature comes from predicting these rows: domestic ones
        signature_from=rows[rows["is_foreign"] == 0].astype({"merchant_category": str}),
        description="hotfix: exchange rates (never trained or gated)",
    )
    try:
        project.rollouts.start(model, hotfix.number, actor="bo", steps="10,50,100")
    except ConveyorError as refused:
        console.print(f"[green]{step}[/] rollout of {hotfix.ref} [red]refused[/]: {refused}")
        summary["refused"] = refused.code
    bad = project.rollouts.start(
        model,
        hotfix.number,
        actor="bo",
        steps="10,50,100",
        force=True,
        reason="urgent exchange-rate hotfix; offline gates skipped",
    )
    # The on-call channel (the monitoring step's receiver) hears of the rollback; the
    # hotfix's crashes are the server log's business, not the demo's screen.
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    os.environ[HOOK_ENV] = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    before = len(_Receiver.received)
    server_log = logging.getLogger("conveyor.web")
    level = server_log.level
    server_log.setLevel(logging.CRITICAL)
    try:
        summary.update(
            _deliver(project, console, model, records, predictor, hotfix, bad, champion, before)
        )
    finally:
        server_log.setLevel(level)
        hook.shutdown()
        os.environ.pop(HOOK_ENV, None)
    return summary


def _deliver(
    project: conveyor.Project,
    console: Console,
    model: str,
    records: list[dict[str, Any]],
    predictor: dict[str, str],
    hotfix: Any,
    bad: Any,
    champion: Any,
    before: int,
) -> dict[str, Any]:
    registry = project.registry
    summary: dict[str, Any] = {}
    with (
        ThreadedServer(create_app(project)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        ended, sent = _drive(project, client, model, records, bad.id, predictor)
        project.events.flush()
        console.print(
            f"    forced (reason recorded); after {sent} requests the controller "
            f"[red]{ended.status.replace('_', ' ')}[/] at step {ended.step_index + 1} "
            f"({ended.step.label()} of traffic): {ended.reason}; the on-call webhook got "
            f"{len(_Receiver.received) - before} alert(s)",
            soft_wrap=True,
        )
        summary["bad"] = {
            "status": ended.status,
            "step": ended.step_index,
            "reason": ended.reason,
            "alerts": len(_Receiver.received) - before,
        }

        # 2. A bigger challenger: trained and gated as usual, then rolled out step by step
        #    and promoted by the controller instead of by hand.
        good = train_candidate(project, model, params=BIGGER, seed=7, actor="ana")
        if good.report.passed:
            started = project.rollouts.start(
                model, good.version.number, actor="ana", steps="10,50,100"
            )
            ended, sent = _drive(project, client, model, records, started.id, predictor)
            console.print(
                f"    {good.version.ref} (128-64 units, 20 epochs; gates "
                f"{good.report.verdict}): {' -> '.join(s.label() for s in ended.steps)}, "
                f"each step judged against @{ended.stable}; [green]{ended.status}[/] after "
                f"{sent} requests{'' if ended.status == 'promoted' else f' ({ended.reason})'}, "
                "champion is now "
                f"{model}@{registry.get(model, 'champion').number}",
                soft_wrap=True,
            )
            summary["good"] = {"status": ended.status, "version": good.version.number}
        else:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in good.report.failures)
            console.print(
                f"    {good.version.ref} (128-64 units, 20 epochs) failed its gates, so it "
                f"was not rolled out: {failed}",
                soft_wrap=True,
            )

        # 3. An A-A experiment: both arms on the champion; conversion independent of arm.
        now = registry.get(model, "champion").number
        experiments = project.experiments
        experiments.start(
            "quickstart-aa",
            model,
            {"control": now, "treatment": now},
            primary="conversion",
            baseline=0.10,
            mde=0.02,
            guardrails=["error_rate"],
            sticky_header="x-user-id",
            actor="ana",
        )
        rng = np.random.default_rng(5)
        deadline = time.monotonic() + 30
        answer: dict[str, Any] = {}
        while answer.get("arm") not in ("control", "treatment"):
            if time.monotonic() > deadline:
                raise RuntimeError("the server never applied the experiment's route")
            answer = client.post(
                f"/v1/models/{model}/predict",
                json={"records": [records[0]]},
                headers={**predictor, "x-user-id": "warm-up"},
            ).json()
            time.sleep(0.05)
        answers = post_many(
            client,
            f"/v1/models/{model}/predict",
            [{"records": [records[i % len(records)]]} for i in range(800)],
            [{**predictor, "x-user-id": f"user-{i % 400}"} for i in range(800)],
        )
        feedback = [
            {"request_id": a.json()["request_id"], "label": int(rng.random() < 0.1)}
            for a in answers
        ]
        client.post("/v1/feedback", json=feedback, headers=predictor).raise_for_status()
        summary["dashboard"] = _dashboard(project, console, server.url)
    project.events.flush()
    verdict = experiments.report("quickstart-aa")
    primary = verdict["primary"]
    low, high = primary["sequential"]["ci"]
    console.print(
        f"    A-A experiment quickstart-aa: {primary['control']['n']} vs "
        f"{primary['treatment']['n']} users' requests, conversion difference in "
        f"[{low:+.3f}, {high:+.3f}] (always valid: "
        f"{'no difference' if low <= 0 <= high else 'a difference'}), sample ratio "
        f"{'[red]mismatch[/]' if verdict['srm']['mismatch'] else 'ok'}: "
        f"[bold]{verdict['recommendation']}[/] ({verdict['reason']})",
        soft_wrap=True,
    )
    experiments.stop("quickstart-aa", actor="ana", reason="A-A check done")
    summary["experiment"] = {
        "recommendation": verdict["recommendation"],
        "ci": [low, high],
        "srm": verdict["srm"]["mismatch"],
    }

    # 4. The readiness report: the project against the targets its spec writes down.
    from conveyor.readiness.report import readiness_report

    readiness = readiness_report(project, actor="quickstart")
    checks = readiness.report.checks
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("pass", "warn", "fail")}
    console.print(
        f"    readiness: {counts['pass']} checks pass, {counts['warn']} warn, "
        f"{counts['fail']} fail (`conveyor readiness` lists each with how it was measured)",
        soft_wrap=True,
    )
    summary["readiness"] = counts
    return summary


def _dashboard(project: conveyor.Project, console: Console, url: str) -> str | None:
    """The dashboard's URL, and a screenshot of the rollouts page when Playwright and a
    Chromium are installed (``make test`` installs both; ``make demo`` only says how)."""
    shot = project.root / "dashboard-rollouts.png"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        console.print(
            f"    dashboard: at /ui of every server (this step's was {url}/ui; after the "
            "demo, `conveyor serve -C .demo` and a viewer key); a screenshot here needs "
            "`pip install playwright` and Debian's chromium",
            soft_wrap=True,
        )
        return None
    viewer = ApiKeys(project.store, project.events).create("quickstart-dashboard", "viewer")[0]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/ui/login?next=/ui/rollouts")
            page.fill("#key", viewer)
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/rollouts**")
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    except Exception as exc:  # no browser here: the URL is still worth printing
        console.print(f"    dashboard: {url}/ui (no screenshot: {type(exc).__name__})")
        return None
    console.print(
        f"    dashboard: {url}/ui (while a server runs; `conveyor serve` serves it too), "
        f"the rollouts page saved as {shot}",
        soft_wrap=True,
    )
    return str(shot)
