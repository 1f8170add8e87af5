"""The one event schema: what happened, to what, in which request, and when.

Every capability writes the same record (DESIGN.md, principle 2)::

    Event(kind="prediction", subject="fraud", subject_version="3",
          payload={"latency_ms": 1.9, "output": 0.97}, request_id="req-81f")

``kind`` is a dotted lowercase name (``run.started``, ``artifact.stored``,
``gate.decided``, ``prediction``). Everything else about the occurrence goes
in ``payload``, a JSON object.

Ids
    32 lowercase hex characters encoding 128 bits: 48 bits of Unix
    milliseconds, then 80 random bits from ``os.urandom`` (the ULID / UUIDv7
    layout, hex rather than Crockford base32 because formatting hex is one
    C call on the emit path). Ids sort by creation time to the millisecond;
    within a millisecond their order is random, so insertion order is the
    log's ``seq``, not the id. ``os.urandom`` rather than :mod:`random` keeps
    ids unique even when user code calls ``random.seed(42)`` in every worker.

Time
    An aware UTC :class:`~datetime.datetime` with microsecond precision,
    stamped when the event is created (``emit`` creates it). It shares one
    clock reading with the id.

Payload
    Serialised with orjson (numpy scalars and arrays included) when the
    event is written, so a payload that is not JSON fails in the caller, not
    later in the background writer. The JSON captured at that moment is what
    is stored: mutating the dict afterwards changes nothing. Limits shared by
    every backend: keys are strings; integers fit in 64 bits (signed, or
    unsigned up to 2**64-1); NaN and infinities become ``null`` (JSON has no
    such numbers); no U+0000 character (PostgreSQL's JSONB refuses it).
    PostgreSQL's JSONB also normalises numbers: a float that orjson writes in
    exponent form with a positive exponent (``1e+16`` and larger) reads back
    as an ``int`` of the same value.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import time_ns
from typing import Any

import orjson

from conveyor.errors import InvalidInputError

__all__ = [
    "MAX_KIND_LENGTH",
    "MAX_TEXT_LENGTH",
    "Event",
    "check_kind",
    "dump_payload",
    "load_payload",
    "new_event_id",
]

MAX_KIND_LENGTH = 100
#: Longest ``subject``, ``subject_version``, ``request_id``, ``trace_id`` and ``actor``.
MAX_TEXT_LENGTH = 255

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Default for ``Event.time``: "not given, stamp it". Year 1 is before any real event.
_UNSTAMPED = datetime(1, 1, 1, tzinfo=UTC)

_KIND = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
_ID = re.compile(r"[0-9a-f]{32}")
# U+0000 as orjson escapes it, not preceded by an escaped backslash.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TEXT_FIELDS = ("subject", "subject_version", "request_id", "trace_id", "actor")
_FIELDS = frozenset(("kind", "payload", "id", "time", *_TEXT_FIELDS))

# A server emits a handful of kinds millions of times: checking each kind once
# keeps the regex off the hot path. Bounded so arbitrary input cannot grow it.
_KNOWN_KINDS: set[str] = set()
_KNOWN_KINDS_MAX = 10_000


# Ids take their random bits from a generator seeded by the OS (a getrandom call per event
# was 2.5% of a busy server's time); a forked child re-seeds, so workers never share a
# sequence. The bits make ids unique, not secret: nothing relies on guessing them.
_ids = random.Random(os.urandom(32))


def _reseed_ids() -> None:
    _ids.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed_ids)


def new_event_id(ms: int | None = None) -> str:
    """A fresh id: 48-bit Unix milliseconds then 80 random bits, as 32 hex characters."""
    if ms is None:
        ms = time_ns() // 1_000_000
    return f"{ms:012x}{_ids.getrandbits(80):020x}"


def check_kind(kind: object, field: str = "kind") -> str:
    """``kind`` if it is a valid event kind, else :class:`InvalidInputError`."""
    if kind in _KNOWN_KINDS:
        return kind
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LENGTH or _KIND.fullmatch(kind) is None:
        raise InvalidInputError(
            f"{field} {kind!r} is not a valid event kind: use dotted lowercase names "
            f"such as 'run.started' or 'prediction' (letters, digits, '_', at most "
            f"{MAX_KIND_LENGTH} characters)",
            field=field,
        )
    if len(_KNOWN_KINDS) < _KNOWN_KINDS_MAX:
        _KNOWN_KINDS.add(kind)
    return kind


def _check_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{field} must be a string or None, got {type(value).__name__} {value!r}",
            field=field,
        )
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInputError(
            f"{field} is {len(value)} characters long; the most is {MAX_TEXT_LENGTH}",
            field=field,
        )
    if "\x00" in value or (not value.isascii() and not _encodes(value)):
        raise InvalidInputError(
            f"{field} {value!r} contains a NUL character or an unpaired surrogate", field=field
        )


def _encodes(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_default(value: Any) -> Any:
    # orjson serialises dict natively; other mappings (MappingProxyType, a
    # frozen config) are JSON objects too.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"type {type(value).__name__} is not JSON serialisable")


def dump_payload(payload: Mapping[str, Any]) -> str:
    """``payload`` as JSON text, or :class:`InvalidInputError` if it is not JSON."""
    try:
        data = orjson.dumps(payload, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidInputError(
            f"event payload is not JSON-serialisable: {exc}. Payloads hold JSON values "
            "(str keys; str, int within 64 bits, float, bool, None, lists, dicts, numpy "
            "scalars and arrays); convert other objects first",
            field="payload",
        ) from exc
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise InvalidInputError(
            "event payload contains a U+0000 (NUL) character, which PostgreSQL cannot store "
            "in JSON; remove it or encode the bytes (base64, hex)",
            field="payload",
        )
    return data.decode()


def load_payload(raw: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """A stored payload as a dict (PostgreSQL's driver has already decoded JSONB)."""
    if isinstance(raw, str | bytes):
        loaded: dict[str, Any] = orjson.loads(raw)
        return loaded
    return dict(raw)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. Immutable; validated when created.

    ``id`` and ``time`` are stamped from one clock reading when left out.
    """

    kind: str
    subject: str | None = None
    subject_version: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    trace_id: str | None = None
    actor: str | None = None
    id: str = ""
    time: datetime = _UNSTAMPED

    def __post_init__(self) -> None:
        # On every emit: the common case (known kind, dict payload, few text
        # fields, stamped here) is kept to a few attribute checks.
        if self.kind not in _KNOWN_KINDS:
            check_kind(self.kind)
        # Spelled out: a loop over getattr costs more than the checks.
        if self.subject is not None:
            _check_text(self.subject, "subject")
        if self.subject_version is not None:
            _check_text(self.subject_version, "subject_version")
        if self.request_id is not None:
            _check_text(self.request_id, "request_id")
        if self.trace_id is not None:
            _check_text(self.trace_id, "trace_id")
        if self.actor is not None:
            _check_text(self.actor, "actor")
        payload: object = self.payload
        if type(payload) is not dict:
            if payload is None:
                object.__setattr__(self, "payload", {})
            elif not isinstance(payload, Mapping):
                raise InvalidInputError(
                    f"event payload must be a mapping (a JSON object), got "
                    f"{type(payload).__name__}",
                    field="payload",
                )
        if self.time is _UNSTAMPED:
            us = time_ns() // 1000
            object.__setattr__(self, "time", EPOCH + timedelta(0, 0, us))
        else:
            _check_time(self.time)
            if self.time.tzinfo is not UTC:
                object.__setattr__(self, "time", self.time.astimezone(UTC))
            us = self.time_us
        if not self.id:
            object.__setattr__(self, "id", new_event_id(us // 1000))
        elif not isinstance(self.id, str) or _ID.fullmatch(self.id) is None:
            raise InvalidInputError(
                f"event id {self.id!r} is not 32 lowercase hex characters", field="id"
            )

    @property
    def time_us(self) -> int:
        """``time`` as integer microseconds since the Unix epoch (how it is stored)."""
        return (self.time - EPOCH) // _ONE_US

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``time`` is ISO 8601 with microseconds and ``+00:00``."""
        return {
            "id": self.id,
            "time": self.time.isoformat(timespec="microseconds"),
            "kind": self.kind,
            "subject": self.subject,
            "subject_version": self.subject_version,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "actor": self.actor,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict`; ``time`` may be an ISO string or a datetime."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"an event must be a mapping, got {type(data).__name__}", field="event"
            )
        unknown = set(data) - _FIELDS
        if unknown:
            raise InvalidInputError(
                f"unknown event fields {sorted(unknown)}; known: {sorted(_FIELDS)}",
                field=sorted(unknown)[0],
            )
        if "kind" not in data:
            raise InvalidInputError("an event needs a 'kind'", field="kind")
        fields = dict(data)
        when = fields.get("time")
        if isinstance(when, str):
            try:
                fields["time"] = datetime.fromisoformat(when)
            except ValueError as exc:
                raise InvalidInputError(
                    f"event time {when!r} is not an ISO 8601 timestamp", field="time"
                ) from exc
        elif when is None:
            fields.pop("time", None)
        if fields.get("id") is None:
            fields.pop("id", None)
        return cls(**fields)

    @classmethod
    def from_row(
        cls,
        id: str,
        time_us: int,
        kind: str,
        subject: str | None,
        subject_version: str | None,
        request_id: str | None,
        trace_id: str | None,
        actor: str | None,
        payload: str | bytes | Mapping[str, Any],
    ) -> Event:
        """An event read back from storage (columns in ``table.COLUMNS`` order)."""
        return cls(
            kind=kind,
            subject=subject,
            subject_version=subject_version,
            payload=load_payload(payload),
            request_id=request_id,
            trace_id=trace_id,
            actor=actor,
            id=id,
            time=EPOCH + timedelta(microseconds=time_us),
        )


def _check_time(value: object) -> None:
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"event time must be a datetime, got {type(value).__name__}", field="time"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            f"event time {value.isoformat()} has no time zone; pass an aware datetime "
            "(datetime.now(UTC))",
            field="time",
        )
