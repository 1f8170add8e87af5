"""The review queue in the project's store, on SQLite and PostgreSQL: the migrated table is
the model's, a review is queued, listed (oldest first, by status), read whole and decided
once, even by reviewers racing each other; a rating is checked and kept as a score."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.errors import ConflictError, InvalidInputError, NotFoundError
from conveyor.guardrails.review import Reviews, rating_score
from conveyor.store.database import MetadataStore


@pytest.fixture
def reviews(store_url: str) -> Iterator[Reviews]:
    with MetadataStore.from_url(store_url) as store:
        assert store.schema_diff() == []  # migration 0003 is the table's model
        yield Reviews(store)


def _add(reviews: Reviews, model: str = "fast", answer: str = "echo: hi") -> str:
    decisions: list[dict[str, Any]] = [
        {"check": "legal", "label": "LEGAL", "action": "flag", "where": "output", "score": 1.0,
         "span": "la****it"},
        {"check": "pii", "label": "EMAIL", "action": "redact", "where": "input", "score": 1.0,
         "span": "*******"},
    ]  # fmt: skip
    return reviews.add(
        model=model,
        policy="p",
        messages=[{"role": "user", "content": "mail <EMAIL_1> about the lawsuit"}],
        answers=[answer],
        decisions=decisions,
        request_id="req-1",
        key="app",
    )


def test_a_review_is_queued_listed_and_read_whole(reviews: Reviews) -> None:
    first, second = _add(reviews), _add(reviews, model="smart")
    listed = reviews.list()
    assert [r["id"] for r in listed] == [first, second]  # oldest first
    assert listed[0]["checks"] == ["legal"] and "messages" not in listed[0]
    assert [r["id"] for r in reviews.list(model="smart")] == [second]
    whole = reviews.get(first)
    assert whole["messages"][0]["content"] == "mail <EMAIL_1> about the lawsuit"
    assert whole["answers"] == ["echo: hi"] and len(whole["decisions"]) == 2
    assert (whole["status"], whole["reviewer"], whole["request_id"]) == ("pending", None, "req-1")
    with pytest.raises(NotFoundError):
        reviews.get("rv_none")
    with pytest.raises(InvalidInputError, match="status"):
        reviews.list("open")


def test_a_review_is_decided_once_whoever_races_with_its_rating_kept(reviews: Reviews) -> None:
    review_id = _add(reviews)
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(8)

    def decide(who: int) -> None:
        barrier.wait()
        try:
            reviews.decide(review_id, "approved" if who % 2 else "rejected", actor=f"key:r{who}")
            won.append(f"key:r{who}")
        except ConflictError:
            lost.append(f"key:r{who}")

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7
    review = reviews.get(review_id)
    assert review["reviewer"] == won[0] and review["reviewed_at"] is not None
    assert reviews.list() == [] and len(reviews.list(None)) == 1
    with pytest.raises(ConflictError, match="already, by " + won[0]):
        reviews.decide(review_id, "approved", actor="key:late")
    with pytest.raises(NotFoundError):
        reviews.decide("rv_none", "approved")
    # a rating is checked, and kept as a score
    review_id = _add(reviews)
    with pytest.raises(InvalidInputError, match="1 to 5, up or down"):
        reviews.decide(review_id, "approved", rating=6)
    assert reviews.get(review_id)["status"] == "pending"  # a bad rating changes nothing
    done = reviews.decide(review_id, "approved", actor="key:r", rating="5", comment="fine")
    assert (done["rating"], done["score"], done["comment"]) == ("5", 1.0, "fine")
    assert [rating_score(r) for r in (1, 3, "up", "down", None)] == [
        ("1", 0.0),
        ("3", 0.5),
        ("up", 1.0),
        ("down", 0.0),
        None,
    ]
    with pytest.raises(InvalidInputError):
        rating_score(True)
