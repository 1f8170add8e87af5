"""One call's way through the gateway: the :class:`Turn` it carries and the stages that
act on it.

A *stage* is what the gateway does around the upstream call besides routing it: rate
and token limits, input and output guardrails, the caches, budgets and costs. Each is an
``async`` callable taking the turn and ``proceed`` (the rest of the chain, the router at
its end), in the shape of a middleware::

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        ...                       # before: check, refuse (raise a ConveyorError), rewrite
        outcome = await proceed(turn)
        ...                       # after: inspect, rewrite, account
        return outcome

An outcome is what the chain answers:

- a ``dict``: OpenAI's answer (a ``chat.completion``, an embeddings ``list``);
- an ``AsyncIterator[Chunk]``: a stream; a stage that acts on chunks wraps it in its own
  async generator, whose ``finally`` runs when the stream ends, fails or the client goes
  away (the API closes the outermost iterator, which closes each inner one in turn, the
  upstream's last);
- a :class:`starlette.responses.Response`: a stage answered itself (a guardrail blocked
  the request, a review holds it).

A stage refuses a request by raising a :class:`conveyor.errors.ConveyorError` (a budget
tripped: 429); the API answers it in OpenAI's shape. A stage fills in what the
``llm.call`` event should carry in ``turn.event`` (cost, cache hit, guardrail decisions)
and keeps its own state in ``turn.state[its name]``.

Stages run in the order :func:`conveyor.gateway.stages.build` gives; a spec without
limits, budgets, caches or guardrails builds none, and the call goes straight to the
router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from conveyor.gateway.router import CallRecord
    from conveyor.gateway.types import Usage
    from conveyor.governance.access import Caller
    from conveyor.web.pipeline import Call

__all__ = ["Endpoint", "Outcome", "Proceed", "Stage", "Turn", "chain"]

Endpoint = Literal["chat", "embeddings"]


@dataclass(slots=True, eq=False)
class Turn:
    """One request to the gateway, from the gate to the ``llm.call`` event."""

    call: Call
    """The HTTP call (request id, headers, when it started)."""
    endpoint: Endpoint
    body: dict[str, Any]
    """OpenAI's request body, as the client sent it (stages may rewrite it: a redacted
    prompt, a ``max_tokens`` default)."""
    record: CallRecord
    """What the router did (deployment, fallbacks, attempts)."""
    stream: bool = False
    caller: Caller | None = None
    key: str | None = None
    """The API key's name (None: the server runs without keys)."""
    user: str | None = None
    """The end user: OpenAI's ``user`` field, else the ``x-conveyor-user`` header."""
    team: str | None = None
    """The ``x-conveyor-team`` header."""
    conversation: str | None = None
    """The ``x-conveyor-conversation`` header."""
    usage: Usage | None = None
    """Tokens, as the upstream reported them (a stream: its usage chunk, if asked)."""
    chunks_with_text: int = 0
    """A stream's chunks that carried choices, so far (a count of what was generated
    when the upstream reported no usage)."""
    event: dict[str, Any] = field(default_factory=dict)
    """Fields the stages add to the ``llm.call`` event."""
    state: dict[str, Any] = field(default_factory=dict)
    """Each stage's own state, under its name."""


#: ``dict[str, Any] | AsyncIterator[Chunk] | Response`` (see the module).
Outcome = Any
Proceed = Callable[[Turn], Awaitable[Any]]
"""The rest of the chain: ``await proceed(turn)`` is the outcome (see the module)."""


class Stage(Protocol):
    """What the gateway does around the upstream call (see the module)."""

    name: str

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome: ...


def chain(stages: list[Stage], inner: Proceed) -> Proceed:
    """The stages around ``inner``, the first stage outermost."""
    proceed = inner
    for stage in reversed(stages):
        proceed = _link(stage, proceed)
    return proceed


def _link(stage: Stage, proceed: Proceed) -> Proceed:
    async def linked(turn: Turn) -> Outcome:
        return await stage(turn, proceed)

    return linked
