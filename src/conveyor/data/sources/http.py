"""JSON records over HTTP: pagination, timeouts and retries with backoff.

Each page's records (found at a dotted path such as ``data`` or
``result.items``) become Arrow; the pages' schemas are unified (a field that
first appears on page 3 is null before it, ints widen to floats) and a type
conflict names the column and the pages.

Retries follow the usual contract of HTTP APIs: connection errors, timeouts,
429 and 5xx are retried with exponential backoff and full jitter (a random
wait between 0 and ``backoff * 2**attempt``), never sooner than a
``Retry-After`` header asks; any other 4xx is the caller's mistake and fails
at once. When the retries run out the error is BackendUnavailableError
naming the URL.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urljoin, urlsplit

from conveyor.backends import BackendURL, unavailable
from conveyor.data.sources.base import BaseSource, Extract
from conveyor.data.sources.records import dig, parse_json, records_table
from conveyor.data.sources.redaction import REDACTED, is_secret_name, redact_headers, redact_url
from conveyor.errors import BackendUnavailableError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import httpx
    import pyarrow as pa

__all__ = ["HTTPJSONSource", "Pagination"]

Pagination = Literal["none", "next_url", "page", "cursor", "link"]
PAGINATIONS: tuple[str, ...] = get_args(Pagination)
SEAM = "data source"
_SNIPPET = 200


class HTTPJSONSource(BaseSource):
    """Records from a JSON API, page after page.

    ``pagination`` picks how the next page is found:

    - ``"none"``: one request.
    - ``"next_url"``: the body holds the next page's URL at ``next_path``
      (dotted); it stops when that is missing, null or empty.
    - ``"page"``: ``page_param`` counts up from ``page_start``; it stops at
      the first page with no records.
    - ``"cursor"``: the body holds a cursor at ``cursor_path``, sent back as
      the ``cursor_param`` query parameter; it stops when there is none.
    - ``"link"``: the ``Link`` header's ``rel="next"`` (RFC 8288).

    With ``watermark_param``, ``after`` is sent to the server as that query
    parameter (ISO 8601 for times); the rows are filtered again on the
    client, so a server that ignores it or compares inclusively still yields
    only newer rows. ``column_types`` casts columns after reading (JSON has
    no timestamps: ``{"ts": "timestamp[us, tz=UTC]"}``).
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        records: str = "data",
        pagination: Pagination = "none",
        next_path: str = "next",
        page_param: str = "page",
        page_start: int = 1,
        cursor_path: str = "next_cursor",
        cursor_param: str = "cursor",
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_pages: int = 10_000,
        column_types: Mapping[str, str] | None = None,
        watermark_column: str | None = None,
        watermark_param: str | None = None,
        name: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInputError(
                f"HTTP source {redact_url(url)!r} is not an http:// or https:// URL", field="url"
            )
        if pagination not in PAGINATIONS:
            raise InvalidInputError(
                f"HTTP source {redact_url(url)}: unknown pagination {pagination!r}; "
                f"expected one of {', '.join(PAGINATIONS)}",
                field="pagination",
            )
        for field, value, low in (
            ("timeout", timeout, 0.0),
            ("backoff", backoff, 0.0),
            ("max_backoff", max_backoff, 0.0),
        ):
            if (
                not isinstance(value, int | float)
                or value < low
                or (field == "timeout" and not value)
            ):
                raise InvalidInputError(
                    f"HTTP source {redact_url(url)}: {field} must be a positive number of "
                    f"seconds, got {value!r}",
                    field=field,
                )
        for field, count, low in (("retries", retries, 0), ("max_pages", max_pages, 1)):
            if not isinstance(count, int) or count < low:
                raise InvalidInputError(
                    f"HTTP source {redact_url(url)}: {field} must be an integer >= {low}, "
                    f"got {count!r}",
                    field=field,
                )
        if watermark_param is not None and watermark_column is None:
            raise InvalidInputError(
                f"HTTP source {redact_url(url)}: watermark_param needs a watermark_column",
                field="watermark_param",
            )
        self.url = url
        self.records = records
        self.pagination: Pagination = pagination
        self.next_path = next_path
        self.page_param = page_param
        self.page_start = page_start
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param
        self.params: dict[str, Any] = dict(params or {})
        self.headers: dict[str, str] = dict(headers or {})
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_pages = max_pages
        self.column_types: dict[str, str] = dict(column_types or {})
        self.watermark_column = watermark_column
        self.watermark_param = watermark_param
        self.name = name or (parts.netloc + parts.path).rstrip("/").replace("/", "_")
        if self.column_types:
            from conveyor.data.sources.tables import arrow_type

            for column, type_name in self.column_types.items():
                arrow_type(type_name, column=column)

    def describe(self) -> dict[str, Any]:
        paging: dict[str, Any] = {"style": self.pagination}
        if self.pagination == "next_url":
            paging["next_path"] = self.next_path
        elif self.pagination == "page":
            paging |= {"param": self.page_param, "start": self.page_start}
        elif self.pagination == "cursor":
            paging |= {"path": self.cursor_path, "param": self.cursor_param}
        return {
            "kind": self.kind,
            "name": self.name,
            "url": redact_url(self.url),
            "records": self.records,
            "pagination": paging,
            "params": {k: REDACTED if is_secret_name(k) else v for k, v in self.params.items()},
            "headers": redact_headers(self.headers),
            "column_types": dict(self.column_types) or None,
            "watermark_column": self.watermark_column,
            "watermark_param": self.watermark_param,
        }

    def _where(self) -> str:
        return f"HTTP source {redact_url(self.url)}"

    # -- reading ------------------------------------------------------------

    def read(self, *, after: Any | None = None) -> Extract:
        import httpx

        from conveyor.data.sources.tables import concat_unified

        self._check_after(after)
        pages: list[pa.Table] = []
        with httpx.Client(
            timeout=self.timeout, headers=self.headers, follow_redirects=True
        ) as client:
            requests = self._pages(client, after, pages)
        table = concat_unified(pages, what="page", where=self._where()) if pages else None
        table = self._typed(table)
        return self._extract(table, after=after, filtered=False, details={"pages": requests})

    def _pages(self, client: httpx.Client, after: Any | None, pages: list[pa.Table]) -> int:
        """Fetch every page into ``pages``; return how many requests succeeded."""
        from conveyor.data.sources.tables import plain

        url = self.url
        params = dict(self.params)
        if self.watermark_param is not None and after is not None:
            params[self.watermark_param] = plain(after)
        if self.pagination == "page":
            params[self.page_param] = self.page_start
        seen = {str(_target(url, params))}
        for number in range(1, self.max_pages + 1):
            response = self._get(client, url, params, number)
            shown = redact_url(str(response.url))
            body = parse_json(response.content, response.headers.get("content-type"), shown, number)
            records = dig(body, self.records, shown, number, what="records")
            if not isinstance(records, list):
                raise InvalidInputError(
                    f"{shown} (page {number}): {self.records or 'the body'!s} is a "
                    f"{type(records).__name__}, not a list of records",
                    url=shown,
                    page=number,
                )
            if records:
                pages.append(records_table(records, shown, number))
            following = self._next(response, body, records, params, shown, number)
            if following is None:
                return number
            url, params = following
            key = str(_target(url, params))
            if key in seen:
                raise InvalidInputError(
                    f"{shown} (page {number}) points back at a page already read "
                    f"({redact_url(key)}); the pagination loops",
                    url=shown,
                    page=number,
                )
            seen.add(key)
        raise InvalidInputError(
            f"{self._where()} has more than max_pages={self.max_pages} pages; raise max_pages "
            "(nothing was kept from this read)",
            field="max_pages",
        )

    def _next(
        self,
        response: httpx.Response,
        body: Any,
        records: list[Any],
        params: dict[str, Any],
        shown: str,
        number: int,
    ) -> tuple[str, dict[str, Any]] | None:
        """The URL and query of the next page, or None after the last."""
        style = self.pagination
        here = str(response.url)
        if style == "none":
            return None
        if style == "page":
            if not records:
                return None
            return self.url, {**params, self.page_param: int(params[self.page_param]) + 1}
        if style == "next_url":
            target = dig(body, self.next_path, shown, number, what="next URL", optional=True)
            if not target:
                return None
            if not isinstance(target, str):
                raise InvalidInputError(
                    f"{shown} (page {number}): the next URL at {self.next_path!r} is "
                    f"{target!r}, not a string",
                    url=shown,
                    page=number,
                )
            # The next URL carries its own query string.
            return urljoin(here, target), {}
        if style == "cursor":
            cursor = dig(body, self.cursor_path, shown, number, what="cursor", optional=True)
            if cursor is None or cursor == "":
                return None
            return self.url, {**params, self.cursor_param: cursor}
        link = response.links.get("next", {}).get("url")
        return (urljoin(here, link), {}) if link else None

    def _get(
        self, client: httpx.Client, url: str, params: dict[str, Any], page: int
    ) -> httpx.Response:
        import httpx

        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = client.get(_target(url, params))
            except httpx.TimeoutException:
                problem = f"no answer within the {self.timeout:g} s timeout"
            except httpx.UnsupportedProtocol as exc:
                raise InvalidInputError(f"{self._shown(url, params)}: {exc}", field="url") from None
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except httpx.RequestError as exc:  # too many redirects, undecodable content
                raise InvalidInputError(
                    f"{self._shown(url, params)} (page {page}): {exc}",
                    url=self._shown(url, params),
                    page=page,
                ) from None
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status != 429 and status < 500:
                    raise _refused(response, page)
                problem = f"HTTP {status} {response.reason_phrase}".strip()
                retry_after = _retry_after(response)
            if attempt >= self.retries:
                raise self._unavailable(url, params, page, attempt + 1, problem)
            if retry_after is not None and retry_after > self.max_backoff:
                raise self._unavailable(
                    url,
                    params,
                    page,
                    attempt + 1,
                    f"{problem}, and the server asks to wait {retry_after:g} s (Retry-After), "
                    f"longer than max_backoff={self.max_backoff:g} s",
                )
            time.sleep(self._delay(attempt, retry_after))
            attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads a crowd of retrying clients over the whole window.
        jitter = random.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**attempt))
        return max(jitter, retry_after or 0.0)

    def _shown(self, url: str, params: dict[str, Any]) -> str:
        return redact_url(str(_target(url, params)))

    def _unavailable(
        self,
        url: str,
        params: dict[str, Any],
        page: int,
        attempts: int,
        problem: str,
    ) -> BackendUnavailableError:
        shown = self._shown(url, params)
        reason = f"{problem} (page {page}, {attempts} attempt{'s' if attempts > 1 else ''})"
        error = unavailable(BackendURL.parse(shown), SEAM, reason)
        error.context.update(page=page, attempts=attempts)
        return error

    def _typed(self, table: pa.Table | None) -> pa.Table:
        """Apply ``column_types``; an empty read still has the declared columns."""
        import pyarrow as pa

        from conveyor.data.sources.tables import arrow_type, require_columns

        types = {c: arrow_type(t, column=c) for c, t in self.column_types.items()}
        if table is None:
            columns = {c: pa.array([], type=t) for c, t in types.items()}
            if self.watermark_column is not None and self.watermark_column not in columns:
                columns[self.watermark_column] = pa.array([], type=pa.null())
            return pa.table(columns)
        require_columns(table.schema, list(types), where=self._where())
        for column, kind in types.items():
            index = table.schema.get_field_index(column)
            try:
                table = table.set_column(index, column, table[column].cast(kind))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(
                    f"{self._where()}: column {column!r} cannot be read as {kind}: {exc}",
                    column=column,
                    type=str(kind),
                ) from exc
        return table


def _target(url: str, params: Mapping[str, Any]) -> httpx.URL:
    """``url`` with ``params`` added to (not replacing) its own query string."""
    import httpx

    target = httpx.URL(url)
    return target.copy_merge_params(dict(params)) if params else target


def _refused(response: httpx.Response, page: int) -> InvalidInputError | NotFoundError:
    shown = redact_url(str(response.url))
    status = f"{response.status_code} {response.reason_phrase}".strip()
    snippet = response.text[:_SNIPPET]
    context = {"url": shown, "page": page, "status": response.status_code}
    if response.status_code in (404, 410):
        return NotFoundError(f"{shown} (page {page}) answered {status}: {snippet!r}", **context)
    return InvalidInputError(
        f"{shown} (page {page}) refused the request with {status} (not retried: a 4xx other "
        f"than 429 will not change on its own): {snippet!r}",
        **context,
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait: ``Retry-After: 3`` or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
