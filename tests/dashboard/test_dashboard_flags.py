"""The feature-flags page in headless Chromium against the real model server (in a thread)
with real traffic: the flags with their state, targets and rollout, the requests each sent
to its version (read from the prediction events), and the forms that ramp, target, kill
and create flags through the flags service (CSRF token, role of ``flags.manage``); a bad
percentage is refused with the reason and a viewer gets 403, both changing nothing.

The screenshots go to ``tests/artifacts/dashboard/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer

pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
BETA, OTHERS = 30, 45


def _predict(client: httpx.Client, url: str, group: str | None) -> dict[str, Any]:
    a, b = np.random.default_rng().normal(size=2)
    headers = {"x-conveyor-attr-group": group} if group else {}
    reply = client.post(
        f"{url}/v1/models/m/predict", json={"records": [{"a": a, "b": b}]}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    root = tmp_path_factory.mktemp("dashboard-flags")
    init_project(root, name="flags")
    project = Project.open(root, env={})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for factor in (1, 2):
        project.registry.register(
            "m", LinearRegression().fit(X, factor * X.sum(axis=1)), signature_from=X
        )
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    project.flags.create("m", "beta", version=2, match={"group": "beta"}, percent=100, actor="test")
    keys = ApiKeys(project.store, project.events)
    deployer, _ = keys.create("ops", "deployer")
    viewer, _ = keys.create("look", "viewer")
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        with httpx.Client(headers={"x-api-key": deployer}, timeout=30) as client:
            deadline = time.monotonic() + 30
            while _predict(client, server.url, "beta")["arm"] != "flag:beta":
                assert time.monotonic() < deadline, "the server never applied the flag"
                time.sleep(0.1)
            arms = [_predict(client, server.url, "beta")["arm"] for _ in range(BETA - 1)]
            arms += [_predict(client, server.url, None)["arm"] for _ in range(OTHERS)]
        assert arms.count("flag:beta") == BETA - 1
        project.events.flush()
        flagged = project.events.count(kind="prediction")
        yield {
            "project": project,
            "url": server.url,
            "deployer": deployer,
            "viewer": viewer,
            "predictions": flagged,
        }
    finally:
        server.stop()
        project.close()


def _logged_in(browser: Any, site: dict[str, Any], key: str) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{site['url']}/ui/flags")
    assert "/ui/login" in page.url
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/flags")
    return page


def _cells(page: Any, table: str) -> list[list[str]]:
    rows = page.locator(f"#{table} tbody tr")
    return [
        [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def _flag(site: dict[str, Any], name: str = "beta") -> dict[str, Any]:
    headers = {"x-api-key": site["viewer"]}
    shown = httpx.get(f"{site['url']}/v1/flags/m/{name}", headers=headers)
    assert shown.status_code == 200, shown.text
    return shown.json()  # type: ignore[no-any-return]


def test_flags_page_shows_state_rules_rollout_and_traffic_and_changes_them(
    site: dict[str, Any], browser: Any
) -> None:
    page = _logged_in(browser, site, site["deployer"])
    (row,) = _cells(page, "flags")
    model, name, version, state, targets, rollout, via, share = row[:8]
    assert (model, name, version, state, targets, rollout) == (
        "m",
        "beta",
        "v2",
        "on",
        "group=beta",
        "100%",
    )
    total = site["predictions"]
    assert int(via) == BETA + (total - BETA - OTHERS)  # and the warm-up requests it answered
    assert share == f"{int(via) / total:.1%}"
    variants = {(r[1], r[2]): int(r[3]) for r in _cells(page, "flag-traffic")}
    assert variants == {("flag:beta", "v2"): int(via), ("v1", "v1"): total - int(via)}
    page.screenshot(path=str(SHOTS / "flags.png"), full_page=True)

    # ramp to 25 %: through the flags service, one route revision, the key as actor
    before = RouteStore(site["project"].store, None).get("m").revision
    form = page.locator("#flags tr", has_text="beta").locator("form[action$='/ramp']")
    form.locator("input[name=percent]").fill("25")
    form.locator("button").click()
    page.wait_for_selector("#notice")
    assert "25%" in page.inner_text("#notice")
    assert _cells(page, "flags")[0][5] == "25%"
    flag = _flag(site)
    assert flag["percent"] == 25 and flag["state"] == "on"
    assert flag["history"][0]["action"] == "ramp" and flag["history"][0]["actor"] == "key:ops"
    route = RouteStore(site["project"].store, None).get("m")
    assert route.revision == before + 1 and route.policy.flags[0].percent == 25

    # a percentage out of range: refused with the reason, nothing changed
    form = page.locator("#flags tr", has_text="beta").locator("form[action$='/ramp']")
    form.locator("input[name=percent]").evaluate("(e) => e.removeAttribute('max')")
    form.locator("input[name=percent]").fill("150")
    form.locator("button").click()
    page.wait_for_selector("#error")
    assert "percent is between 0 and 100" in page.inner_text("#error")
    assert _flag(site)["revision"] == flag["revision"]

    # target, then the kill switch
    form = page.locator("#flags tr", has_text="beta").locator("form[action$='/target']")
    form.locator("input[name=match]").fill("group=beta,country=fr")
    form.locator("button").click()
    page.wait_for_selector("#notice")
    assert _cells(page, "flags")[0][4] == "country=fr, group=beta"
    page.locator("#flags tr", has_text="beta").locator("button", has_text="Kill").click()
    page.wait_for_selector("#notice")
    assert _cells(page, "flags")[0][3] == "killed"
    assert RouteStore(site["project"].store, None).get("m").policy.flags == []
    page.screenshot(path=str(SHOTS / "flags-killed.png"), full_page=True)

    # the flag's page: every change, newest first
    page.click("a[href='/ui/flags/m/beta']")
    page.wait_for_url("**/ui/flags/m/beta")
    history = _cells(page, "flag-history")
    assert [r[1] for r in history] == ["kill", "target", "ramp", "create"]
    assert history[0][6] == "key:ops"

    # a new flag from the form
    page.goto(f"{site['url']}/ui/flags")
    create = page.locator("#create-flag")
    for field, value in (("model", "m"), ("name", "internal"), ("version", "2")):
        create.locator(f"input[name={field}]").fill(value)
    create.locator("input[name=match]").fill("team=ml")
    create.locator("input[name=percent]").fill("10")
    create.locator("button").click()
    page.wait_for_selector("#notice")
    made = _flag(site, "internal")
    assert made["match"] == {"team": "ml"} and made["percent"] == 10 and made["actor"] == "key:ops"
    page.context.close()


def test_a_viewer_sees_the_flags_and_cannot_change_them(site: dict[str, Any], browser: Any) -> None:
    before = _flag(site)
    page = _logged_in(browser, site, site["viewer"])
    assert [r[1] for r in _cells(page, "flags")][:1] == ["beta"]
    form = page.locator("#flags tr", has_text="beta").locator("form[action$='/ramp']")
    form.locator("input[name=percent]").fill("50")
    form.locator("button").click()
    page.wait_for_selector("#forbidden")
    assert "flags.manage" in page.inner_text("main") or "role" in page.inner_text("main")
    page.context.close()
    assert _flag(site) == before

    # a deployer's cookie without the CSRF token changes nothing either
    cookies = {"conveyor_ui": site["deployer"]}
    url = f"{site['url']}/ui/flags/m/beta/ramp"
    refused = httpx.post(url, data={"percent": "50", "csrf": "x"}, cookies=cookies)
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert _flag(site) == before
