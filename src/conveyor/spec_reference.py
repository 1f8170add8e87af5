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
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from conveyor.backends import BackendURL
from conveyor.config import ENV_PREFIX, spec_model

__all__ = ["PLACEHOLDER", "Setting", "markdown_table", "settings"]

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


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return "list (JSON)"
    if origin is dict:
        return "mapping (JSON)"
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
    rows = [
        "| field | type | default | environment | meaning |",
        "|---|---|---|---|---|",
    ]
    for setting in settings():
        cells = (
            f"`{setting.path}`",
            setting.type,
            f"`{setting.default}`",
            f"`{setting.variable}`",
            setting.description,
        )
        # A pipe inside a cell (``str | None``), even in a code span, must be escaped.
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
