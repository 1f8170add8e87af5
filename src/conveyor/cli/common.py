"""What every command shares: the console, error printing, options, time parsing."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from conveyor.errors import ConveyorError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project

F = TypeVar("F", bound=Callable[..., Any])
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Project folder (default: found from the cwd upwards)."),
]


def console() -> Any:
    from rich.console import Console

    # Piped output gets 120 columns rather than rich's 80, so tables stay legible.
    return Console(width=None if Console().is_terminal else 120)


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def errors(func: F) -> F:
    """Print ConveyorError as one line and exit 1 (JSON when --json was given)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConveyorError as exc:
            if kwargs.get("as_json"):
                import orjson

                typer.echo(orjson.dumps({"error": jsonable(exc.to_dict())}).decode())
            else:
                typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list | None) else str(v)
        for k, v in data.items()
    }


def open_project(project: Path | None) -> Project:
    from conveyor.project import Project

    return Project.open(project)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``15m``, ``2h``, ``7d`` (ago) or an ISO 8601 time (naive means UTC)."""
    if value is None:
        return None
    match = _AGE.match(value)
    if match:
        amount, unit = float(match[1]), match[2]
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"--since {value!r}: expected an age like 15m, 2h, 7d or an ISO time like "
            "2026-01-31T12:00",
            field="since",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def authorized(proj: Any, action: str) -> str:
    """The actor to record for a CLI mutation, once ``CONVEYOR_API_KEY``'s role allows ``action``.

    Locally, with no key ever created in the project, anyone may act (the
    bootstrap rule of :mod:`conveyor.cli.keys`).
    """
    from conveyor.cli.keys import authorize

    return authorize(proj, action)[1]
