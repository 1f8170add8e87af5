"""A stored route reaches every server at once on PostgreSQL: two servers on one store,
polling once an hour, follow a change made through either, because the change is pushed
(NOTIFY on the model server's route channel, which each gateway listens on)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from gateway_api_support import gateway_spec, served_gateway

from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until


def _spec(fake_url: str) -> dict[str, Any]:
    return {**gateway_spec(fake_url), "routes_poll_s": 3600}  # no poll within the test


def _answered_by(base: str, key: str) -> str:
    with openai.OpenAI(base_url=base, api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
    deployment: str = raw.headers["x-conveyor-deployment"]
    return deployment


def test_a_change_through_one_server_reaches_both_without_polling(
    tmp_path: Any, pg_url: str
) -> None:
    env = {"CONVEYOR_STORE": pg_url}
    with served_gateway(tmp_path, _spec, env=env) as one:
        other_project = Project.open(tmp_path, env=env)
        other = ThreadedServer(create_app(other_project))
        other.start()
        try:
            bases = [one["base"], other.url + "/llm/v1"]
            assert [_answered_by(base, one["key"]) for base in bases] == ["a", "a"]
            admin = {"authorization": f"Bearer {one['admin']}"}
            for url, to in ((one["url"], ["b", "a"]), (other.url, ["a", "b"])):
                done = httpx.put(
                    url + "/v1/llm/routes/fast", json={"deployments": to}, headers=admin
                )
                assert done.status_code == 200, done.text
                for base in bases:
                    wait_until(
                        lambda base=base, to=to: _answered_by(base, one["key"]) == to[0],
                        message=f"{base} follows fast -> {to[0]}",
                        timeout=10,
                    )
            assert httpx.delete(one["url"] + "/v1/llm/routes/fast", headers=admin).is_success
            for base in bases:
                wait_until(
                    lambda base=base: _answered_by(base, one["key"]) == "a",
                    message=f"{base} back to the spec's route",
                    timeout=10,
                )
        finally:
            other.stop()
            other_project.close()
