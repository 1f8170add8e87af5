"""``conveyor review list|show|approve|reject``: the calls a guardrail flagged, held for a
human review (see :mod:`conveyor.guardrails.review`).

::

    conveyor review list                          # pending, oldest first
    conveyor review list --status all --json
    conveyor review show rv_3f9c...               # the conversation, answers, decisions
    conveyor review approve rv_3f9c... --rating 4 --comment "a false alarm"
    conveyor review reject rv_3f9c... --rating down

Every command needs ``llm.review`` (role deployer): a review holds a conversation.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, echo_list, errors

__all__ = ["review_app"]

review_app = typer.Typer(
    help="Calls a guardrail flagged, held for review: list, show, approve, reject.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="The review's id (rv_...).")]
RatingOpt = Annotated[
    str | None, typer.Option(help="The answer's human score: 1 to 5, up or down.")
]
CommentOpt = Annotated[str | None, typer.Option(help="Why: kept with the verdict.")]


def _reviews(proj: Any) -> Any:
    from conveyor.guardrails.review import Reviews

    return Reviews(proj.store, proj.events)


@review_app.command("list")
@errors
def list_cmd(
    status: Annotated[str, typer.Option(help="pending, approved, rejected or all.")] = "pending",
    model: Annotated[str | None, typer.Option(help="Only this model's calls.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The reviews of a status (pending by default), oldest first."""
    from conveyor.cli.common import open_project

    with open_project(project) as proj:
        authorized(proj, "llm.review")
        items = _reviews(proj).list(None if status == "all" else status, model=model, limit=limit)
    if as_json:
        echo_list(items)
        return
    if not items:
        typer.echo(f"no {'' if status == 'all' else status + ' '}reviews")
        return
    for item in items:
        verdict = (
            f"{item['status']} by {item['reviewer'] or '?'}"
            if item["status"] != "pending"
            else "pending"
        )
        typer.echo(
            f"{item['id']}  {item['created_at'][:19]}  {item['model']}  "
            f"key={item['key'] or '-'}  checks={','.join(item['checks']) or '-'}  {verdict}"
        )


@review_app.command("show")
@errors
def show_cmd(review_id: IdArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """One review: the conversation as it went upstream, the answers, the decisions."""
    from conveyor.cli.common import open_project

    with open_project(project) as proj:
        authorized(proj, "llm.review")
        review = _reviews(proj).get(review_id)
    if as_json:
        echo_json(review)
        return
    typer.echo(
        f"{review['id']}  {review['status']}  model={review['model']}  "
        f"policy={review['policy']}  key={review['key'] or '-'}  request={review['request_id']}"
    )
    for message in review["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        typer.echo(f"  [{message.get('role')}] {content}")
    for i, answer in enumerate(review["answers"]):
        typer.echo(f"  [answer {i}] {answer if answer is not None else '(withheld)'}")
    for made in review["decisions"]:
        typer.echo(
            f"  - {made['where']} {made['check']}: {made['label']} ({made['action']}, "
            f"score {made['score']}) {made['span']}"
        )
    if review["status"] != "pending":
        typer.echo(
            f"  {review['status']} by {review['reviewer'] or '?'} at {review['reviewed_at']}"
            + (f", rated {review['rating']}" if review["rating"] else "")
            + (f": {review['comment']}" if review["comment"] else "")
        )


def _decide(
    verdict: str,
    review_id: str,
    rating: str | None,
    comment: str | None,
    project: Any,
    as_json: bool,
) -> None:
    from conveyor.cli.common import open_project

    with open_project(project) as proj:
        actor = authorized(proj, "llm.review")
        review = _reviews(proj).decide(
            review_id, verdict, actor=actor, rating=rating, comment=comment
        )
    if as_json:
        echo_json(review)
    else:
        typer.echo(
            f"{review_id} {verdict} by {actor}"
            + (f" (rated {review['rating']})" if review["rating"] else "")
        )


def _verdict_command(verdict: str, doc: str) -> Any:
    @errors
    def command(
        review_id: IdArg,
        rating: RatingOpt = None,
        comment: CommentOpt = None,
        project: ProjectOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _decide(verdict, review_id, rating, comment, project, as_json)

    command.__doc__ = doc
    return command


review_app.command("approve")(
    _verdict_command("approved", "Approve a call held for review: the flag was a false alarm.")
)
review_app.command("reject")(
    _verdict_command("rejected", "Reject a call held for review: the flag was right.")
)
