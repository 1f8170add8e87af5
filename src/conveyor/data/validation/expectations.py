"""Expectations: what a batch of data must satisfy, declared as data.

Each expectation is a frozen pydantic model with a ``kind``. They come from
``conveyor.yaml`` as plain mappings (:func:`parse_expectations`) or are built
in Python (``Between(column="amount", min=0, max=50_000)``). Every one has a
``name`` (derived when not given: ``amount.between``, ``row_count``) that
names its check in the report and its reason in quarantine, and a
``severity``: a failed ``warning`` is reported but neither fails the report
nor sends rows to quarantine.

Row-level kinds judge each row and carry ``mostly``, the fraction of rows
that must pass for the check to pass (default 1.0: every row):

============== =====================================================================
``not_null``   the value is present (a NaN in a float column counts as missing)
``between``    ``min <= value <= max`` (``strict_min`` / ``strict_max`` for ``<``)
``in_set``     the value is one of ``values``
``matches_regex`` the value contains a match of ``pattern`` (anchor it with ``^...$``
               for a full match; RE2 syntax, as DuckDB runs it: no look-around)
``unique``     no other row has the same value of ``column`` (or of all ``columns``)
``custom``     ``check(table)`` returns True for the row (see :class:`Custom`)
============== =====================================================================

Nulls are explicit: a missing value (SQL null, or NaN in a float column) is
not a failure of ``between``, ``in_set``, ``matches_regex`` or ``unique``;
``not_null`` is the expectation that catches it. Rows whose key holds a
missing value are never duplicates of each other.

Batch-level kinds judge the batch as a whole; when one fails, the quarantine
policy rejects the whole batch:

============== =====================================================================
``schema``     expected columns with Arrow type names, nullability, extra columns
``row_count``  ``min <= rows <= max``
``freshness``  the newest value of a timestamp ``column`` is at most ``max_lag`` old
============== =====================================================================

More row-level kinds plug in with ``EXPECTATION_KINDS.register(kind, cls)``:
``cls`` subclasses :class:`RowExpectation`, declares ``kind: Literal["kind"]``
and its parameters, and says in SQL which rows fail (:meth:`RowExpectation.failure_sql`);
a spec then names it like a built-in kind.
"""

from __future__ import annotations

import importlib
import re
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from conveyor._names import NameTable
from conveyor.errors import ConfigError

__all__ = [
    "BATCH_KINDS",
    "EXPECTATION_KINDS",
    "ROW_KINDS",
    "Between",
    "ColumnSpec",
    "Custom",
    "Expectation",
    "Freshness",
    "InSet",
    "MatchesRegex",
    "NotNull",
    "RowCount",
    "RowExpectation",
    "Schema",
    "Unique",
    "parse_duration",
    "parse_expectations",
]

ROW_KINDS = ("not_null", "between", "in_set", "matches_regex", "unique", "custom")
BATCH_KINDS = ("schema", "row_count", "freshness")

#: A bound of ``between``: a number, a date or timestamp, or a string (compared as
#: text with a string column, or read as an ISO timestamp by a timestamp column).
Bound: TypeAlias = int | float | datetime | date | str
Scalar: TypeAlias = bool | int | float | datetime | date | str


class _Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    kind: str
    name: str = Field("", description="names the check and the quarantine reason")
    severity: Literal["error", "warning"] = Field(
        "error",
        description="error: a failure fails the batch; warning: it is reported, nothing more",
    )

    row_level: ClassVar[bool] = False

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if value != value.strip() or ";" in value or len(value) > 300:
            raise ValueError(
                "a name has no leading or trailing spaces, no ';' (it separates "
                "reasons in quarantine) and at most 300 characters"
            )
        return value

    @model_validator(mode="after")
    def _derive_name(self) -> _Expectation:
        if not self.name:
            # Frozen model: the derived default is set once, while validating.
            object.__setattr__(self, "name", self.default_name())
        return self

    def default_name(self) -> str:
        column = getattr(self, "column", None)
        return f"{column}.{self.kind}" if column else self.kind

    @property
    def columns_used(self) -> tuple[str, ...]:
        """The data columns this expectation reads."""
        column = getattr(self, "column", None)
        return (column,) if column else ()


class _RowExpectation(_Expectation):
    column: str = Field(min_length=1)
    mostly: float = Field(1.0, ge=0.0, le=1.0, description="fraction of rows that must pass")

    row_level: ClassVar[bool] = True


class RowExpectation(_RowExpectation):
    """The base of a row-level kind added with ``EXPECTATION_KINDS.register``.

    ::

        class Positive(RowExpectation):
            kind: Literal["positive"] = "positive"

            def failure_sql(self, column, category):
                return f"{column} <= 0"

        EXPECTATION_KINDS.register("positive", Positive)
        validate(batch, [{"kind": "positive", "column": "amount"}], subject="tx")

    ``column`` and ``mostly`` come with it; add the kind's parameters as fields.
    """

    @abstractmethod
    def failure_sql(self, column: str, category: str) -> str:
        """A DuckDB boolean expression, TRUE where a row breaks this expectation.

        ``column`` is the quoted, qualified column reference (``s."amount"``);
        ``category`` what it holds (``number``, ``float``, ``string``,
        ``timestamp``, ``date``, ``bool`` or ``other``). FALSE or NULL means the
        row passes, so a missing value passes unless the expression says
        otherwise (``not_null`` is the kind that catches those). Render literals
        with :func:`conveyor.data.validation.plan.literal`, never by pasting text.
        """

    def phrase(self) -> str:
        """How the report's detail says what the failing rows did (``"are negative"``)."""
        return f"fail {self.kind}"


class NotNull(_RowExpectation):
    """The value is present (a NaN in a float column counts as missing)."""

    kind: Literal["not_null"] = "not_null"


class Between(_RowExpectation):
    """``min <= value <= max`` (``strict_min`` / ``strict_max`` for ``<``); either bound may
    be left out. Bounds are numbers, dates, timestamps or strings, as the column holds."""

    kind: Literal["between"] = "between"
    min: Bound | None = None
    max: Bound | None = None
    strict_min: bool = False
    strict_max: bool = False

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a bound is a number, a date, a timestamp or a string, not a bool")
        if isinstance(value, float) and value != value:
            raise ValueError("a bound cannot be NaN")
        return value

    @model_validator(mode="after")
    def _some_bound(self) -> Between:
        if self.min is None and self.max is None:
            raise ValueError("between needs min, max or both")
        if self.min is not None and self.max is not None:
            try:
                inverted = self.min > self.max  # type: ignore[operator]
            except TypeError:  # a string and a timestamp, say: the column decides
                inverted = False
            if inverted:
                raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        return self


class InSet(_RowExpectation):
    """The value is one of ``values``."""

    kind: Literal["in_set"] = "in_set"
    values: list[Scalar] = Field(min_length=1)


class MatchesRegex(_RowExpectation):
    """The value contains a match of ``pattern`` (anchor it with ``^...$`` for a full match;
    RE2 syntax, as DuckDB runs it: no look-around)."""

    kind: Literal["matches_regex"] = "matches_regex"
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class Unique(_Expectation):
    """No two rows share a value of ``column`` (or the same values of all ``columns``)."""

    kind: Literal["unique"] = "unique"
    column: str | None = Field(None, min_length=1)
    columns: list[str] | None = Field(None, min_length=1)
    mostly: float = Field(1.0, ge=0.0, le=1.0)

    row_level: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_key(self) -> Unique:
        if (self.column is None) == (self.columns is None):
            raise ValueError("unique takes either column or columns (a list), not both")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns lists a column twice: {self.columns}")
        return self

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.column,) if self.column is not None else tuple(self.columns or ())

    @property
    def columns_used(self) -> tuple[str, ...]:
        return self.keys

    def default_name(self) -> str:
        return f"{'+'.join(self.keys)}.unique"


class Custom(_Expectation):
    """A vectorized check written in Python.

    ``check`` receives the batch as a :class:`pyarrow.Table` (only ``columns``
    when they are given, which saves memory for wide data) and returns a
    boolean array with one entry per row (pyarrow, numpy or a list): True
    where the row passes; False or null where it fails. It may also be given
    as an import string, ``"package.module:function"``. Custom checks run in
    memory: a Parquet file validated with one is read into Arrow first.
    """

    kind: Literal["custom"] = "custom"
    name: str = Field(min_length=1)
    check: Callable[[Any], Any]
    column: str | None = Field(None, min_length=1, description="for the report only")
    columns: list[str] | None = None
    mostly: float = Field(1.0, ge=0.0, le=1.0)

    row_level: ClassVar[bool] = True

    @field_validator("check", mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _import_callable(value)
        return value

    @property
    def columns_used(self) -> tuple[str, ...]:
        return tuple(self.columns or ())


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: str = Field(min_length=1, description="an Arrow type name: int64, string, ...")
    nullable: bool = True


class Schema(_Expectation):
    """The columns a batch must have, with their Arrow type names (see below).

    ``columns`` is a list of ``{name, type, nullable}`` (the shape
    :func:`conveyor.data.schema.schema_of` writes) or a mapping of name to
    type. Types are Arrow type names (``int64``, ``double``, ``string``,
    ``timestamp[us, tz=UTC]``); common aliases (``float64``, ``str``, ``int``)
    are accepted. ``float`` is Arrow's float32: a float64 column (what CSV, pandas and
    numpy give) is ``double``, or ``float64``. ``nullable: false`` fails the batch when
    the column holds a null; ``extra_columns: false`` fails it when it has columns not
    listed.
    """

    kind: Literal["schema"] = "schema"
    columns: list[ColumnSpec] = Field(min_length=1)
    extra_columns: bool = True

    @field_validator("columns", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [{"name": k, "type": v} for k, v in value.items()]
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Schema:
        names = [c.name for c in self.columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"columns listed twice: {', '.join(twice)}")
        return self

    @property
    def columns_used(self) -> tuple[str, ...]:
        return ()


class RowCount(_Expectation):
    """``min <= rows <= max`` for the whole batch; either bound may be left out."""

    kind: Literal["row_count"] = "row_count"
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> RowCount:
        if self.min is None and self.max is None:
            raise ValueError("row_count needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class Freshness(_Expectation):
    """The newest ``column`` value is at most ``max_lag`` before ``now``.

    ``max_lag`` is seconds, a :class:`~datetime.timedelta`, or text such as
    ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1h30m"``. Timestamps without
    a time zone are read as UTC; a date column counts as midnight UTC.
    """

    kind: Literal["freshness"] = "freshness"
    column: str = Field(min_length=1)
    max_lag: float = Field(gt=0, description="seconds, or text: 90s, 15m, 2h, 1d, 1h30m")

    @field_validator("max_lag", mode="before")
    @classmethod
    def _lag(cls, value: Any) -> Any:
        return parse_duration(value)


#: Any expectation: a built-in kind, or a row-level kind added with ``EXPECTATION_KINDS``.
#: (A spec's mappings are read by :func:`parse_expectations`, through that table.)
Expectation: TypeAlias = (
    Schema
    | NotNull
    | Between
    | InSet
    | MatchesRegex
    | Unique
    | RowCount
    | Freshness
    | Custom
    | RowExpectation
)

_BUILT_IN: tuple[type[_Expectation], ...] = (
    Schema,
    RowCount,
    Freshness,
    NotNull,
    Between,
    InSet,
    MatchesRegex,
    Unique,
    Custom,
)


def _check_kind(kind: str, cls: type[_Expectation]) -> None:
    """A kind's class validates the mappings that name it, and the engine can run it."""
    if not isinstance(cls, type) or not issubclass(cls, _Expectation):
        raise ConfigError(
            f"expectation kind {kind!r}: expected a RowExpectation subclass, got {cls!r}",
            field="kind",
        )
    if cls not in _BUILT_IN and not issubclass(cls, RowExpectation):
        raise ConfigError(
            f"expectation kind {kind!r}: {cls.__name__} must subclass RowExpectation "
            "(added kinds are row-level and say in SQL which rows fail)",
            field="kind",
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(
            f"expectation kind {kind!r}: {cls.__name__} must define {missing} "
            "(the DuckDB expression that is TRUE where a row fails)",
            field="kind",
        )
    declared = cls.model_fields["kind"].default
    if declared != kind:
        raise ConfigError(
            f"expectation kind {kind!r}: {cls.__name__}.kind defaults to {declared!r}; declare "
            f'kind: Literal["{kind}"] = "{kind}"',
            field="kind",
        )


#: Every expectation kind a spec may name, by ``kind``; register more (see the module).
EXPECTATION_KINDS: NameTable[type[_Expectation]] = NameTable(
    "kind",
    ((c.model_fields["kind"].default, c) for c in _BUILT_IN),
    error=ConfigError,
    field="kind",
    check=_check_kind,
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_expectations(
    items: Sequence[Mapping[str, Any] | _Expectation], *, where: str = "expectations"
) -> list[Expectation]:
    """Expectation objects from plain mappings (objects pass through).

    Raises :class:`ConfigError` naming the index and the field, for example
    ``datasets.tx.expectations[3].min: Input should be a valid number``, and
    when two expectations share a name (give one a ``name``).
    """
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):  # type: ignore[unreachable]
        raise ConfigError(
            f"{where}: expected a list of expectations, got {type(items).__name__}", field=where
        )
    parsed: list[Expectation] = []
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if isinstance(item, _Expectation):
            parsed.append(item)  # type: ignore[arg-type]
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{at}: an expectation is a mapping with a 'kind', got {type(item).__name__}",
                field=at,
            )
        kind = item.get("kind")
        if kind is None:
            raise ConfigError(
                f"{at}.kind: no kind; known: {', '.join(EXPECTATION_KINDS)}", field=f"{at}.kind"
            )
        if not isinstance(kind, str) or kind not in EXPECTATION_KINDS:
            raise EXPECTATION_KINDS.unknown(kind, where=f"{at}.kind", field=f"{at}.kind")
        try:
            parsed.append(EXPECTATION_KINDS[kind].model_validate(dict(item)))  # type: ignore[arg-type]
        except ValidationError as exc:
            raise _config_error(exc, at) from None
    check_names(parsed, where=where)
    return parsed


def check_names(expectations: Sequence[_Expectation], *, where: str = "expectations") -> None:
    """Names are reasons in quarantine: two expectations may not share one."""
    seen: dict[str, int] = {}
    for index, expectation in enumerate(expectations):
        if expectation.name in seen:
            raise ConfigError(
                f"{where}[{index}].name: {expectation.name!r} is also the name of "
                f"{where}[{seen[expectation.name]}]; give one of them its own 'name'",
                field=f"{where}[{index}].name",
            )
        seen[expectation.name] = index


def parse_duration(value: Any) -> float:
    """Seconds from a number, a timedelta, or text like ``"2h"``, ``"1d"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is seconds, a timedelta or text like '2h', not a bool")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip()
        parts = list(_DURATION.finditer(text))
        if not parts or "".join(p.group(0) for p in parts).replace(" ", "") != text.replace(
            " ", ""
        ):
            raise ValueError(
                f"{value!r} is not a duration: use seconds or text like '90s', '15m', '2h', "
                "'1d', '1h30m'"
            )
        seconds = sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2).lower()] for p in parts)
    else:
        raise ValueError(f"a duration is seconds or text like '2h', got {type(value).__name__}")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be positive and finite, got {value!r}")
    return seconds


def _import_callable(reference: str) -> Callable[[Any], Any]:
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{reference!r} is not an import string: use 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {reference!r}: {exc}") from exc
    if not callable(target):
        raise ValueError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


def _config_error(exc: ValidationError, at: str) -> ConfigError:
    problems: list[str] = []
    first_field = at
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        field = at + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)
        if len(problems) == 0:
            first_field = field
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{field}: {message}")
    return ConfigError("; ".join(problems), field=first_field)
