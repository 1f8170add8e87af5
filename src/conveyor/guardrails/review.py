"""The review queue: calls a guardrail flagged, held until a human approves or rejects them.

A ``flag`` decision (on the prompt or on the answer) holds the call: the upstream answers
as usual, but the caller gets, instead of the answer, a stable *pending review* answer, a
``chat.completion`` (HTTP 200, so every OpenAI client takes it) whose every choice says::

    This answer is pending human review (review rv_3f9c...).

with ``finish_reason: "content_filter"``, a ``review: {"id": ..., "status": "pending"}``
field beside ``choices`` and an ``x-conveyor-review`` header. A stream flagged midway ends
with that sentence as its last text. The queue keeps the conversation as it went upstream
(pseudonyms where a check redacted, never the values), each choice's answer as the checks
left it, and the decisions.

A reviewer (action ``llm.review``, role deployer: a review holds a conversation)::

    conveyor review list                       # pending, oldest first (--status all)
    conveyor review show rv_3f9c...
    conveyor review approve rv_3f9c... --rating 4 --comment "fine: a false alarm"
    conveyor review reject rv_3f9c... --rating down

    GET  /v1/reviews?status=pending&limit=50
    GET  /v1/reviews/{id}
    POST /v1/reviews/{id}/approve   {"rating": 4, "comment": "..."}
    POST /v1/reviews/{id}/reject    {"rating": "down"}

A verdict is given once (a second one is a 409 naming the first) and is an audit event,
``guardrail.reviewed``, with the reviewer and the time. A rating (1 to 5, or ``up`` /
``down``) is the answer's human score, 0 to 1 (1 is 0, 5 is 1, up is 1): it is kept on the
review and recorded as ``llm.feedback`` on the call's request id, so ``conveyor llm
quality`` counts it with the application's own feedback.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from conveyor.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.store.database import MetadataStore

__all__ = [
    "PENDING_MESSAGE",
    "STATUSES",
    "Reviews",
    "pending_message",
    "rating_score",
]

#: What a held call answers in each choice (``{id}``: the review's id).
PENDING_MESSAGE = "This answer is pending human review (review {id})."
STATUSES = ("pending", "approved", "rejected")
Verdict = Literal["approved", "rejected"]
_MAX_COMMENT = 4_000


def pending_message(review_id: str) -> str:
    return PENDING_MESSAGE.format(id=review_id)


def rating_score(rating: Any) -> tuple[str, float] | None:
    """A reviewer's rating, checked: its text (``4``, ``up``) and its score, 0 to 1."""
    if rating is None:
        return None
    text = str(rating).strip().lower()
    if text in ("up", "down"):
        return text, 1.0 if text == "up" else 0.0
    if not isinstance(rating, bool) and text in ("1", "2", "3", "4", "5"):
        return text, (int(text) - 1) / 4
    raise InvalidInputError(f"a rating is 1 to 5, up or down, got {rating!r}", field="rating")


def _row(record: Any, *, full: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "created_at": record.created_at.isoformat(),
        "request_id": record.request_id,
        "model": record.model,
        "deployment": record.deployment,
        "policy": record.policy,
        "key": record.key,
        "user": record.user,
        "team": record.team,
        "stream": record.stream,
        "checks": sorted({d["check"] for d in record.decisions if d.get("action") == "flag"}),
        "reviewer": record.reviewer,
        "reviewed_at": None if record.reviewed_at is None else record.reviewed_at.isoformat(),
        "rating": record.rating,
        "score": record.score,
        "comment": record.comment,
    }
    if full:
        row["messages"] = record.messages
        row["answers"] = record.answers
        row["decisions"] = record.decisions
    return row


class Reviews:
    """The review queue in the project's store (see the module)."""

    def __init__(self, store: MetadataStore, events: EventLog | None = None) -> None:
        self.store = store
        self.events = events

    def add(
        self,
        *,
        model: str,
        policy: str,
        messages: list[dict[str, Any]],
        answers: list[str | None],
        decisions: list[dict[str, Any]],
        request_id: str | None = None,
        deployment: str | None = None,
        key: str | None = None,
        user: str | None = None,
        team: str | None = None,
        stream: bool = False,
        review_id: str | None = None,
    ) -> str:
        """Queue a flagged call; its review id."""
        from conveyor.gateway.events import GUARDRAIL_REVIEW_QUEUED
        from conveyor.gateway.tables import LlmReviewRecord

        review_id = review_id or new_id()
        with self.store.session() as session:
            session.add(
                LlmReviewRecord(
                    id=review_id,
                    status="pending",
                    created_at=datetime.now(UTC),
                    request_id=request_id,
                    model=model,
                    deployment=deployment,
                    policy=policy,
                    key=key,
                    user=user,
                    team=team,
                    stream=stream,
                    messages=messages,
                    answers=answers,
                    decisions=decisions,
                )
            )
        if self.events is not None:
            checks = sorted({d["check"] for d in decisions if d.get("action") == "flag"})
            self.events.record(
                GUARDRAIL_REVIEW_QUEUED,
                subject=model,
                payload={
                    "review_id": review_id,
                    "model": model,
                    "policy": policy,
                    "key": key,
                    "checks": checks,
                },
                request_id=request_id,
            )
        return review_id

    def list(
        self, status: str | None = "pending", *, model: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reviews of a status (None: all), oldest first, without their conversations."""
        from conveyor.gateway.tables import LlmReviewRecord

        if status is not None and status not in STATUSES:
            raise InvalidInputError(
                f"status is one of {', '.join(STATUSES)} (or all), got {status!r}",
                field="status",
            )
        if not 1 <= limit <= 1000:
            raise InvalidInputError(f"limit is 1 to 1000, got {limit}", field="limit")
        query = sa.select(LlmReviewRecord)
        if status is not None:
            query = query.where(LlmReviewRecord.status == status)
        if model is not None:
            query = query.where(LlmReviewRecord.model == model)
        query = query.order_by(LlmReviewRecord.created_at, LlmReviewRecord.id).limit(limit)
        with self.store.read() as session:
            return [_row(r, full=False) for r in session.scalars(query)]

    def get(self, review_id: str) -> dict[str, Any]:
        """One review with its conversation, answers and decisions."""
        from conveyor.gateway.tables import LlmReviewRecord

        with self.store.read() as session:
            found = session.get(LlmReviewRecord, review_id)
            if found is None:
                raise NotFoundError(f"no review {review_id!r}", review=review_id)
            return _row(found, full=True)

    def decide(
        self,
        review_id: str,
        verdict: Verdict,
        *,
        actor: str | None = None,
        rating: Any = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """Approve or reject a pending review (once); the review as it now is."""
        from conveyor.gateway.events import GUARDRAIL_REVIEWED, LLM_FEEDBACK
        from conveyor.gateway.tables import LlmReviewRecord

        rated = rating_score(rating)
        if comment is not None and (not isinstance(comment, str) or len(comment) > _MAX_COMMENT):
            raise InvalidInputError(
                f"a comment is text of at most {_MAX_COMMENT:,} characters", field="comment"
            )
        now = datetime.now(UTC)
        with self.store.session() as session:
            # one verdict: the row changes only while it is pending, whoever comes second
            done = session.execute(
                sa.update(LlmReviewRecord)
                .where(LlmReviewRecord.id == review_id, LlmReviewRecord.status == "pending")
                .values(
                    status=verdict,
                    reviewer=actor,
                    reviewed_at=now,
                    rating=None if rated is None else rated[0],
                    score=None if rated is None else rated[1],
                    comment=comment,
                )
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                found = session.get(LlmReviewRecord, review_id)
                if found is None:
                    raise NotFoundError(f"no review {review_id!r}", review=review_id)
                raise ConflictError(
                    f"review {review_id} was {found.status} already, by "
                    f"{found.reviewer or '?'} at {found.reviewed_at}",
                    review=review_id,
                    status=found.status,
                )
        review = self.get(review_id)
        if self.events is not None:
            self.events.record(
                GUARDRAIL_REVIEWED,
                subject=review["model"],
                payload={
                    "review_id": review_id,
                    "verdict": verdict,
                    "model": review["model"],
                    "rating": review["rating"],
                    "score": review["score"],
                    "comment": comment,
                },
                request_id=review["request_id"],
                actor=actor,
            )
            if rated is not None:  # the answer's human score, for the quality report
                self.events.record(
                    LLM_FEEDBACK,
                    subject=review["model"],
                    payload={
                        "model": review["model"],
                        "score": rated[1],
                        "scores": None,
                        "comment": f"review {review_id}: {verdict}",
                    },
                    request_id=review["request_id"],
                    actor=actor,
                )
        return review


def new_id() -> str:
    """A review id: ``rv_`` and 24 random hex digits."""
    return "rv_" + secrets.token_hex(12)
