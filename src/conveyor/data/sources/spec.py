"""Sources from plain data: the ``source:`` block of a data set in ``conveyor.yaml``.

::

    datasets:
      transactions:
        source: {kind: csv, path: data/transactions.csv, watermark_column: ts}

:func:`source_from_spec` validates the block with pydantic and builds the
source; every mistake is a ConfigError naming the field under ``where``
(``datasets.transactions.source.pagination: Input should be ...``).
Relative paths (and relative ``sqlite:///`` URLs) are under the project
root. ``${VAR}`` in a URL, header or parameter is read from the environment,
so credentials stay out of the spec.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from conveyor.data.sources.base import Source
from conveyor.errors import ConfigError, ConveyorError

__all__ = ["CSVSpec", "HTTPSpec", "ParquetSpec", "SQLSpec", "SourceSpec", "source_from_spec"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, min_length=1, max_length=200, description="Names the source (and its watermark)."
    )
    watermark_column: str | None = Field(
        None, min_length=1, description="Read incrementally: rows past the stored watermark."
    )


class CSVSpec(_Common):
    kind: Literal["csv"]
    path: str = Field(min_length=1, description="The CSV file, relative to the project.")
    encoding: str = Field("utf-8", description="The file's text encoding.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="The field separator.")
    column_types: dict[str, str] | None = Field(
        None, description="Arrow type names by column, e.g. {ts: 'timestamp[us, tz=UTC]'}."
    )


class ParquetSpec(_Common):
    kind: Literal["parquet"]
    path: str = Field(
        min_length=1, description="A Parquet file or folder, relative to the project."
    )
    columns: list[str] | None = Field(None, description="Read only these columns.")


class SQLSpec(_Common):
    kind: Literal["sql"]
    url: str = Field(min_length=1, description="A SQLAlchemy URL; ${VAR} reads the environment.")
    table: str | None = Field(None, min_length=1, description="A table (or schema.table).")
    query: str | None = Field(None, min_length=1, description="A SELECT query.")
    chunk_size: int = Field(100_000, gt=0, description="Rows fetched per round trip.")

    @model_validator(mode="after")
    def _one_of_table_and_query(self) -> SQLSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table and query")
        return self


class HTTPSpec(_Common):
    kind: Literal["http"]
    url: str = Field(min_length=1, description="The first page's URL.")
    records: str = Field("data", description="Dotted path to the records list ('' = the body).")
    pagination: Literal["none", "next_url", "page", "cursor", "link"] = Field(
        "none",
        description="none: one page; next_url: the body names the next page's URL "
        "(next_path); page: a page number (page_param, from page_start); cursor: the body "
        "names a cursor (cursor_path) sent back as cursor_param; link: the Link header.",
    )
    next_path: str = Field(
        "next", min_length=1, description="Dotted path to the next page's URL (next_url)."
    )
    page_param: str = Field("page", min_length=1, description="The page number's parameter.")
    page_start: int = Field(1, description="The first page's number.")
    cursor_path: str = Field(
        "next_cursor", min_length=1, description="Dotted path to the next cursor (cursor)."
    )
    cursor_param: str = Field("cursor", min_length=1, description="The cursor's parameter.")
    params: dict[str, str | int | float | bool] | None = Field(
        None, description="Query parameters of every request; ${VAR} reads the environment."
    )
    headers: dict[str, str] | None = Field(
        None, description="Request headers (Authorization...); ${VAR} reads the environment."
    )
    timeout: float = Field(10.0, gt=0, description="Seconds per request.")
    retries: int = Field(
        3, ge=0, description="Retries of a request that failed (network, timeout, 429, 5xx)."
    )
    backoff: float = Field(
        0.5, ge=0, description="Retry n waits up to backoff * 2**n seconds (full jitter)."
    )
    max_backoff: float = Field(30.0, ge=0, description="Longest wait between retries, seconds.")
    max_pages: int = Field(10_000, ge=1, description="Pages read at most (a runaway guard).")
    column_types: dict[str, str] | None = Field(
        None, description="Arrow type names by column, e.g. {amount: double}."
    )
    watermark_param: str | None = Field(
        None,
        min_length=1,
        description="Sends the stored watermark as this parameter, so the server filters.",
    )


SourceSpec = Annotated[CSVSpec | ParquetSpec | SQLSpec | HTTPSpec, Field(discriminator="kind")]

_ADAPTER: TypeAdapter[Any] | None = None


def _adapter() -> TypeAdapter[Any]:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(SourceSpec)
    return _ADAPTER


def source_from_spec(
    spec: Mapping[str, Any],
    *,
    root: str | os.PathLike[str],
    where: str = "source",
    name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Source:
    """The source a spec block describes; ConfigError naming ``where.<field>`` if it is wrong.

    ``name`` is the default name (the data set's) when the block has none.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping such as {{kind: csv, path: data/x.csv}}, "
            f"got {type(spec).__name__}",
            field=where,
        )
    try:
        parsed = _adapter().validate_python(dict(spec))
    except ValidationError as exc:
        raise _explain(exc, where, spec) from None
    root = Path(root)
    env = os.environ if env is None else env
    try:
        return _build(parsed, root, where, name, env)
    except ConfigError:
        raise
    except ConveyorError as exc:
        # A value pydantic let through but the source refused (an unknown encoding, a type name).
        field = exc.context.get("field") or exc.context.get("column")
        dotted = f"{where}.{field}" if isinstance(field, str) else where
        raise ConfigError(f"{dotted}: {exc.message}", field=dotted) from None


def _build(
    parsed: Any, root: Path, where: str, default_name: str | None, env: Mapping[str, str]
) -> Source:
    common = {"watermark_column": parsed.watermark_column, "name": parsed.name or default_name}
    if isinstance(parsed, CSVSpec):
        from conveyor.data.sources.files import CSVSource

        return CSVSource(
            _under(root, parsed.path),
            encoding=parsed.encoding,
            delimiter=parsed.delimiter,
            column_types=parsed.column_types,
            **common,
        )
    if isinstance(parsed, ParquetSpec):
        from conveyor.data.sources.files import ParquetSource

        return ParquetSource(_under(root, parsed.path), columns=parsed.columns, **common)
    if isinstance(parsed, SQLSpec):
        from conveyor.data.sources.sql import SQLSource

        url = _expand(parsed.url, env, f"{where}.url")
        return SQLSource(
            _sqlite_under(root, url),
            table=parsed.table,
            query=parsed.query,
            chunk_size=parsed.chunk_size,
            **common,
        )
    from conveyor.data.sources.http import HTTPJSONSource

    assert isinstance(parsed, HTTPSpec)
    headers = {
        key: _expand(value, env, f"{where}.headers.{key}")
        for key, value in (parsed.headers or {}).items()
    }
    params = {
        key: _expand(value, env, f"{where}.params.{key}") if isinstance(value, str) else value
        for key, value in (parsed.params or {}).items()
    }
    return HTTPJSONSource(
        _expand(parsed.url, env, f"{where}.url"),
        records=parsed.records,
        pagination=parsed.pagination,
        next_path=parsed.next_path,
        page_param=parsed.page_param,
        page_start=parsed.page_start,
        cursor_path=parsed.cursor_path,
        cursor_param=parsed.cursor_param,
        params=params,
        headers=headers,
        timeout=parsed.timeout,
        retries=parsed.retries,
        backoff=parsed.backoff,
        max_backoff=parsed.max_backoff,
        max_pages=parsed.max_pages,
        column_types=parsed.column_types,
        watermark_param=parsed.watermark_param,
        **common,
    )


def _under(root: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def _sqlite_under(root: Path, url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    location = url[len(prefix) :].split("?", 1)
    if not location[0] or location[0].startswith("/") or location[0] == ":memory:":
        return url
    resolved = str(_under(root, location[0]).resolve())
    return prefix + resolved + (f"?{location[1]}" if len(location) > 1 else "")


def _expand(text: str, env: Mapping[str, str], field: str) -> str:
    def value(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in env:
            raise ConfigError(
                f"{field}: the environment variable ${variable} is not set", field=field
            )
        return env[variable]

    return _ENV.sub(value, text)


def _explain(exc: ValidationError, where: str, spec: Mapping[str, Any]) -> ConfigError:
    kind = spec.get("kind")
    problems: list[str] = []
    fields: list[str] = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["kind"]
            message = "expected one of csv, parquet, sql, http" + (
                f", got {kind!r}" if kind is not None else " (the field is missing)"
            )
        else:
            # The discriminated union puts the tag first: ("http", "pagination").
            if loc and loc[0] == kind:
                loc = loc[1:]
            message = error["msg"].removeprefix("Value error, ")
            given = error.get("input")
            if error["type"] not in ("missing", "extra_forbidden") and isinstance(
                given, str | int | float
            ):
                message += f", got {given!r}"
            if error["type"] == "extra_forbidden":
                models: dict[str, type[BaseModel]] = {
                    "csv": CSVSpec,
                    "parquet": ParquetSpec,
                    "sql": SQLSpec,
                    "http": HTTPSpec,
                }
                model = models.get(str(kind), HTTPSpec)
                message = f"unknown field; expected one of: {', '.join(model.model_fields)}"
        dotted = ".".join([where, *loc])
        fields.append(dotted)
        problems.append(f"{dotted}: {message}")
    return ConfigError("; ".join(problems), field=fields[0] if fields else where, fields=fields)
