"""``conveyor llm quality|eval|usage|prefixes|budgets``: the gateway's reports (see
:mod:`conveyor.gateway.quality` and :mod:`conveyor.gateway.budgets`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    echo_json,
    echo_list,
    errors,
    open_project,
    parse_since,
    print_table,
)
from conveyor.gateway.cli import llm_app

__all__: list[str] = []

_METRICS = ("bleu", "rouge1", "rouge2", "rougeL")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _period(since: str, until: str | None) -> tuple[datetime, datetime | None]:
    start = parse_since(since)
    assert start is not None
    return start, parse_since(until, option="--until")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    print_table(table)


@llm_app.command("quality")
@errors
def quality_cmd(
    since: Annotated[str, typer.Option(help="An age (7d) or an ISO time.")] = "7d",
    until: Annotated[str | None, typer.Option(help="The end (exclusive); default now.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Only this model, as requests named it.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generation quality per model over a period: calls, feedback records, the mean human
    score (0 to 1), and the mean BLEU and ROUGE-1/2/L of the answers sent back with a
    reference (POST /v1/llm/feedback)."""
    from conveyor.gateway.quality import quality_report

    start, end = _period(since, until)
    with open_project(project) as proj:
        report = quality_report(proj, since=start, until=end, model=model)
    if as_json:
        echo_list(report)
        return
    if not report:
        typer.echo("no LLM calls or feedback in the period")
        return
    _table(report, ["model", "calls", "feedback", "mean_score", "with_reference", *_METRICS])


@llm_app.command("eval")
@errors
def eval_cmd(
    model: Annotated[str, typer.Argument(help="A model alias or a deployment.")],
    path: Annotated[Path, typer.Argument(help="JSON lines: messages or prompt, reference.")],
    max_tokens: Annotated[int, typer.Option(help="max_tokens of each request.")] = 256,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.", min=1)] = 4,
    min_rouge_l: Annotated[
        float | None, typer.Option("--min-rouge-l", help="Exit 1 below this mean ROUGE-L.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run an evaluation set through the gateway's routing (in this process) and score each
    answer against its reference: corpus BLEU and mean ROUGE-1/2/L, recorded as an
    ``llm.eval`` event. Exit 1 when a call failed or the mean ROUGE-L is under
    --min-rouge-l."""
    from conveyor.gateway.events import LLM_EVAL
    from conveyor.gateway.quality import read_eval_set, run_eval
    from conveyor.gateway.settings import gateway_of

    with open_project(project) as proj:
        actor = authorized(proj, "llm.call")
        examples = read_eval_set(str(path))
        spec = gateway_of(proj.spec)
        if model not in spec.models and model not in spec.deployments:
            from conveyor.errors import NotFoundError

            known = ", ".join([*spec.models, *spec.deployments]) or "none"
            raise NotFoundError(f"no model {model!r} in gateway: (known: {known})", model=model)
        import asyncio

        result = asyncio.run(
            run_eval(spec, model, examples, max_tokens=max_tokens, concurrency=concurrency)
        )
        summary = result["summary"]
        proj.events.record(
            LLM_EVAL,
            subject=model,
            payload={"path": str(path), **summary},
            actor=actor,
        )
    if as_json:
        echo_json(result)
    else:
        _table(result["rows"], ["id", "deployment", *_METRICS, "error"])
        typer.echo(
            f"{model}: {summary['answered']}/{summary['examples']} answered; "
            + ", ".join(f"{m} {_fmt(summary[m])}" for m in _METRICS)
        )
    low = min_rouge_l is not None and (summary["rougeL"] or 0.0) < min_rouge_l
    if summary["failed"] or low:
        raise typer.Exit(1)


@llm_app.command("usage")
@errors
def usage_cmd(
    since: Annotated[str, typer.Option(help="An age (1d) or an ISO time.")] = "1d",
    until: Annotated[str | None, typer.Option(help="The end (exclusive); default now.")] = None,
    by: Annotated[
        str, typer.Option(help="model, deployment, key, user, team or conversation.")
    ] = "model",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Calls, tokens and cost (gateway.prices) of the gateway's calls over a period, by
    model, deployment, key, user, team or conversation, most expensive first."""
    from conveyor.gateway.quality import usage_report

    start, end = _period(since, until)
    with open_project(project) as proj:
        rows = usage_report(proj, since=start, until=end, by=by)
    if as_json:
        echo_list(rows)
        return
    if not rows:
        typer.echo("no LLM calls in the period")
        return
    _table(rows, [by, "calls", "errors", "prompt_tokens", "completion_tokens", "cost_usd"])


@llm_app.command("prefixes")
@errors
def prefixes_cmd(
    since: Annotated[str, typer.Option(help="An age (1d) or an ISO time.")] = "1d",
    until: Annotated[str | None, typer.Option(help="The end (exclusive); default now.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Only this model, as requests named it.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prompt prefixes (a call's leading system messages: what providers' prompt caches
    reuse) per model over a period: the calls that sent each, the template, and how often
    the provider's cache served it (hit_rate: cached calls over the calls after the first;
    cached_share: cached over prompt tokens). Most called first."""
    from conveyor.gateway.prompts import prefix_report

    start, end = _period(since, until)
    with open_project(project) as proj:
        rows = prefix_report(proj, since=start, until=end, model=model)
    if as_json:
        echo_list(rows)
        return
    if not rows:
        typer.echo("no LLM calls with a system prompt in the period")
        return
    _table(
        rows,
        [
            "model",
            "prefix",
            "prompt",
            "prefix_tokens",
            "calls",
            "cached_calls",
            "hit_rate",
            "cached_share",
        ],
    )


@llm_app.command("budgets")
@errors
def budgets_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The budgets (gateway.budgets) and their counters: per subject and period, what was
    spent, what calls in flight have reserved, and the limit."""
    from conveyor.gateway.budgets import ledger_of
    from conveyor.gateway.settings import gateway_of

    with open_project(project) as proj:
        declared = gateway_of(proj.spec).budgets
        ledger = ledger_of(proj)
        try:
            rows = ledger.counters()
        finally:
            getattr(ledger, "close", lambda: None)()
    if as_json:
        echo_list(rows)
        return
    if not declared and not rows:
        typer.echo("no budgets: add gateway.budgets to conveyor.yaml")
        return
    for budget in declared:
        subject = budget.subject or f"each {budget.scope}"
        typer.echo(
            f"{budget.name}: ${budget.limit_usd:g} per {budget.period} for {subject}"
            + (f" (models {', '.join(budget.models)})" if budget.models else "")
        )
    if rows:
        columns = ["budget", "subject", "period_start", "limit_usd", "spent_usd"]
        _table(rows, [*columns, "reserved_usd", "calls"])
