"""The reference of every setting of ``conveyor.yaml``, read off the assembled spec model.

The spec is assembled from the foundation's sections and each installed
capability's (:func:`conveyor.config.spec_model`), so its reference is too:
``conveyor spec`` prints it, ``docs/spec.md`` holds Conveyor's own, and a
capability installed later adds its rows. Each row names the field's path,
its type, its default, the environment variable that overrides it and what
it means::

    for setting in settings():
        print(setting.path, setting.variable)   # serving.port CONVEYOR_SERVING__PORT

A mapping of named entries (``models:``, ``datasets:``) is written with a
``<name>`` placeholder: ``models.<name>.holdout.fraction`` is set by
``CONVEYOR_MODELS__FRAUD__HOLDOUT__FRACTION`` for the model ``fraud``.
Lists and free-form mappings are set from the environment as JSON.

Some fields hold entries named by a kind or a name, each with options of its
own: a data set's ``source`` (``kind: csv``...), its ``expectations``, a
model's ``gates``, the metric names gates and ``slos.quality`` take, the
column type names of a ``schema`` expectation. Each is a :class:`Part` of
the reference, read off the models and the tables (:class:`conveyor._names.NameTable`)
that define them, so a kind, a gate or a metric registered at run time is
listed too::

    for part in parts():
        print(part.name, part.field)     # gates models.<name>.gates
    print(markdown("metrics"))           # a Markdown table, as docs/spec.md holds it

A part whose capability is not installed is left out. :data:`PARTS` takes
more (``PARTS.register("notes", Part(...))``).
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from conveyor._names import NameTable
from conveyor.backends import BackendURL
from conveyor.config import ENV_PREFIX, spec_model

__all__ = [
    "PARTS",
    "PLACEHOLDER",
    "Part",
    "Setting",
    "markdown",
    "markdown_table",
    "parts",
    "settings",
    "update_markdown",
]

#: Stands for an entry's name in a mapping of named entries (``models.<name>.target``).
PLACEHOLDER = "<name>"


@dataclass(frozen=True, slots=True)
class Setting:
    """One field of ``conveyor.yaml``."""

    path: str
    type: str
    default: str
    variable: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def settings() -> list[Setting]:
    """Every leaf field of the spec, in the order the spec declares them (``root``, which
    Conveyor fills in from where the file is, excepted)."""
    return list(_walk(spec_model(), ()))


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[Setting]:
    for name, info in model.model_fields.items():
        if not path and name == "root":
            continue
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("retired"):
            continue  # kept only to say where the setting went
        here = (*path, name)
        inner = _nested_model(info.annotation)
        if inner is not None:
            yield from _walk(inner, here)
            continue
        entries = _named_entries(info.annotation)
        if entries is not None:
            yield from _walk(entries, (*here, PLACEHOLDER))
            continue
        yield Setting(
            path=".".join(here),
            type=_type_name(info.annotation),
            default=_default(info),
            variable=_variable(here),
            description=" ".join((info.description or "").split()),
        )


def _variable(path: tuple[str, ...]) -> str:
    if path == ("project",):
        return f"{ENV_PREFIX}PROJECT"
    if len(path) == 2 and path[0] == "backends":
        return f"{ENV_PREFIX}{path[1].upper()}"  # the short form of CONVEYOR_BACKENDS__<SEAM>
    parts = ("NAME" if part == PLACEHOLDER else part.upper() for part in path)
    return ENV_PREFIX + "__".join(parts)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``BatchingSpec`` for ``batching: BatchingSpec``, or for an
    optional ``quality: QualitySLO | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(found) == 1:
            return _nested_model(found[0])
    return None


def _named_entries(annotation: Any) -> type[BaseModel] | None:
    """The entries' model of ``dict[str, Model]`` (``models:``, ``datasets:``), if that."""
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[0] is str:
            return _nested_model(args[1])
    return None


def _type_name(annotation: Any, *, json: bool = True) -> str:
    """How the reference names a type; ``json``: lists and mappings are JSON in a variable."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg, json=json) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0], json=json)
    if origin is list:
        if json:
            return "list (JSON)"
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list of {_type_name(item, json=False)}"
    if origin is dict:
        return "mapping (JSON)" if json else "mapping"
    if origin is collections.abc.Callable:
        return "callable (module:function)"
    if not json and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    if annotation is type(None):
        return "null"
    if annotation is BackendURL:
        return "URL"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "null"
    if isinstance(value, BackendURL):
        return value.render(hide_password=True)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def markdown_table() -> str:
    """The reference as a Markdown table (``docs/spec.md`` holds Conveyor's own)."""
    return _markdown(
        ("field", "type", "default", "environment", "meaning"),
        (
            (
                f"`{s.path}`",
                s.type,
                f"`{s.default}`",
                f"`{s.variable}`",
                s.description,
            )
            for s in settings()
        ),
    )


def _markdown(
    columns: Iterable[str], rows: Iterable[Iterable[str]], code: Iterable[str] = ()
) -> str:
    names = list(columns)
    as_code = [name in set(code) for name in names]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = (
            ", ".join(f"`{v}`" for v in _items(c)) if is_code and c else c
            for c, is_code in zip(row, as_code, strict=True)
        )
        # A pipe inside a cell (``str | None``), even in a code span, must be escaped.
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _items(cell: str) -> list[str]:
    """The values of a cell listing several (``int, integer``), each shown as code: a comma
    inside brackets (``timestamp[us, tz=UTC]``) is part of its value."""
    found, depth, start = [], 0, 0
    for i, char in enumerate(cell):
        depth += (char in "([{<") - (char in ")]}>")
        if depth == 0 and cell.startswith(", ", i):
            found.append(cell[start:i])
            start = i + 2
    return [*found, cell[start:]]


# -- parts: the entries a field names by kind or by name ---------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """A table of the reference beyond the settings: what one field's entries may be.

    ``rows`` builds the table from the code that defines the entries (importing
    it: ``ImportError`` when its capability is not installed leaves the part
    out); each row has one cell per column.
    """

    name: str
    title: str
    field: str
    """The setting (or settings) whose entries this part lists."""
    columns: tuple[str, ...]
    rows: Callable[[], list[tuple[str, ...]]]
    code: tuple[str, ...] = ()
    """The columns whose cells Markdown shows as code (names, defaults)."""

    def items(self) -> list[dict[str, str]]:
        """The rows as mappings of column -> cell (``conveyor spec PART --json``)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows()]


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def _paragraphs(obj: Any) -> list[str]:
    """The paragraphs of ``obj``'s own docstring (not one it inherits), each on one line and
    in Markdown (````code```` -> ```code```)."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    text = inspect.cleandoc(own) if isinstance(own, str) else ""
    return [" ".join(p.replace("``", "`").split()) for p in text.split("\n\n") if p.strip()]


def _words(info: FieldInfo) -> str:
    return " ".join((info.description or "").split())


def _options(model: type[BaseModel], skip: Iterable[str] = ()) -> list[tuple[str, FieldInfo]]:
    left_out = {"kind", *skip}
    return [(n, f) for n, f in model.model_fields.items() if n not in left_out and not f.exclude]


def _option_cell(name: str, info: FieldInfo) -> str:
    default = _default(info)
    shown = "required" if default == "required" else f"default `{default}`"
    words = f" ({_words(info)})" if info.description else ""
    return f"`{name}`: {_type_name(info.annotation, json=False)}, {shown}{words}"


def _kind_of(model: type[BaseModel]) -> str:
    info = model.model_fields["kind"]
    if typing.get_origin(info.annotation) is Literal:
        return str(typing.get_args(info.annotation)[0])
    return str(info.default)


def _source_rows() -> list[tuple[str, ...]]:
    union = _load("conveyor.data.sources.spec:SourceSpec")
    while typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    rows: list[tuple[str, ...]] = []
    for model in typing.get_args(union):
        kind = _kind_of(model)
        for name, info in _options(model):
            rows.append(
                (kind, name, _type_name(info.annotation, json=False), _default(info), _words(info))
            )
    return rows


def _expectation_rows() -> list[tuple[str, ...]]:
    kinds: NameTable[Any] = _load("conveyor.data.validation.expectations:EXPECTATION_KINDS")
    models = list(kinds.values())
    # Options every kind takes (name, severity) are listed once, and again only for a kind
    # whose default differs (custom's name is required).
    shared = {
        name: info
        for name, info in _options(models[0])
        if all(name in m.model_fields for m in models)
    }
    rows: list[tuple[str, ...]] = [
        (
            "",
            "",
            "; ".join(_option_cell(n, i) for n, i in shared.items()),
            "Options every kind takes.",
        )
    ]
    for kind, model in kinds.items():
        options = [
            (n, i)
            for n, i in _options(model)
            if n not in shared or _default(i) != _default(shared[n])
        ]
        rows.append(
            (
                kind,
                "row" if model.row_level else "batch",
                "; ".join(_option_cell(n, i) for n, i in options) or "none",
                next(iter(_paragraphs(model)), ""),
            )
        )
    return rows


#: The Arrow types a schema expectation names most (the spelling is Arrow's ``str(type)``).
_ARROW_TYPES = (
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "string",
    "large_string",
    "binary",
    "date32",
    "null",
)


def _type_rows() -> list[tuple[str, ...]]:
    import pyarrow as pa

    # The data layer's aliases of Arrow type names (float64 -> double).
    outcomes = importlib.import_module("conveyor.data.validation.outcomes")
    aliases: dict[str, str] = outcomes._ALIASES
    found = [getattr(pa, name)() for name in _ARROW_TYPES]
    found += [
        pa.decimal128(10, 2),
        pa.timestamp("us"),
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("ns"),
        pa.duration("us"),
    ]
    rows: list[tuple[str, ...]] = []
    for arrow_type in found:
        name = str(arrow_type)
        also = [a for a, target in aliases.items() if target == name]
        rows.append((name, ", ".join(also), _numpy_name(arrow_type)))
    return rows


def _numpy_name(arrow_type: Any) -> str:
    import numpy as np

    try:
        dtype = arrow_type.to_pandas_dtype()
    except (NotImplementedError, TypeError):
        return "object"
    try:
        return str(np.dtype(dtype).name)
    except TypeError:
        return str(dtype)  # pandas' own: datetime64[us, UTC]


_READS = {"label": "predicted labels", "score": "scores (probabilities)", "value": "predictions"}


def _metric_rows() -> list[tuple[str, ...]]:
    metrics: NameTable[Any] = _load("conveyor.checks.metrics:METRICS")
    return [
        (
            name,
            ", ".join(m.tasks),
            _READS.get(m.needs, m.needs),
            "higher (maximize)" if m.greater_is_better else "lower (minimize)",
        )
        for name, m in metrics.items()
    ]


def _gate_rows() -> list[tuple[str, ...]]:
    gates: NameTable[Any] = _load("conveyor.training.flow:GATES")
    rows: list[tuple[str, ...]] = []
    for name, builder in gates.items():
        paragraphs = _paragraphs(builder)
        options = next((p for p in paragraphs if p.startswith("Options:")), "")
        meaning = next((p for p in paragraphs if not p.startswith("Options:")), "")
        rows.append((name, options.removeprefix("Options:").strip() or "none", meaning))
    return rows


#: Every part of the reference by name; register more (a capability's kinds of entries).
PARTS: NameTable[Part] = NameTable(
    "part of the spec reference",
    {
        "sources": Part(
            "sources",
            "Data set sources",
            "datasets.<name>.source",
            ("kind", "option", "type", "default", "meaning"),
            _source_rows,
            code=("kind", "option", "default"),
        ),
        "expectations": Part(
            "expectations",
            "Expectation kinds",
            "datasets.<name>.expectations",
            ("kind", "level", "options", "meaning"),
            _expectation_rows,
            code=("kind",),
        ),
        "types": Part(
            "types",
            "Column type names",
            "datasets.<name>.expectations[].columns[].type (kind: schema)",
            ("type name", "also accepted", "numpy dtype"),
            _type_rows,
            code=("type name", "also accepted", "numpy dtype"),
        ),
        "metrics": Part(
            "metrics",
            "Metrics",
            "slos.quality.metric, the metric option of gates",
            ("metric", "tasks", "reads", "better"),
            _metric_rows,
            code=("metric",),
        ),
        "gates": Part(
            "gates",
            "Gates",
            "models.<name>.gates",
            ("gate", "options", "meaning"),
            _gate_rows,
            code=("gate",),
        ),
    },
)


def parts() -> list[Part]:
    """The parts whose capability is installed, in :data:`PARTS` order."""
    found = []
    for part in PARTS.values():
        try:
            part.rows()
        except ImportError:
            continue
        found.append(part)
    return found


def markdown(name: str) -> str:
    """A part of the reference as a Markdown table (``docs/spec.md`` holds Conveyor's own)."""
    part = PARTS.require(name, field="part")
    return _markdown(part.columns, part.rows(), part.code)


_SECTION = re.compile(r"(<!-- ([a-z_]+):start -->\n).*?(<!-- \2:end -->)", re.S)


def update_markdown(text: str) -> str:
    """``text`` with every generated section rewritten: between ``<!-- settings:start -->``
    and ``<!-- settings:end -->`` the settings, between ``<!-- PART:start -->`` and
    ``<!-- PART:end -->`` that part (``docs/spec.md`` is kept so:
    ``python -m conveyor.spec_reference docs/spec.md``)."""

    def section(match: re.Match[str]) -> str:
        name = match.group(2)
        body = markdown_table() if name == "settings" else markdown(name)
        return match.group(1) + body + match.group(3)

    return _SECTION.sub(section, text)


if __name__ == "__main__":  # pragma: no cover: python -m conveyor.spec_reference docs/spec.md
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(update_markdown(path.read_text(encoding="utf-8")), encoding="utf-8")
