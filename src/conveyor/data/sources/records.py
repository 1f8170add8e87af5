"""JSON response bodies to Arrow: decoding, dotted paths, records as a table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["dig", "parse_json", "records_table"]

_SNIPPET = 200


def parse_json(content: bytes, content_type: str | None, shown: str, page: int) -> Any:
    """The decoded body, or InvalidInputError naming the URL and the page."""
    import orjson

    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    try:
        # orjson refuses integers beyond 64 bits, which JSON allows.
        return json.loads(content)
    except ValueError as exc:
        snippet = content[:_SNIPPET].decode("utf-8", "replace")
        raise InvalidInputError(
            f"{shown} (page {page}) did not answer JSON ({exc}; content-type "
            f"{content_type or 'none'}): {snippet!r}",
            url=shown,
            page=page,
        ) from None


def dig(body: Any, path: str, shown: str, page: int, *, what: str, optional: bool = False) -> Any:
    """The value at a dotted path (``result.items``, ``pages.0.next``); "" is the body."""
    node = body
    walked: list[str] = []
    for part in (p for p in path.split(".") if p) if path else ():
        walked.append(part)
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isascii()
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        elif optional and (node is None or isinstance(node, Mapping)):
            return None
        else:
            keys = (
                f" (it has {', '.join(map(repr, list(node)[:20]))})"
                if isinstance(node, Mapping)
                else ""
            )
            raise InvalidInputError(
                f"{shown} (page {page}): no {what} at {'.'.join(walked)!r} in the JSON body{keys}",
                url=shown,
                page=page,
                path=path,
            )
    return node


def records_table(records: list[Any], shown: str, page: int) -> pa.Table:
    import pyarrow as pa

    # Table.from_pylist takes its columns from the first record only, so a
    # field missing there would be dropped; a struct array sees every record's keys.
    try:
        array = pa.array(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise _records_error(records, shown, page, exc) from exc
    if not pa.types.is_struct(array.type):
        raise InvalidInputError(
            f"{shown} (page {page}): the records are {array.type} values, not JSON objects",
            url=shown,
            page=page,
        )
    return pa.Table.from_struct_array(array)


def _records_error(
    records: list[Any], shown: str, page: int, exc: BaseException
) -> InvalidInputError:
    """Name the column whose values do not share one type (only on the error path)."""
    import pyarrow as pa

    if not all(isinstance(r, Mapping) for r in records):
        return InvalidInputError(
            f"{shown} (page {page}): some records are not JSON objects ({exc})",
            url=shown,
            page=page,
        )
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    for column in columns:
        try:
            pa.array([r.get(column) for r in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as inner:
            return InvalidInputError(
                f"{shown} (page {page}): column {column!r} mixes types: {inner}",
                url=shown,
                page=page,
                column=column,
            )
    return InvalidInputError(
        f"{shown} (page {page}): the records cannot be read: {exc}", url=shown, page=page
    )
