"""The semantic cache: a question asked again in other words, in the same conversation
state, by the same tenant, answered from the cache.

::

    gateway:
      cache:
        exact: true
        semantic:
          threshold: 0.9          # cosine similarity of the last user messages
          embedding: {}           # rag's EmbeddingConfig: all-MiniLM-L6-v2 on ONNX by default
          max_entries: 5000       # per tenant and context, the oldest evicted first

What must match, and what may differ. A request is split in two: its **context** (the
model asked, every message but the last user message, and every parameter that changes
the answer, as the exact cache normalizes them) and its **question** (the last user
message's text). An entry can answer a request only when the context is byte-for-byte
the same (its SHA-256 names the entry's space) and the questions' embeddings are at least
``threshold`` alike. So a different system prompt, conversation history, model, tools or
``max_tokens`` never gets another's answer, and a paraphrase of the same question does.
Spaces are per tenant (the key, or the team with ``cache.scope: team``), never shared.

Where it lives. Each worker keeps the vectors of its spaces in memory (a float32 matrix per
space, searched exactly: 5,000 vectors of 384 dimensions is a 0.2 ms product), with the
entry each one points to; the entries themselves (the answers) are on the project's cache
seam with the cache's ``ttl_s``, like the exact cache's, and a vector whose entry expired
is dropped when it is next found. A worker learns only its own misses' questions: with
several workers a paraphrase may miss once per worker. Requests that sample
(``temperature`` above 0, or none given) are skipped unless ``cache.allow_sampling``.

Embedding a question costs about 1 ms on CPU (all-MiniLM-L6-v2, INT8) in a thread, paid
only when the exact cache missed. A hit is ``x-conveyor-cache: hit``, ``llm.call`` with
``cache: "semantic"`` and ``cache_similarity``, and ``conveyor_llm_cache_total{kind,
result}``.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["Match", "SemanticIndex", "SemanticSpec", "split_question"]


class SemanticSpec(BaseModel):
    """``gateway.cache.semantic``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Least cosine similarity of two questions for one's answer to serve the "
        "other (all-MiniLM-L6-v2: paraphrases score 0.85-0.95, unrelated questions below 0.3).",
    )
    embedding: dict[str, Any] = Field(
        default_factory=dict,
        description="The encoder: RAG's embedding settings (model, backend onnx|"
        "sentence-transformers|openai, url...); empty: all-MiniLM-L6-v2 on ONNX Runtime.",
    )
    max_entries: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Questions kept per tenant and context in each worker; the oldest go first.",
    )


def split_question(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """``(context, question)``: the body with the last user message's text taken out, and
    that text; None when the last message is not a user's plain text (nothing to compare)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):  # text parts only; an image or audio part: no
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return None
        content = "\n".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str) or not content.strip():
        return None
    context = {**body, "messages": [*messages[:-1], {**last, "content": None}]}
    return context, content


class Match(BaseModel):
    """A question found alike: the entry it points to and how alike."""

    model_config = ConfigDict(frozen=True)

    entry: str
    similarity: float


class _Space:
    """One tenant's and context's questions: a matrix of vectors growing up to the limit,
    then a ring whose oldest slot the next question takes. A forgotten entry leaves a zero
    vector (it matches nothing) until its slot is taken again."""

    __slots__ = ("count", "entries", "live", "next", "vectors")

    def __init__(self, dimension: int) -> None:
        import numpy as np

        self.vectors: NDArray[np.float32] = np.zeros((16, dimension), dtype=np.float32)
        self.entries: list[str | None] = []
        self.count = 0  # slots in use
        self.next = 0  # the slot the next question takes once the ring is full
        self.live = 0  # entries not forgotten

    def add(self, vector: NDArray[np.float32], entry: str, limit: int) -> None:
        import numpy as np

        if self.count < limit:
            if self.count == len(self.vectors):
                size = min(limit, 2 * len(self.vectors))
                grown = np.zeros((size, self.vectors.shape[1]), np.float32)
                grown[: self.count] = self.vectors[: self.count]
                self.vectors = grown
            slot = self.count
            self.count += 1
            self.entries.append(entry)
        else:  # full: the oldest slot goes
            slot = self.next
            self.next = (self.next + 1) % limit
            if self.entries[slot] is not None:
                self.live -= 1
            self.entries[slot] = entry
        self.vectors[slot] = vector
        self.live += 1

    def best(self, vector: NDArray[np.float32]) -> tuple[int, float] | None:
        if not self.live:
            return None
        scores = self.vectors[: self.count] @ vector
        at = int(scores.argmax())
        return at, float(scores[at])

    def drop(self, entry: str) -> None:
        try:
            at = self.entries.index(entry)
        except ValueError:
            return
        self.vectors[at] = 0.0
        self.entries[at] = None
        self.live -= 1


class SemanticIndex:
    """Each worker's questions, by space (tenant and context digest). Thread-safe: lookups
    and additions run in threads (the embedding does)."""

    def __init__(
        self,
        spec: SemanticSpec,
        embed: Callable[[list[str]], Any],
        *,
        max_spaces: int = 10_000,
    ) -> None:
        self.spec = spec
        self._embed = embed
        self._spaces: OrderedDict[str, _Space] = OrderedDict()
        self._max_spaces = max_spaces
        self._lock = threading.Lock()
        #: Seconds spent embedding, and questions embedded: for the metrics.
        self.embed_s = 0.0
        self.embedded = 0

    @staticmethod
    def space_of(tenant: str, context: dict[str, Any]) -> str:
        digest = hashlib.sha256(orjson.dumps(context, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"{tenant}:{digest}"

    def vector(self, question: str) -> NDArray[np.float32]:
        started = time.perf_counter()
        found = self._embed([question])[0]
        self.embed_s += time.perf_counter() - started
        self.embedded += 1
        return found  # type: ignore[no-any-return]

    def lookup(self, space: str, question: str) -> tuple[NDArray[np.float32], Match | None]:
        """The question's vector and the most alike question of ``space`` (one call, for
        one thread: the embedding and the search both take a while)."""
        vector = self.vector(question)
        return vector, self.find(space, vector)

    def find(self, space: str, vector: NDArray[np.float32]) -> Match | None:
        """The most alike question of ``space`` at or above the threshold."""
        with self._lock:
            found = self._spaces.get(space)
            best = found.best(vector) if found is not None else None
            if best is None or best[1] < self.spec.threshold:
                return None
            assert found is not None
            entry = found.entries[best[0]]
            if entry is None:
                return None
            return Match(entry=entry, similarity=round(best[1], 4))

    def add(self, space: str, vector: NDArray[np.float32]) -> str:
        """Remember ``vector`` in ``space``; the new entry's name (its answer goes there)."""
        entry = f"llm:semantic:{space}:{uuid.uuid4().hex}"
        with self._lock:
            found = self._spaces.get(space)
            if found is None:
                found = self._spaces[space] = _Space(len(vector))
                if len(self._spaces) > self._max_spaces:
                    self._spaces.popitem(last=False)
            else:
                self._spaces.move_to_end(space)
            found.add(vector, entry, self.spec.max_entries)
        return entry

    def forget(self, space: str, entry: str) -> None:
        """Drop an entry whose answer is gone (expired)."""
        with self._lock:
            found = self._spaces.get(space)
            if found is not None:
                found.drop(entry)

    def size(self) -> int:
        with self._lock:
            return sum(s.live for s in self._spaces.values())
