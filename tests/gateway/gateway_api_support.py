"""The served gateway the API tests share: a project whose gateway routes to a fake
OpenAI-compatible upstream, with keys, on the real server app (uvicorn in a thread)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor.gateway.budgets import SqlBudgets
from conveyor.gateway.ledger_redis import RedisBudgets
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.store.database import MetadataStore
from conveyor.testing import matrix
from conveyor.testing.fake_openai import FakeOpenAI, serve_fake_openai
from conveyor.testing.services import redis_prefix
from conveyor.testing.wait import wait_until

#: Deployment -> the model the fake is asked for (each failure test has its own, so
#: breakers and cooldowns of one test do not reach another).
DEPLOYMENTS = ("a", "limited", "resetting", "flaky", "cut", "garbled", "alone", "refused", "early")


def gateway_spec(fake_url: str) -> dict[str, Any]:
    deployments: dict[str, Any] = {
        name: {"provider": "fake", "model": f"gpt-{name}", "timeout_s": 10} for name in DEPLOYMENTS
    }
    deployments["b"] = {"provider": "fake", "model": "gpt-b", "timeout_s": 10}
    models: dict[str, Any] = {f"via-{name}": [name, "b"] for name in DEPLOYMENTS if name != "alone"}
    models["fast"] = ["a", "b"]
    models["lonely"] = ["alone"]
    models["split"] = {"deployments": ["a", "b"], "weights": {"a": 1, "b": 3}}
    return {
        "providers": {"fake": {"kind": "openai", "base_url": fake_url + "/v1"}},
        "deployments": deployments,
        "models": models,
        "retry": {"attempts": 1, "backoff_s": 0.01},
        "breaker": {"failures": 2, "reset_s": 60},
    }


@contextmanager
def served_gateway(
    root: Path,
    spec_of: Callable[[str], dict[str, Any]] = gateway_spec,
    *,
    predictors: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """A project whose ``gateway:`` is ``spec_of(fake upstream's url)``, served by the real
    app: its url, ``base`` (the OpenAI base_url), the fake, the project, and tokens under
    ``admin``, ``key`` (app, a predictor), ``viewer`` and each of ``predictors``."""
    with serve_fake_openai() as fake:
        init_project(root, name="gw")
        with (root / "conveyor.yaml").open("a") as fh:
            fh.write("\ngateway: " + json.dumps(spec_of(fake.url)) + "\n")
        project = Project.open(root, env=env or {})
        keys = ApiKeys(project.store, project.events)
        admin, _ = keys.create("admin", "admin")
        app_key, _ = keys.create("app", "predictor")
        viewer, _ = keys.create("viewer", "viewer")
        more = {name: keys.create(name, "predictor")[0] for name in predictors}
        running = ThreadedServer(create_app(project))
        running.start()
        try:
            yield {
                "url": running.url,
                "base": running.url + "/llm/v1",
                "fake": fake,
                "project": project,
                "admin": admin,
                "key": app_key,
                "viewer": viewer,
                **more,
            }
        finally:
            running.stop()
            project.close()


def calls(served: dict[str, Any], model: str, count: int = 1) -> list[dict[str, Any]]:
    """The newest ``count`` llm.call payloads for ``model``, oldest first (waits for them)."""
    project: Project = served["project"]

    def found() -> list[dict[str, Any]] | None:
        project.events.flush()
        page = project.events.query(kind="llm.call", subject=model, limit=1000)
        payloads = [e.payload for e in page.items]
        return payloads[-count:] if len(payloads) >= count else None

    return wait_until(found, message=f"{count} llm.call events for {model}", timeout=10)


def asked(fake: FakeOpenAI, model: str) -> int:
    """How many requests for ``model`` reached the fake."""
    return sum(1 for m in fake.models_asked() if m == model)


@contextmanager
def leave_a_stream(served: dict[str, Any], model: str, lines: int = 3) -> Iterator[str]:
    """Start a slow stream of ``model`` (200 words, 20 ms apart), read ``lines`` lines of
    it and go away; yields its request id, the fake still slow until the block ends."""
    import httpx

    fake = served["fake"]
    fake.chunk_delay_s = 0.02
    words = " ".join(f"w{i}" for i in range(200))  # 4 s of stream at that pace
    try:
        with httpx.stream(
            "POST",
            served["base"] + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": words}], "stream": True},
            headers={"authorization": f"Bearer {served['key']}"},
            timeout=20,
        ) as answer:
            request_id = answer.headers["x-request-id"]
            read = answer.iter_lines()
            for _ in range(lines):
                next(read)
        yield request_id
    finally:
        fake.chunk_delay_s = 0.0


#: The ledger contract's parameters: SQL on an SQLite file and a PostgreSQL schema, Redis.
LEDGER_PARAMS = [*matrix.params("store_url"), *matrix.params("kv_url", ["redis"])]


@contextmanager
def ledger_on(
    param: str, tmp_path: Path, *, sql: type = SqlBudgets, redis: type = RedisBudgets, **kw: Any
) -> Iterator[Any]:
    """A budget ledger for one of :data:`LEDGER_PARAMS`: ``sql(store, **kw)`` on the
    store, or ``redis(url, **kw)`` under a fresh prefix (closed after)."""
    if param == "redis":
        with redis_prefix() as url:
            found = redis(url, **kw)
            try:
                yield found
            finally:
                found.close()
        return
    with matrix.place("store", param, tmp_path) as url, MetadataStore.from_url(url) as store:
        yield sql(store, **kw)
