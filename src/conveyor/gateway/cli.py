"""``conveyor llm``: the gateway's models, and a test call through its routing.

::

    conveyor llm models                       # aliases -> deployments (weights), deployments
    conveyor llm test fast "Say hello"        # one chat call through the router, in process
    conveyor llm test fast "Say hello" --stream --json
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
)

__all__ = ["llm_app"]

llm_app = typer.Typer(help="The LLM gateway: its models, and test calls through its routing.")


@llm_app.command("models")
@errors
def models_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The model aliases (their deployments, in fallback order, and weights) and the
    deployments (provider, upstream model, and the tokenizer its prompts are counted with)
    a request may name."""
    from conveyor.gateway.settings import gateway_of

    with open_project(project) as proj:
        spec = gateway_of(proj.spec)
    items: list[dict[str, Any]] = []
    for name, model in spec.models.items():
        items.append(
            {
                "model": name,
                "kind": "alias",
                "routes_to": list(model.deployments),
                "weights": dict(model.weights),
            }
        )
    for name, deployment in spec.deployments.items():
        provider = spec.providers[deployment.provider]
        items.append(
            {
                "model": name,
                "kind": "deployment",
                "provider": f"{deployment.provider} ({provider.kind})",
                "upstream_model": deployment.model,
                "timeout_s": deployment.timeout_s,
                "tokenizer": spec.counter(name).name,  # what its prompts are counted with
            }
        )
    if as_json:
        echo_list(items)
        return
    if not items:
        typer.echo("no models: add gateway.providers, deployments and models to conveyor.yaml")
        return
    from rich.table import Table

    table = Table("model", "kind", "routes to / upstream", "weights / provider", "tokenizer")
    for item in items:
        if item["kind"] == "alias":
            weights = ", ".join(f"{k}={v:g}" for k, v in item["weights"].items()) or "-"
            table.add_row(item["model"], "alias", " -> ".join(item["routes_to"]), weights, "")
        else:
            table.add_row(
                item["model"],
                "deployment",
                item["upstream_model"],
                item["provider"],
                item["tokenizer"],
            )
    console().print(table)


@llm_app.command("test")
@errors
def call_cmd(
    model: Annotated[str, typer.Argument(help="A model alias or a deployment.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")] = "Say hello.",
    stream: Annotated[bool, typer.Option(help="Stream the answer.")] = False,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of the request.")] = 64,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one chat request through the gateway's routing from this process (no server):
    print the answer, the deployment that answered, the failures passed over, the time to
    the first chunk and the latency. Exit 1 when no deployment answered."""
    from conveyor.gateway.settings import gateway_of

    with open_project(project) as proj:
        authorized(proj, "llm.call")
        spec = gateway_of(proj.spec)
    import asyncio

    result = asyncio.run(_call(spec, model, prompt, stream, max_tokens))
    if as_json:
        echo_json(result)
    else:
        if result["answer"] is not None:
            typer.echo(result["answer"])
        failures = ", ".join(f"{f['deployment']} ({f['kind']})" for f in result["failures"])
        ttft = "" if result["ttft_ms"] is None else f", first chunk {result['ttft_ms']:.0f} ms"
        typer.echo(
            f"-- {result['deployment'] or 'no deployment'} answered {model!r} in "
            f"{result['latency_ms']:.0f} ms{ttft}"
            + (f"; passed over: {failures}" if failures else "")
            + (f"; tokens in/out {result['usage']}" if result["usage"] else ""),
            err=True,
        )
        if result["error"]:
            typer.secho(f"error: {result['error']}", fg=typer.colors.RED, err=True)
    if result["error"]:
        raise typer.Exit(1)


async def _call(
    spec: Any, model: str, prompt: str, stream: bool, max_tokens: int
) -> dict[str, Any]:
    from conveyor.gateway.router import CallRecord, Router
    from conveyor.gateway.types import UpstreamError

    router = Router(spec)
    record = CallRecord(model)
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    answer: str | None = None
    usage: list[int] | None = None
    error: str | None = None
    ttft: float | None = None
    try:
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
            parts = []
            async for chunk in router.stream(body, record):
                if ttft is None:
                    ttft = (time.perf_counter() - record.started) * 1000.0
                parts.append(chunk.text())
                if chunk.usage is not None:
                    usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
            answer = "".join(parts)
        else:
            done = await router.chat(body, record)
            choices = done.get("choices") or [{}]
            answer = (choices[0].get("message") or {}).get("content")
            got = done.get("usage") or {}
            if got:
                usage = [int(got.get("prompt_tokens") or 0), int(got.get("completion_tokens") or 0)]
    except UpstreamError as exc:
        error = f"{exc.kind}: {exc.message}"
    finally:
        await router.aclose()
    return {
        "model": model,
        "deployment": record.deployment,
        "assigned": record.assigned,
        "failures": record.failures,
        "answer": answer,
        "usage": usage,
        "ttft_ms": None if ttft is None else round(ttft, 3),
        "latency_ms": round((time.perf_counter() - record.started) * 1000.0, 3),
        "error": error,
    }


from conveyor.gateway import quality_cli as _quality_cli  # noqa: E402, F401  (its commands on llm_app)
from conveyor.gateway import routes_cli as _routes_cli  # noqa: E402, F401  (llm route ...)
