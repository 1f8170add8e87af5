"""The HTTP JSON source against a real HTTP server in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from conveyor.data.sources import HTTPJSONSource
from conveyor.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from conveyor.testing.http import Reply, Request, serve

ROWS = [{"id": i, "name": f"n{i}", "score": i * 0.5} for i in range(1, 8)]
PAGE = 3


def _slice(page: int) -> list[dict[str, object]]:
    return ROWS[(page - 1) * PAGE : page * PAGE]


def _counter() -> Callable[[], int]:
    lock = threading.Lock()
    count = [0]

    def bump() -> int:
        with lock:
            count[0] += 1
            return count[0]

    return bump


def test_no_pagination_and_frames() -> None:
    def handler(request: Request) -> Reply:
        return Reply.json({"data": ROWS})

    with serve({"/rows": handler}) as server:
        source = HTTPJSONSource(server.url("/rows"))
        extract = source.read()
        assert extract.table.to_pylist() == ROWS
        assert extract.source["pages"] == 1
        assert extract.source["rows"] == 7
        frame = source.read_frame("pandas")
        assert isinstance(frame, pd.DataFrame)
        assert frame["id"].tolist() == list(range(1, 8))
        assert len(server.requests) == 2


def test_next_url_pagination_with_relative_links_and_a_dotted_records_path() -> None:
    def handler(request: Request) -> Reply:
        page = int(request.arg("p", "1") or 1)
        more = page * PAGE < len(ROWS)
        return Reply.json(
            {
                "result": {"items": _slice(page)},
                "links": {"next": f"/items?p={page + 1}" if more else None},
            }
        )

    with serve({"/items": handler}) as server:
        source = HTTPJSONSource(
            server.url("/items"),
            records="result.items",
            pagination="next_url",
            next_path="links.next",
        )
        extract = source.read()
        assert extract.table["id"].to_pylist() == list(range(1, 8))
        assert extract.source["pages"] == 3
        assert [r.arg("p") for r in server.requests] == [None, "2", "3"]


def test_page_number_pagination_stops_on_an_empty_page() -> None:
    def handler(request: Request) -> Reply:
        return Reply.json({"data": _slice(int(request.arg("page") or 0))})

    with serve({"/rows": handler}) as server:
        source = HTTPJSONSource(
            server.url("/rows"), pagination="page", params={"size": 3}, page_param="page"
        )
        assert source.read().table["id"].to_pylist() == list(range(1, 8))
        assert [r.arg("page") for r in server.requests] == ["1", "2", "3", "4"]
        assert {r.arg("size") for r in server.requests} == {"3"}


def test_the_test_server_answers_500_for_a_failing_handler() -> None:
    def broken(request: Request) -> Reply:
        raise KeyError("boom")

    with serve({"/broken": broken}) as server:
        source = HTTPJSONSource(server.url("/broken"), retries=0)
        with pytest.raises(BackendUnavailableError, match="500"):
            source.read()
        assert [type(e) for e in server.failures] == [KeyError]


def test_cursor_pagination_sends_the_cursor_back() -> None:
    def handler(request: Request) -> Reply:
        start = int(request.arg("after_id") or 0)
        rows = [r for r in ROWS if int(str(r["id"])) > start][:PAGE]
        last = rows[-1]["id"] if rows and rows[-1]["id"] != ROWS[-1]["id"] else None
        return Reply.json({"data": rows, "meta": {"cursor": last}})

    with serve({"/rows": handler}) as server:
        source = HTTPJSONSource(
            server.url("/rows"),
            pagination="cursor",
            cursor_path="meta.cursor",
            cursor_param="after_id",
        )
        assert source.read().table["id"].to_pylist() == list(range(1, 8))
        assert [r.arg("after_id") for r in server.requests] == [None, "3", "6"]


def test_link_header_pagination() -> None:
    def handler(request: Request) -> Reply:
        page = int(request.arg("page") or 1)
        headers = {}
        if page * PAGE < len(ROWS):
            headers["Link"] = f'</rows?page={page + 1}>; rel="next", </rows?page=1>; rel="first"'
        return Reply.json(_slice(page), headers=headers)

    with serve({"/rows": handler}) as server:
        source = HTTPJSONSource(server.url("/rows"), records="", pagination="link")
        assert source.read().table["id"].to_pylist() == list(range(1, 8))
        assert len(server.requests) == 3


def test_retries_503_twice_then_succeeds() -> None:
    attempt = _counter()

    def handler(request: Request) -> Reply:
        if attempt() <= 2:
            return Reply.json({"error": "busy"}, status=503)
        return Reply.json({"data": ROWS[:2]})

    with serve({"/flaky": handler}) as server:
        source = HTTPJSONSource(server.url("/flaky"), retries=3, backoff=0.01)
        assert source.read().table["id"].to_pylist() == [1, 2]
        assert len(server.requests) == 3


def test_persistent_5xx_exhausts_the_retries_and_names_the_url() -> None:
    with serve({"/down": lambda r: Reply.json({}, status=502)}) as server:
        source = HTTPJSONSource(server.url("/down"), retries=2, backoff=0.01)
        with pytest.raises(BackendUnavailableError) as info:
            source.read()
        assert server.url("/down") in str(info.value)
        assert "502" in str(info.value)
        assert info.value.context["attempts"] == 3
        assert len(server.requests) == 3


def test_429_waits_for_retry_after() -> None:
    attempt = _counter()

    def handler(request: Request) -> Reply:
        if attempt() == 1:
            return Reply.json({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        return Reply.json({"data": ROWS[:1]})

    with serve({"/limited": handler}) as server:
        source = HTTPJSONSource(server.url("/limited"), backoff=0.0)
        assert source.read().rows == 1
        first, second = server.requests
        # The retry came no sooner than the server asked (a lower bound: sleep never ends early).
        assert second.received_at - first.received_at >= 0.95


def test_retry_after_longer_than_max_backoff_fails_instead_of_hanging() -> None:
    reply = Reply.json({}, status=429, headers={"Retry-After": "3600"})
    with serve({"/limited": lambda r: reply}) as server:
        source = HTTPJSONSource(server.url("/limited"), max_backoff=5)
        with pytest.raises(BackendUnavailableError, match="Retry-After"):
            source.read()
        assert len(server.requests) == 1


def test_404_is_not_retried_and_names_the_url() -> None:
    with serve({}) as server:
        source = HTTPJSONSource(server.url("/missing"), retries=3, backoff=0.01)
        with pytest.raises(NotFoundError) as info:
            source.read()
        assert server.url("/missing") in str(info.value)
        assert info.value.context["status"] == 404
        assert len(server.requests) == 1


def test_other_4xx_is_not_retried() -> None:
    with serve({"/auth": lambda r: Reply.json({"error": "bad token"}, status=401)}) as server:
        with pytest.raises(InvalidInputError, match="401") as info:
            HTTPJSONSource(server.url("/auth"), backoff=0.01).read()
        assert not isinstance(info.value, NotFoundError)
        assert len(server.requests) == 1


def test_a_slow_endpoint_times_out_into_backend_unavailable_naming_the_url() -> None:
    with serve({"/slow": lambda r: Reply.json({"data": []}, delay=1.0)}) as server:
        source = HTTPJSONSource(
            server.url("/slow"), params={"q": "x"}, timeout=0.2, retries=1, backoff=0.01
        )
        with pytest.raises(BackendUnavailableError) as info:
            source.read()
        assert server.url("/slow?q=x") in str(info.value)
        assert "timeout" in str(info.value)
        assert len(server.requests) == 2


def test_a_refused_connection_is_backend_unavailable() -> None:
    with serve({}) as server:
        url = server.url("/gone")
    # The server is shut down: nothing listens on that port any more.
    with pytest.raises(BackendUnavailableError, match="/gone"):
        HTTPJSONSource(url, retries=1, backoff=0.01).read()


def test_malformed_json_names_url_and_page() -> None:
    def handler(request: Request) -> Reply:
        if request.arg("page") == "2":
            return Reply.text("<html>oops</html>")
        return Reply.json({"data": ROWS[:3]})

    with serve({"/rows": handler}) as server:
        with pytest.raises(InvalidInputError) as info:
            HTTPJSONSource(server.url("/rows"), pagination="page").read()
        assert server.url("/rows?page=2") in str(info.value)
        assert "page 2" in str(info.value)
        assert info.value.context["page"] == 2


def test_a_body_without_the_records_path_names_it() -> None:
    with serve({"/rows": lambda r: Reply.json({"items": ROWS})}) as server:
        with pytest.raises(InvalidInputError, match=r"'data'.*'items'") as info:
            HTTPJSONSource(server.url("/rows")).read()
        assert "page 1" in str(info.value)
    with (
        serve({"/rows": lambda r: Reply.json({"data": {"id": 1}})}) as server,
        pytest.raises(InvalidInputError, match="not a list"),
    ):
        HTTPJSONSource(server.url("/rows")).read()
    with (
        serve({"/rows": lambda r: Reply.json({"data": [1, 2]})}) as server,
        pytest.raises(InvalidInputError, match="not JSON objects"),
    ):
        HTTPJSONSource(server.url("/rows")).read()


def test_schema_is_unified_across_pages_and_conflicts_name_the_column() -> None:
    pages = {
        1: [{"id": 1, "amount": 1}],
        # A new field, and an int column that turns out to hold floats.
        2: [{"id": 2, "amount": 2.5, "tag": "x"}, {"id": 3, "amount": None}],
    }
    with serve(
        {"/rows": lambda r: Reply.json({"data": pages.get(int(r.arg("page") or 0), [])})}
    ) as s:
        table = HTTPJSONSource(s.url("/rows"), pagination="page").read().table
        assert table.schema.field("amount").type == pa.float64()
        assert table.to_pylist() == [
            {"id": 1, "amount": 1.0, "tag": None},
            {"id": 2, "amount": 2.5, "tag": "x"},
            {"id": 3, "amount": None, "tag": None},
        ]
    pages[3] = [{"id": "four", "amount": 4}]
    with serve(
        {"/rows": lambda r: Reply.json({"data": pages.get(int(r.arg("page") or 0), [])})}
    ) as s:
        with pytest.raises(InvalidInputError) as info:
            HTTPJSONSource(s.url("/rows"), pagination="page").read()
        assert info.value.context["column"] == "id"
        assert "page 1" in str(info.value) and "page 3" in str(info.value)


def test_fields_missing_from_the_first_record_are_kept_and_mixed_types_named() -> None:
    records = [{"id": 1}, {"id": 2, "late": "kept"}]
    with serve({"/rows": lambda r: Reply.json({"data": records})}) as server:
        table = HTTPJSONSource(server.url("/rows")).read().table
        assert table.to_pylist() == [{"id": 1, "late": None}, {"id": 2, "late": "kept"}]
    mixed = [{"id": 1, "v": 1}, {"id": 2, "v": "two"}]
    with (
        serve({"/rows": lambda r: Reply.json({"data": mixed})}) as server,
        pytest.raises(InvalidInputError, match="'v'"),
    ):
        HTTPJSONSource(server.url("/rows")).read()


def test_headers_and_secret_params_are_sent_but_redacted_in_describe() -> None:
    with serve({"/rows": lambda r: Reply.json({"data": ROWS[:1]})}) as server:
        source = HTTPJSONSource(
            server.url("/rows") + "?api_key=s3cret-q",
            headers={"Authorization": "Bearer s3cret-h", "Accept": "application/json"},
            params={"token": "s3cret-p", "region": "eu"},
        )
        source.read()
        request = server.requests[0]
        assert request.header("authorization") == "Bearer s3cret-h"
        assert request.arg("token") == "s3cret-p"
        assert request.arg("api_key") == "s3cret-q"
        described = str(source.describe()) + repr(source)
        assert "s3cret" not in described
        assert source.describe()["headers"] == {
            "Authorization": "***",
            "Accept": "application/json",
        }
        assert source.describe()["params"] == {"token": "***", "region": "eu"}


def test_secrets_stay_out_of_errors() -> None:
    with serve({"/rows": lambda r: Reply.json({}, status=503)}) as server:
        source = HTTPJSONSource(
            server.url("/rows"), params={"access_token": "s3cret"}, retries=0, backoff=0
        )
        with pytest.raises(BackendUnavailableError) as info:
            source.read()
        assert "s3cret" not in str(info.value)
        assert "s3cret" not in str(info.value.to_dict())


def test_watermark_param_is_sent_and_rows_are_filtered_client_side() -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    rows = [{"id": i, "ts": (t0 + timedelta(hours=i)).isoformat()} for i in range(1, 6)]

    # A server that ignores the parameter: the client still returns only newer rows.
    with serve({"/rows": lambda r: Reply.json({"data": rows})}) as server:
        source = HTTPJSONSource(
            server.url("/rows"),
            column_types={"ts": "timestamp[us, tz=UTC]"},
            watermark_column="ts",
            watermark_param="since",
        )
        extract = source.read(after=t0 + timedelta(hours=3))
        assert extract.table["id"].to_pylist() == [4, 5]
        assert extract.watermark == t0 + timedelta(hours=5)
        assert server.requests[0].arg("since") == (t0 + timedelta(hours=3)).isoformat()


def test_max_pages_and_looping_pagination_are_errors_not_silent_truncation() -> None:
    def endless(request: Request) -> Reply:
        return Reply.json({"data": [{"id": 1}]})

    with serve({"/rows": endless}) as server, pytest.raises(InvalidInputError, match="max_pages=3"):
        HTTPJSONSource(server.url("/rows"), pagination="page", max_pages=3).read()
    with serve({"/rows": lambda r: Reply.json({"data": [{"id": 1}], "next": "/rows"})}) as s:
        with pytest.raises(InvalidInputError, match="loops"):
            HTTPJSONSource(s.url("/rows"), pagination="next_url").read()
        assert len(s.requests) == 1  # the first page pointed at itself


def test_construction_checks_its_arguments() -> None:
    with pytest.raises(InvalidInputError, match="pagination"):
        HTTPJSONSource("http://127.0.0.1/x", pagination="offset")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="http"):
        HTTPJSONSource("ftp://127.0.0.1/x")
    with pytest.raises(InvalidInputError, match="retries"):
        HTTPJSONSource("http://127.0.0.1/x", retries=-1)
    with pytest.raises(InvalidInputError, match="timeout"):
        HTTPJSONSource("http://127.0.0.1/x", timeout=0)
    with pytest.raises(InvalidInputError, match="watermark_param"):
        HTTPJSONSource("http://127.0.0.1/x", watermark_param="since")
