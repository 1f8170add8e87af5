"""The quickstart's serving step: serve the champion, canary and shadow, roll back.

The server is the real one (``conveyor serve`` runs the same app under
uvicorn with workers); here it runs in a thread on a free port
(:class:`conveyor.serving.server.ThreadedServer`), so the demo needs no
second terminal. Requests go over HTTP with API keys.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from traffic import post_many

import conveyor
from conveyor.governance.keys import ApiKeys
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.serving.settings import serving_of


def _send(
    client: httpx.Client,
    model: str,
    rows: list[dict[str, Any]],
    key: str,
    users: int,
    *,
    one_at_a_time: bool = False,
) -> tuple[Counter[str], list[float]]:
    """Each row as one user's request; the arms that answered and (one at a time) latencies."""
    path = f"/v1/models/{model}/predict"
    headers = [{"x-api-key": key, "x-user-id": f"user-{i % users}"} for i in range(len(rows))]
    bodies = [{"records": [row]} for row in rows]
    latencies = []
    if one_at_a_time:
        answers = []
        for body, header in zip(bodies, headers, strict=True):
            started = time.perf_counter()
            answers.append(client.post(path, json=body, headers=header))
            latencies.append((time.perf_counter() - started) * 1000)
            answers[-1].raise_for_status()
    else:
        answers = post_many(client, path, bodies, headers)
    arms: Counter[str] = Counter()
    for response in answers:
        body = response.json()
        label = f"v{body['version']}"
        arms[label if body["arm"] == label else f"{body['arm']} ({label})"] += 1
    return arms, latencies


def serve_and_route(
    project: conveyor.Project,
    console: Console,
    model: str,
    rows: list[dict[str, Any]],
    *,
    champion: int,
    canary: int,
    shadow: int,
    step: str,
) -> dict[str, Any]:
    """Serve the champion, put ``canary`` on 10 % with a shadow copy to ``shadow``, roll back."""
    keys = ApiKeys(project.store, project.events)
    predictor, _ = keys.create("quickstart-app", "predictor", actor="quickstart")
    deployer, _ = keys.create("quickstart-oncall", "deployer", actor="quickstart")
    routes = RouteStore(project.store, project.events, project.registry)
    routes.set(
        model,
        RoutePolicy.fixed(champion, sticky_header="x-user-id"),
        actor="ana",
        reason="serve the champion",
    )
    summary: dict[str, Any] = {}
    with (
        ThreadedServer(create_app(project)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        arms, latencies = _send(client, model, rows[:200], predictor, users=200, one_at_a_time=True)
        console.print(
            f"[green]{step}[/] serving {model}@{champion} at {server.url} (ready in "
            f"{server.ready_s:.2f} s): 200 requests, p50 {np.percentile(latencies, 50):.1f} ms, "
            f"p99 {np.percentile(latencies, 99):.1f} ms (client side, one at a time)"
        )
        policy = RoutePolicy.from_dict(
            {
                "mode": "canary",
                "versions": [
                    {"version": champion, "weight": 90, "arm": "stable"},
                    {"version": canary, "weight": 10, "arm": "canary"},
                ],
                "sticky_header": "x-user-id",
                "shadow": [shadow],
            }
        )
        client.put(
            f"/v1/models/{model}/route",
            headers={"x-api-key": deployer},
            json={"policy": policy.to_dict(), "reason": "10% canary, shadow copy"},
        ).raise_for_status()
        time.sleep(serving_of(project.spec).poll_interval_s * 2)  # every worker has it now
        arms, _ = _send(client, model, rows[200:1200], predictor, users=500)
        console.print(
            f"    canary: 10% of users (sticky by x-user-id) to {model}@{canary}, "
            f"a shadow copy of every request to {model}@{shadow}: "
            + ", ".join(f"{arm} {n}" for arm, n in sorted(arms.items()))
        )
        summary["canary_arms"] = dict(arms)
        rolled = client.post(
            f"/v1/models/{model}/rollback",
            headers={"x-api-key": deployer},
            params={"reason": "demo: back to the champion"},
        )
        rolled.raise_for_status()
        arms, _ = _send(client, model, rows[1200:1400], predictor, users=500)
        console.print(
            f"    rollback to revision {rolled.json()['revision']} (the previous policy): "
            + ", ".join(f"{arm} {n}" for arm, n in sorted(arms.items()))
        )
        summary["after_rollback"] = dict(arms)
        ready = client.get("/v2/health/ready").json()
        console.print(
            f"    readiness: {ready['status']} (GET /v2/health/ready is true only while every "
            "routed version is loaded and warm; a bypassed Redis or PostgreSQL shows here too)",
            soft_wrap=True,
        )
        summary["readiness"] = ready["status"]
        trail = client.get(
            "/v1/audit", headers={"x-api-key": deployer}, params={"limit": 4}
        ).json()["items"]
        console.print("    audit trail (GET /v1/audit or `conveyor audit`), newest first:")
        for e in trail:
            console.print(f"      {e['kind']} {e['subject']} by {e['actor']}", soft_wrap=True)
        summary["audit"] = [e["kind"] for e in trail]
        metrics = client.get("/metrics", headers={"x-api-key": deployer}).text
    project.events.flush()
    shadows = project.events.query(kind="prediction.shadow", subject=model, limit=2000).items
    agree = sum(1 for e in shadows if e.payload["agree"])
    console.print(
        f"    shadow {model}@{shadow}: {len(shadows)} copies logged beside the answers, "
        f"{agree / max(1, len(shadows)):.1%} agree with what callers got; "
        f"/metrics has {sum(1 for line in metrics.splitlines() if line.startswith('conveyor_'))} "
        "series"
    )
    summary["shadow_copies"] = len(shadows)
    summary["shadow_agreement"] = agree / max(1, len(shadows))
    return summary
