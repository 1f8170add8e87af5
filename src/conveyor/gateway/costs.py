"""What a call costs: tokens counted or reported, priced by the deployment's price table.

The price table is the spec's ``gateway.prices`` (USD per million input, cached input and
output tokens per deployment). A call's cost is priced from the upstream's own usage
(``prompt_tokens``, ``prompt_tokens_details.cached_tokens``, ``completion_tokens``), priced
at the deployment that answered. Before the call (to reserve budget) and for a stream cut
before its usage chunk, the gateway counts itself:

- the prompt: with the deployment's tokenizer where it has one (tiktoken for OpenAI's
  models, a Hugging Face tokenizer.json: :mod:`conveyor.gateway.tokens`), else the
  messages' text at one token per 3 bytes of UTF-8 plus 4 per message (English text
  runs at about 4 bytes a token in the BPE tokenizers of OpenAI's and Llama's models, so
  this over-counts: a reservation is an upper bound);
- the completion of a stream cut short: one token per chunk that carried text (an
  OpenAI-compatible stream sends one token per chunk, and the local model does).

An estimated count is flagged in the ``llm.call`` event (``usage_estimated``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from conveyor.gateway.tokens import messages_tokens

if TYPE_CHECKING:
    from conveyor.gateway.settings import GatewaySpec, PriceSpec
    from conveyor.gateway.tokens import Counter
    from conveyor.gateway.types import Usage

__all__ = ["cost_of", "max_cost", "prompt_tokens", "requested_output"]

_PER_MESSAGE = 4


def _text_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode())
    if isinstance(content, list):  # parts: text, images (an image counted by its URL)
        return sum(
            _text_bytes(part.get("text") or "") for part in content if isinstance(part, dict)
        )
    return 0


def prompt_tokens(body: dict[str, Any], counter: Counter | None = None) -> int:
    """A request's prompt tokens by the deployment's ``counter``
    (:mod:`conveyor.gateway.tokens`), else an upper estimate (see the module)."""
    if counter is not None and counter.exact:
        return messages_tokens(body, counter)
    total = 0
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            total += _PER_MESSAGE + math.ceil(_text_bytes(message.get("content")) / 3)
    given = body.get("input")  # embeddings
    if isinstance(given, str):
        total += math.ceil(len(given.encode()) / 3)
    elif isinstance(given, list):
        total += sum(math.ceil(len(str(item).encode()) / 3) for item in given)
    return total


def requested_output(body: dict[str, Any], default: int) -> int:
    """The most completion tokens a request may produce: max_completion_tokens or max_tokens
    (else ``default``), times ``n``."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or default
    n = body.get("n") or 1
    return int(limit) * int(n)


def cost_of(usage: Usage, price: PriceSpec) -> float:
    """USD of a call's usage at ``price``."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + usage.completion_tokens * price.output
    ) / 1e6


def max_cost(spec: GatewaySpec, deployments: list[str], prompt: int, output: int) -> float:
    """The most a call could cost on any of the deployments it may be sent to."""
    worst = 0.0
    for name in deployments:
        price = spec.prices.get(name)
        if price is not None:
            worst = max(worst, (prompt * price.input + output * price.output) / 1e6)
    return worst
