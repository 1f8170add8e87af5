"""OpenTelemetry spans of the gateway's upstream calls, read from the SDK's in-memory
exporter: one CLIENT span per attempt (a fallback's too), a child of the request's span,
with the GenAI semantic conventions' attributes; none at all in a process without
tracing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from gateway_api_support import leave_a_stream, served_gateway

from conveyor.testing.tracing import span_exporter
from conveyor.testing.wait import wait_until
from fresh_python import loaded_of

CHAT = "POST /llm/v1/chat/completions"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    span_exporter()  # before the server starts: it takes its tracers then
    with served_gateway(tmp_path_factory.mktemp("gwtrace")) as found:
        found["client"] = openai.OpenAI(
            base_url=found["base"], api_key=found["key"], max_retries=0, timeout=20
        )
        try:
            yield found
        finally:
            found["client"].close()


@pytest.fixture
def exporter(served: dict[str, Any]) -> Any:
    return span_exporter()  # emptied for each test


def _spans(exporter: Any, request_id: str) -> tuple[Any, list[Any]]:
    """The request's span (by its request id) and its upstream calls' spans, in order."""
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if (s.attributes or {}).get("request_id") == request_id]
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id
    ]
    return request, sorted(children, key=lambda s: s.start_time)


def test_a_chat_call_is_a_client_span_under_the_request_with_genai_attributes(
    served: dict[str, Any], exporter: Any
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    raw = served["client"].chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "three little words"}],
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["zzz"],
        seed=7,
        extra_headers={"x-conveyor-conversation": "conv-42"},
    )
    answer = raw.parse()
    details = answer.usage.prompt_tokens_details
    assert details is not None
    request, (span,) = _spans(exporter, raw.headers["x-request-id"])
    assert request.name == CHAT
    assert span.name == "chat gpt-a" and span.kind == SpanKind.CLIENT
    assert span.status.status_code != StatusCode.ERROR
    attributes = dict(span.attributes or {})
    port = int(served["fake"].url.rsplit(":", 1)[1])
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.request.model": "gpt-a",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("zzz",),
        "gen_ai.conversation.id": "conv-42",
        "conveyor.llm.alias": "fast",
        "conveyor.llm.deployment": "a",
        "conveyor.llm.attempt": 1,
        "gen_ai.response.model": answer.model,
        "gen_ai.response.id": answer.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": details.cached_tokens,
    }
    assert request.start_time <= span.start_time <= span.end_time <= request.end_time


def test_each_fallback_attempt_is_its_own_span_the_failed_one_an_error(
    served: dict[str, Any], exporter: Any
) -> None:
    from opentelemetry.trace import StatusCode

    served["fake"].fail(500, model="gpt-flaky")
    raw = served["client"].chat.completions.with_raw_response.create(
        model="via-flaky", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-conveyor-deployment"] == "b"
    _, (failed, answered) = _spans(exporter, raw.headers["x-request-id"])
    assert failed.name == "chat gpt-flaky" and answered.name == "chat gpt-b"
    bad = dict(failed.attributes or {})
    assert bad["error.type"] == "server" and bad["http.response.status_code"] == 500
    assert bad["conveyor.llm.attempt"] == 1 and "gen_ai.response.model" not in bad
    assert failed.status.status_code == StatusCode.ERROR and "500" in failed.status.description
    good = dict(answered.attributes or {})
    assert good["conveyor.llm.attempt"] == 2 and good["conveyor.llm.deployment"] == "b"
    assert "error.type" not in good and answered.status.status_code != StatusCode.ERROR


def test_a_stream_span_lasts_to_its_last_chunk_with_its_usage_and_first_chunk_time(
    served: dict[str, Any], exporter: Any
) -> None:
    client = served["client"]
    with client.chat.completions.with_streaming_response.create(
        model="fast",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        request_id = raw.headers["x-request-id"]
        chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None
    _, (span,) = _spans(exporter, request_id)
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.response.id"] == chunks[0].id
    first = attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < first <= (span.end_time - span.start_time) / 1e9


def test_a_stream_the_client_left_ends_its_span_as_cancelled(
    served: dict[str, Any], exporter: Any
) -> None:
    def ended() -> Any:
        found = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-a"]
        return found[-1] if found else None

    with leave_a_stream(served, "fast") as request_id:
        span = wait_until(ended, message="the upstream call's span to end", timeout=10)
    _, (child,) = _spans(exporter, request_id)
    assert child is span and dict(span.attributes or {})["error.type"] == "cancelled"


def test_embeddings_are_an_embeddings_span(served: dict[str, Any], exporter: Any) -> None:
    raw = served["client"].embeddings.with_raw_response.create(
        model="fast", input=["a", "b"], dimensions=12
    )
    answer = raw.parse()
    _, (span,) = _spans(exporter, raw.headers["x-request-id"])
    attributes = dict(span.attributes or {})
    assert span.name == "embeddings gpt-a"
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.request.encoding_formats"] == ("base64",)  # the client's default
    assert attributes["gen_ai.embeddings.dimension.count"] == len(answer.data[0].embedding) == 12
    assert attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens


def test_without_tracing_the_gateway_takes_no_tracer_and_imports_no_opentelemetry() -> None:
    code = "from conveyor.gateway import http, router, tracing\nassert tracing.tracer() is None"
    assert loaded_of(("opentelemetry",), code) == []
