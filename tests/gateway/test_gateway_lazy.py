"""A server whose spec names no LLM deployment (a server of models only) builds the LLM
gateway at the first call of its routes, not at start-up: the call is answered as before
(no model of that name, OpenAI-shaped), the model list is empty, and the server stops
cleanly either way."""

from __future__ import annotations

from pathlib import Path

from conveyor.project import init_project
from fresh_app_support import run_fresh_app

LAZY = """
print("live", client.get("/v2/health/live").status_code)
metrics = client.get("/metrics", headers=auth)
print("metrics", metrics.status_code)
print("gateway after start-up", "conveyor_llm_requests" in metrics.text)
listed = client.get("/llm/v1/models", headers=auth)
print("models", listed.status_code, listed.json()["data"])
ask = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
chat = client.post("/llm/v1/chat/completions", headers=auth, json=ask)
print("chat", chat.status_code, chat.json()["error"]["code"])
print("names it", "gpt" in chat.json()["error"]["message"])
metrics = client.get("/metrics", headers=auth).text
print("gateway after a call", "conveyor_llm_requests" in metrics)
"""


def test_a_spec_without_deployments_builds_the_gateway_at_its_first_call(tmp_path: Path) -> None:
    init_project(tmp_path, name="nollm")
    out = run_fresh_app(tmp_path, LAZY, role="admin")
    assert "live 200" in out
    assert "metrics 200" in out and "gateway after start-up False" in out, out
    assert "models 200 []" in out
    assert "chat 404 model_not_found" in out and "names it True" in out, out
    assert "gateway after a call True" in out
    assert "stopped cleanly" in out
