"""One grammar for durations, in the CLI's options and in the spec: ``45s``, ``30m``, ``12h``,
``7d``, ``2w``, or a combination such as ``1h30m``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = [
    "DURATION_FORMS",
    "DURATION_PATTERN",
    "option_field",
    "parse_duration",
    "parse_moment",
    "spec_duration",
]

_PART = r"(\d+(?:\.\d+)?)([smhdw])"
DURATION_PATTERN = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(_PART)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: What a duration option accepts, as error messages and help texts say it.
DURATION_FORMS = "a number and a unit: 45s, 30m, 12h, 7d or 2w (1h30m combines them)"


def option_field(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def parse_duration(value: str, option: str) -> timedelta:
    """``45s``, ``30m``, ``12h``, ``7d``, ``2w`` or a combination like ``1h30m``; > 0.

    Anything else is an InvalidInputError naming ``option`` and the accepted forms.
    """
    text = value.strip()
    if DURATION_PATTERN.fullmatch(text):
        try:
            span = sum(
                (
                    timedelta(**{_UNITS[unit]: float(amount)})
                    for amount, unit in _PARTS.findall(text)
                ),
                timedelta(),
            )
        except OverflowError:
            raise InvalidInputError(
                f"{option} {value!r}: too long a duration", field=option_field(option)
            ) from None
        if span > timedelta(0):
            return span
    raise InvalidInputError(
        f"{option} {value!r}: expected a duration > 0, {DURATION_FORMS}",
        field=option_field(option),
        accepted=DURATION_FORMS,
    )


def spec_duration(value: Any, where: str) -> timedelta:
    """A duration in the spec: the same strings, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        if value > timedelta(0):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if value > 0:
            return timedelta(seconds=value)
    elif isinstance(value, str):
        return parse_duration(value, where)
    raise InvalidInputError(
        f"{where} {value!r}: expected a duration > 0, {DURATION_FORMS}", field=where
    )


def parse_moment(value: str, now: datetime | None = None, *, option: str = "--since") -> datetime:
    """A moment: an age (a duration ago: ``15m``, ``2h``, ``7d``) or an ISO 8601 time.

    A naive ISO time is UTC. Anything else is an InvalidInputError naming ``option``.
    """
    if DURATION_PATTERN.fullmatch(value.strip()):
        try:
            return (now or datetime.now(UTC)) - parse_duration(value, option)
        except OverflowError:
            raise InvalidInputError(
                f"{option} {value!r}: too long ago", field=option_field(option)
            ) from None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError(
            f"{option} {value!r}: expected an age ({DURATION_FORMS}) or an ISO time like "
            "2026-01-31T12:00",
            field=option_field(option),
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
