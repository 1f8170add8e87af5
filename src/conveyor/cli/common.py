"""What every command shares: output, exit codes, errors, options, durations, who is acting.

**Output.** ``--json`` only ever selects JSON output. A list prints one
envelope, ``{"items": [...], "next_cursor": "..." | null}`` (:func:`echo_list`;
pass ``next_cursor`` back as ``--cursor`` where a command takes one), one
object prints that object (:func:`echo_json`), and an error prints
``{"error": {"code": ..., "message": ...}}``.

**Exit codes**, the same for every command:

- :data:`EXIT_OK` (0): done;
- :data:`EXIT_ERROR` (1): not done: bad input, a missing object, a refused
  action, an unreachable backend, a failed pipeline run;
- :data:`EXIT_USAGE` (2): the command line does not parse (typer/click);
- :data:`EXIT_CHECK_FAILED` (3): the command ran and a check it reports
  failed (data validation, drift, gates, an optimization report, doctor).

**Durations** are written one way: a number and a unit, ``45s``, ``30m``,
``12h``, ``7d``, ``2w`` (``1h30m`` combines them; ``1.5h`` is fine):
:func:`parse_duration` for spans (``--expires``, ``--stale-after``,
``--poll-interval``), :func:`parse_since` for moments (``--since``, ``--at``:
an age or an ISO 8601 time).

**Who is acting.** Every command that changes something records its actor
through :func:`authorized`: ``key:NAME`` for ``CONVEYOR_API_KEY``, the local
user while the project has no key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from conveyor.durations import DURATION_FORMS, parse_duration, parse_moment
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.project import Project

__all__ = [
    "API_KEY_ENV",
    "DEBUG_ENV",
    "DURATION_FORMS",
    "EXIT_CHECK_FAILED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CursorOpt",
    "JsonOpt",
    "ProjectOpt",
    "authorized",
    "check_failed",
    "console",
    "debugging",
    "echo_json",
    "echo_list",
    "echo_report",
    "errors",
    "invoked_command",
    "open_project",
    "parse_duration",
    "parse_since",
    "print_table",
    "when",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3

#: The environment variable the CLI reads its API key from.
API_KEY_ENV = "CONVEYOR_API_KEY"

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help='Print JSON: an object, or {"items": [...], "next_cursor": ...} for a list.'
    ),
]
ServerUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="CONVEYOR_URL",
        help="Ask the running server at this URL (e.g. http://127.0.0.1:8000) to do it, "
        "with the key in CONVEYOR_API_KEY.",
    ),
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Project folder (default: found from the cwd upwards)."),
]
CursorOpt = Annotated[
    str | None, typer.Option(help="The next page: a next_cursor printed by the previous one.")
]


def console() -> Any:
    from rich.console import Console

    # Piped output gets 160 columns rather than rich's 80, so tables (and the 32-character
    # ids in them) stay on one line. No emoji codes: a name such as `:houses:` is a name.
    return Console(width=None if Console().is_terminal else 160, emoji=False)


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- output ---------------------------------------------------------------------------------


def echo_json(obj: Any) -> None:
    """Print one JSON document (indented); what orjson cannot encode is written as text."""
    import orjson

    option = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    typer.echo(orjson.dumps(obj, option=option, default=str).decode())


def echo_list(items: Iterable[Any], next_cursor: str | None = None) -> None:
    """Print a list in the one envelope: ``{"items": [...], "next_cursor": ... | null}``."""
    echo_json({"items": list(items), "next_cursor": next_cursor})


def echo_report(report: Report, as_json: bool) -> None:
    """A check report as its JSON object, or as a table."""
    if as_json:
        echo_json(report.to_dict())
    else:
        from conveyor.checks.render import report_table

        console().print(report_table(report))


def print_table(table: Any, next_cursor: str | None = None) -> None:
    """Print a rich table and, when there is a next page, the ``--cursor`` that fetches it."""
    out = console()
    out.print(table)
    if next_cursor:
        out.print(f"more: --cursor {next_cursor}")


def check_failed() -> NoReturn:
    """End the command with :data:`EXIT_CHECK_FAILED`, after its report was printed."""
    raise typer.Exit(EXIT_CHECK_FAILED)


#: ``CONVEYOR_DEBUG=1`` (or the global ``--debug``): errors print their full traceback.
DEBUG_ENV = "CONVEYOR_DEBUG"


def debugging() -> bool:
    """Whether ``--debug`` or ``CONVEYOR_DEBUG=1`` asked for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def errors(func: F) -> F:
    """Print a ConveyorError as one line (its JSON with ``--json``) and exit :data:`EXIT_ERROR`.

    An error about the user's own code (a ``fit`` that raised) carries the user's frames
    (``context["frames"]``): they are printed under the line, innermost last. With
    ``--debug`` (``CONVEYOR_DEBUG=1``) the whole traceback, causes included, goes first.
    Any other exception is a bug and keeps its traceback.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConveyorError as exc:
            debug = debugging()
            if debug:
                import traceback

                typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            if kwargs.get("as_json"):
                echo_json({"error": jsonable(exc.to_dict())})
            else:
                typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
                frames = exc.context.get("frames")
                if isinstance(frames, list) and frames:
                    for frame in frames:
                        typer.echo(f"  {frame}", err=True)
                if not debug and exc.__cause__ is not None:
                    typer.secho(
                        f"  (the full traceback: --debug or {DEBUG_ENV}=1)",
                        dim=True,
                        err=True,
                    )
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list | None) else str(v)
        for k, v in data.items()
    }


def open_project(project: Path | None) -> Project:
    from conveyor.project import Project

    return Project.open(project)


# -- durations and moments ------------------------------------------------------------------


def parse_since(
    value: str | None, now: datetime | None = None, *, option: str = "--since"
) -> datetime | None:
    """A moment: an age (a duration ago: ``15m``, ``2h``, ``7d``) or an ISO 8601 time.

    A naive ISO time is UTC. Anything else is an InvalidInputError naming ``option``.
    """
    if value is None:
        return None
    return parse_moment(value, now, option=option)


# -- who is acting --------------------------------------------------------------------------


def _local_user() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def invoked_command() -> str | None:
    """```conveyor data ingest``` for the command running now (from click's context), or
    None outside one."""
    try:  # typer >= 0.26 carries its own click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover: an older typer on the real click
        from click import get_current_context  # type: ignore[no-redef]

    ctx = get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:
        if ctx.info_name:
            names.append(ctx.info_name)
        ctx = ctx.parent
    return f"`conveyor {' '.join(reversed(names))}`" if names else None


def authorized(proj: Project, action: str | None, what: str | None = None) -> str:
    """The actor to record for what a command does, once the caller may do ``action``.

    The rule of :mod:`conveyor.governance.access`, with bootstrap allowed (the
    CLI is how the first admin key is made): with ``CONVEYOR_API_KEY`` set, the
    key must verify and its role allow ``action``, and the actor is ``key:NAME``,
    as over HTTP; with no key, the local user (``cli:NAME``) may act while the
    project has never had a key, and is refused once it has. ``action=None``
    is for what no capability restricts to a role: any valid key will do. A refusal
    names the command (``what``, default: the one running), the action and the role.
    """
    from conveyor.governance.access import Access
    from conveyor.governance.keys import ApiKeys

    access = Access(
        ApiKeys(proj.store, proj.events, cache_ttl=0),
        open_until_first_key=True,
        anonymous=_local_user(),
        missing_hint=f"set {API_KEY_ENV} to one (this project has API keys)",
    )
    token = os.environ.get(API_KEY_ENV) or None
    if action is None:
        return access.identify(token).actor
    return access.authorize(token, action, what=what or invoked_command()).actor
