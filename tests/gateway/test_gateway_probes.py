"""Health probes of open breakers: a deployment whose breaker opened is probed in the
background at its reset time and closed again once it answers, without a user request
as the trial; a failed probe opens it again and the probing goes on; ``none`` leaves the
trial to a request; ``models`` asks the provider's model list when it has one. Through
the router with a provider that fails on command, and through the served gateway with
the fake upstream failing then recovering."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_api_support import served_gateway

from conveyor.gateway.router import CallRecord, Router
from conveyor.gateway.settings import GatewaySpec
from conveyor.gateway.types import Body, Deployment, UpstreamError
from conveyor.testing.fake_openai import serve_fake_openai
from conveyor.testing.wait import wait_until

HELLO: Any = [{"role": "user", "content": "hello"}]


class Sick:
    """A provider that fails (``failure``: a kind of UpstreamError) until told otherwise."""

    name = "sick"

    def __init__(self) -> None:
        self.failure: str | None = "server"
        self.status: int | None = 500
        self.bodies: list[Body] = []
        self.listed = 0

    async def chat(self, body: Body, deployment: Deployment) -> Body:
        self.bodies.append(body)
        if self.failure is not None:
            raise UpstreamError(
                self.failure,  # type: ignore[arg-type]
                "failing on command",
                deployment=deployment.name,
                status=self.status,
            )
        return {"choices": [{"message": {"role": "assistant", "content": "pong"}}]}

    def stream(self, body: Body, deployment: Deployment) -> Any:
        raise NotImplementedError

    async def embeddings(self, body: Body, deployment: Deployment) -> Body:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class Listing(Sick):
    async def models(self, deployment: Deployment) -> Body:
        self.listed += 1
        if self.failure is not None:
            raise UpstreamError("connect", "refused", deployment=deployment.name)
        return {"data": []}


def _router(
    provider: Sick, kind: str = "chat", reset_s: float = 0.05, on_probe: Any = None
) -> Router:
    spec = GatewaySpec.model_validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "deployments": {"d": {"provider": "p", "model": "m"}},
            "models": {"x": ["d"]},
            "breaker": {"failures": 1, "reset_s": reset_s, "max_reset_s": 0.2},
            "probe": {"kind": kind, "timeout_s": 1},
        }
    )
    return Router(spec, {"p": provider}, on_probe=on_probe)


async def _open(router: Router) -> None:
    with pytest.raises(UpstreamError):
        await router.chat({"model": "x", "messages": HELLO}, CallRecord("x"))
    assert router.breaker("d").state == "open"


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


def test_a_probe_closes_the_breaker_of_a_recovered_deployment() -> None:
    async def run() -> None:
        provider = Sick()
        probes: list[tuple[str, str]] = []
        router = _router(provider, on_probe=lambda d, result: probes.append((d, result)))
        await _open(router)
        # Failing probes open it again (for twice as long) and the probing goes on.
        await _until(lambda: len(probes) >= 2, "two probes")
        assert probes[:2] == [("d", "failed"), ("d", "failed")]
        assert router.breaker("d").state == "open"
        provider.failure = None
        await _until(lambda: router.breaker("d").state == "closed", "closed by a probe")
        assert probes[-1] == ("d", "ok")
        user, *probed = provider.bodies
        assert user["messages"] == HELLO
        assert probed and all(
            b == {"model": "m", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            for b in probed
        )
        await router.aclose()

    asyncio.run(run())


@pytest.mark.parametrize(("failure", "status"), [("rate_limited", 429), ("bad_request", 400)])
def test_an_upstream_that_answers_an_error_is_up(failure: str, status: int) -> None:
    async def run() -> None:
        provider = Sick()
        router = _router(provider)
        await _open(router)
        provider.failure, provider.status = failure, status
        await _until(lambda: router.breaker("d").state == "closed", "closed by a probe")
        await router.aclose()

    asyncio.run(run())


def test_without_probes_a_request_is_the_trial() -> None:
    async def run() -> None:
        provider = Sick()
        router = _router(provider, kind="none")
        await _open(router)
        provider.failure = None
        await asyncio.sleep(0.2)  # four reset times: a probe would have closed it
        assert router.breaker("d").state == "open" and len(provider.bodies) == 1
        await router.chat({"model": "x", "messages": HELLO}, CallRecord("x"))
        assert router.breaker("d").state == "closed" and len(provider.bodies) == 2
        await router.aclose()

    asyncio.run(run())


def test_a_models_probe_lists_the_provider_models_when_it_can() -> None:
    async def run() -> None:
        listing, plain = Listing(), Sick()
        for provider in (listing, plain):
            router = _router(provider, kind="models")
            await _open(router)
            provider.failure = None
            await _until(lambda r=router: r.breaker("d").state == "closed", "closed")
            await router.aclose()
        assert listing.listed >= 1 and len(listing.bodies) == 1  # the request, no chat probe
        assert len(plain.bodies) >= 2  # no model list: probed with a chat

    asyncio.run(run())


def test_closing_the_router_stops_its_probes() -> None:
    async def run() -> None:
        provider = Sick()
        router = _router(provider, reset_s=0.05)
        await _open(router)
        await router.aclose()
        before = len(provider.bodies)
        await asyncio.sleep(0.3)
        assert len(provider.bodies) == before

    asyncio.run(run())


def test_an_openai_compatible_upstream_is_probed_with_its_model_list() -> None:
    async def run(url: str) -> None:
        spec = GatewaySpec.model_validate(
            {
                "providers": {"fake": {"kind": "openai", "base_url": url + "/v1"}},
                "deployments": {"d": {"provider": "fake", "model": "gpt-d"}},
                "models": {"x": ["d"]},
                "breaker": {"failures": 1, "reset_s": 0.05},
                "probe": {"kind": "models"},
            }
        )
        router = Router(spec)
        try:
            await _open(router)
            # Chat still fails: only the model list (which the fake always answers) closes it.
            await _until(lambda: router.breaker("d").state == "closed", "closed by GET /models")
        finally:
            await router.aclose()

    with serve_fake_openai() as fake:
        fake.fail(500, model="gpt-d", times=None)
        asyncio.run(run(fake.url))
        assert fake.models_asked() == ["gpt-d"]  # the request; no chat probe


# -- through the served gateway ------------------------------------------------------


def _spec(fake_url: str) -> dict[str, Any]:
    return {
        "providers": {"fake": {"kind": "openai", "base_url": fake_url + "/v1"}},
        "deployments": {
            "sick": {"provider": "fake", "model": "gpt-sick", "timeout_s": 5},
            "b": {"provider": "fake", "model": "gpt-b", "timeout_s": 5},
        },
        "models": {"first-sick": ["sick", "b"]},
        "retry": {"attempts": 0},
        "breaker": {"failures": 2, "reset_s": 0.2, "max_reset_s": 0.4},
        "probe": {"kind": "chat", "timeout_s": 2},
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwprobe"), _spec) as found:
        yield found


def _probes(served: dict[str, Any], result: str) -> float:
    text = httpx.get(
        served["url"] + "/metrics", headers={"x-api-key": served["admin"]}, timeout=10
    ).text
    found = re.search(
        rf'conveyor_llm_probes_total\{{model="sick",result="{result}"\}} ([0-9.e+]+)', text
    )
    return float(found.group(1)) if found else 0.0


def _breaker(served: dict[str, Any]) -> str:
    with openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0) as client:
        state: str = client.models.retrieve("sick").model_dump()["breaker"]
    return state


def test_a_served_deployment_comes_back_after_its_upstream_recovers(
    served: dict[str, Any],
) -> None:
    fake = served["fake"]
    fake.fail(500, model="gpt-sick", times=None)
    with openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0) as client:
        for _ in range(2):  # two failures open the breaker; b answers both
            raw = client.chat.completions.with_raw_response.create(
                model="first-sick", messages=HELLO
            )
            assert raw.headers["x-conveyor-deployment"] == "b"
        assert _breaker(served) != "closed"
        wait_until(lambda: _probes(served, "failed") >= 1, message="a failed probe", timeout=10)
        fake.reset()  # the upstream recovers; no request is sent meanwhile
        wait_until(lambda: _breaker(served) == "closed", message="closed by a probe", timeout=10)
        assert _probes(served, "ok") == 1
        probes = [r for r in fake.requests if r.get("model") == "gpt-sick"]
        assert probes and all(r.get("max_tokens") == 1 for r in probes)
        raw = client.chat.completions.with_raw_response.create(model="first-sick", messages=HELLO)
    assert raw.headers["x-conveyor-deployment"] == "sick"
    assert raw.headers["x-conveyor-fallbacks"] == "0"
