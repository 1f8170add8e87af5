"""URL -> backend resolution, one mechanism shared by every seam.

Each kind of state (metadata store, artifacts, event log, cache, and those
capabilities add, such as the rate limiter's buckets) is a *seam*: a small
protocol with several backends, picked by the scheme of a URL in
``conveyor.yaml``. A seam is a table mapping scheme to a
lazy import string and the extra that provides its driver, in the manner of
fsspec's ``known_implementations``::

    >>> STORE.schemes()
    ['postgresql', 'sqlite']
    >>> cls = STORE.resolve("postgresql://app@db:5432/conveyor")   # imports lazily

Three failures stay distinct: an unknown scheme (:class:`UnknownBackendError`
lists the known ones), a known scheme whose driver is not installed
(:class:`MissingDependencyError` names the extra), and a service that does not
answer (:class:`BackendUnavailableError`, raised by the backend, naming host
and port; :func:`unavailable` builds it).

Backends are constructed explicitly with :meth:`Seam.open` and closed with
``with``: there is no hidden instance cache, so two callers never share a
connection pool by accident. Third-party backends register through the
entry-point group ``conveyor.backends.<seam>`` or :meth:`Seam.register`.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, overload
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from conveyor.errors import (
    BackendUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    UnknownBackendError,
)

__all__ = [
    "ARTIFACTS",
    "CACHE",
    "EVENTS",
    "KV_BACKENDS",
    "SEAMS",
    "STORE",
    "BackendSpec",
    "BackendURL",
    "Closeable",
    "Seam",
    "check_options",
    "int_option",
    "redact",
    "seconds_option",
    "unavailable",
]

_REDACTED = "***"
# Schemes whose URL is a path (file://rel/dir), with no host part.
_PATH_SCHEMES = frozenset({"file", "memory"})


@dataclass(frozen=True, slots=True)
class BackendURL:
    """A parsed backend URL. ``str()`` and ``repr()`` never show the password.

    ``scheme`` is the base scheme (``postgresql``); a SQLAlchemy-style driver
    suffix (``postgresql+psycopg``) lands in ``driver``. ``path`` keeps the
    leading slash as written, so ``sqlite:///rel.db`` has path ``/rel.db``
    and ``sqlite:////abs.db`` has ``//abs.db``; :attr:`location` interprets it.
    """

    scheme: str
    driver: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    path: str = ""
    query: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str | BackendURL) -> BackendURL:
        """Parse ``url``; raise :class:`InvalidInputError` if it has no scheme."""
        if isinstance(url, BackendURL):
            return url
        if not isinstance(url, str) or "://" not in url:
            raise InvalidInputError(
                f"{redact(str(url))!r} is not a backend URL: expected scheme://..., "
                "for example sqlite:///.conveyor/conveyor.db or postgresql://user@host:5432/db",
                field="url",
            )
        parts = urlsplit(url)
        scheme, _, driver = parts.scheme.lower().partition("+")
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidInputError(
                f"{redact(url)!r} has an invalid port: {exc}", field="url"
            ) from exc
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if scheme in _PATH_SCHEMES:
            # file://rel/dir and memory://name carry a path, not a host: keep its case.
            return cls(
                scheme=scheme, driver=driver or None, path=parts.netloc + parts.path, query=query
            )
        return cls(
            scheme=scheme,
            driver=driver or None,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=parts.path,
            query=query,
        )

    @property
    def netloc(self) -> str:
        return self._netloc(hide_password=False)

    def _netloc(self, hide_password: bool) -> str:
        auth = ""
        if self.username is not None or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":" + (_REDACTED if hide_password else quote(self.password, safe=""))
            auth += "@"
        host = self.host or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        return f"{auth}{host}{port}"

    def render(self, hide_password: bool = True) -> str:
        """The URL as a string; pass ``hide_password=False`` only to hand it to a driver."""
        scheme = self.scheme + (f"+{self.driver}" if self.driver else "")
        query = f"?{urlencode(dict(self.query))}" if self.query else ""
        netloc = "" if self.scheme in _PATH_SCHEMES else self._netloc(hide_password)
        return f"{scheme}://{netloc}{self.path}{query}"

    def __str__(self) -> str:
        return self.render(hide_password=True)

    @property
    def address(self) -> str:
        """``host:port`` for error messages (``host`` alone if no port)."""
        host = self.host or "localhost"
        return f"{host}:{self.port}" if self.port is not None else host

    @property
    def location(self) -> str:
        """The filesystem path of a ``sqlite://`` or ``file://`` URL.

        ``sqlite:///x.db`` and ``file://x`` are relative, ``sqlite:////x.db`` and
        ``file:///x`` absolute (the SQLAlchemy and file-URI conventions).
        """
        if self.scheme in _PATH_SCHEMES:
            return self.path
        return self.path[1:] if self.path.startswith("/") else self.path

    def with_(self, **changes: Any) -> BackendURL:
        """A copy with some fields changed."""
        return replace(self, **changes)


def redact(url: str) -> str:
    """Hide the password in a URL string; leaves strings that are not URLs alone."""
    if "://" not in url or "@" not in url:
        return url
    try:
        return BackendURL.parse(url).render(hide_password=True)
    except InvalidInputError:
        return url


def unavailable(url: BackendURL, seam: str, reason: object) -> BackendUnavailableError:
    """The error a backend raises when its service does not answer."""
    return BackendUnavailableError(
        f"the {seam} backend at {url.address} ({url}) is unreachable: {reason}. "
        "Check that the service runs and the URL is right; `conveyor doctor` checks every seam.",
        seam=seam,
        host=url.host,
        port=url.port,
        url=str(url),
    )


# -- URL query options, read the same way by every backend ---------------------------------


def check_options(url: BackendURL, allowed: Collection[str], what: str, field: str = "url") -> None:
    """Refuse query options the backend does not know: a typo is never ignored.

    ``what`` names the backend in the message (``key-value``, ``event log``).
    """
    unknown = sorted(set(url.query) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise InvalidInputError(
            f"{url}: unknown {what} option(s) {', '.join(unknown)}; known: {known}", field=field
        )


def seconds_option(url: BackendURL, name: str, default: float) -> float:
    """A positive, finite number of seconds from ``?name=``, or ``default``."""
    raw = url.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise InvalidInputError(
            f"{url}: {name} must be a positive number of seconds, got {raw!r}", field=name
        )
    return value


@overload
def int_option(url: BackendURL, name: str, default: int, *, minimum: int = 1) -> int: ...


@overload
def int_option(
    url: BackendURL, name: str, default: None = None, *, minimum: int = 1
) -> int | None: ...


def int_option(
    url: BackendURL, name: str, default: int | None = None, *, minimum: int = 1
) -> int | None:
    """An integer of at least ``minimum`` from ``?name=``, or ``default``."""
    raw = url.query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()) or int(text) < minimum:
        raise InvalidInputError(
            f"{url}: {name} must be an integer >= {minimum}, got {raw!r}", field=name
        )
    return int(text)


class Closeable(ABC):
    """What every backend (and the Project holding them) is: closed with ``with``.

    ``close()`` must be idempotent; using the object after it raises ClosedError.
    """

    @abstractmethod
    def close(self) -> None:
        """Release connections, threads and files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Where a backend's class lives, and what it needs installed.

    Seams' tables hold these, and so do other tables of pluggable
    implementations (pipeline runners): :meth:`load` is the one way to import
    one, with the same error when its driver is missing.
    """

    target: str
    """``package.module:ClassName``, imported only when the scheme is used."""
    extra: str | None = None
    """The optional-dependency extra that installs ``requires``."""
    requires: tuple[str, ...] = ()
    """Top-level modules the backend imports (checked before importing it)."""
    driver: str | None = None
    """The driver a URL of this scheme gets when it names none (SQLAlchemy's ``+driver``:
    ``postgresql://`` is read as ``postgresql+psycopg://``)."""

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def load(self, subject: str, **context: Any) -> Any:
        """Import and return the target; MissingDependencyError when its driver is absent.

        ``subject`` names what needs it in the message ("the store backend for
        postgresql://"); ``context`` goes into the error's context.
        """
        absent = self.missing()
        if absent:
            raise self.missing_error(subject, ", ".join(absent), **context)
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self.missing_error(subject, exc.name or str(exc), **context) from exc
        return getattr(module, attr)

    def missing_error(self, subject: str, module: str, **context: Any) -> MissingDependencyError:
        """The error saying ``module`` is needed and how to install it."""
        hint = (
            f"pip install 'conveyor[{self.extra}]'"
            if self.extra
            else f"install the package that provides {module}"
        )
        return MissingDependencyError(
            f"{subject} needs {module}, which is not installed: {hint}",
            **context,
            extra=self.extra,
            module=module,
        )


class Seam:
    """One kind of state and the table of backends that can hold it."""

    def __init__(
        self,
        name: str,
        description: str,
        table: Mapping[str, BackendSpec],
        default: str | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self._table: dict[str, BackendSpec] = dict(table)
        #: The URL a new project uses (``conveyor init`` writes it; the spec defaults to it).
        self.default = default
        self._entry_points_loaded = False

    def __repr__(self) -> str:
        return f"Seam({self.name!r}, schemes={self.schemes()})"

    def register(
        self,
        scheme: str,
        target: str,
        extra: str | None = None,
        requires: tuple[str, ...] = (),
        *,
        driver: str | None = None,
        clobber: bool = False,
    ) -> None:
        """Add a backend at run time (tests, plugins)."""
        scheme = scheme.lower()
        if scheme in self._table and not clobber:
            raise InvalidInputError(
                f"scheme {scheme!r} is already registered for the {self.name} seam "
                f"({self._table[scheme].target}); pass clobber=True to replace it",
                field="scheme",
            )
        self._table[scheme] = BackendSpec(target, extra, requires, driver)

    def schemes(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._table)

    def spec(self, url: str | BackendURL) -> BackendSpec:
        """The table entry for ``url``'s scheme, or :class:`UnknownBackendError`."""
        parsed = BackendURL.parse(url)
        spec = self._table.get(parsed.scheme)
        if spec is None:
            self._load_entry_points()
            spec = self._table.get(parsed.scheme)
        if spec is None:
            known = ", ".join(f"{s}://" for s in self.schemes())
            raise UnknownBackendError(
                f"no {self.name} backend for scheme {parsed.scheme!r} in {parsed}; "
                f"known schemes: {known}",
                seam=self.name,
                scheme=parsed.scheme,
                known=self.schemes(),
            )
        return spec

    def missing(self, url: str | BackendURL) -> list[str]:
        """The required modules of ``url``'s backend that are not installed."""
        return self.spec(url).missing()

    def resolve(self, url: str | BackendURL) -> type[Any]:
        """Import and return the backend class for ``url``'s scheme."""
        parsed = BackendURL.parse(url)
        subject = f"the {self.name} backend for {parsed.scheme}://"
        cls: type[Any] = self.spec(parsed).load(subject, seam=self.name, scheme=parsed.scheme)
        return cls

    def open(self, url: str | BackendURL, **options: Any) -> Any:
        """Construct the backend for ``url``: ``cls.from_url(parsed, **options)``.

        The caller owns the result and closes it (``with seam.open(url) as b:``).
        """
        parsed = BackendURL.parse(url)
        return self.resolve(parsed).from_url(parsed, **options)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(f"conveyor.backends.{self.name}"):
            self._table.setdefault(ep.name.lower(), BackendSpec(ep.value))


def entry_points(group: str) -> list[Any]:
    """The installed entry points of ``group`` (``conveyor.capabilities``,
    ``conveyor.backends.<seam>``), from one read of the installed packages per process."""
    from conveyor._entry_points import entry_points as read

    return list(read(group))


_PG = BackendSpec("", "postgres", ("psycopg",))

STORE = Seam(
    "store",
    "metadata store: runs, reports and every mutable record",
    {
        "sqlite": BackendSpec("conveyor.store.database:MetadataStore"),
        "postgresql": replace(_PG, target="conveyor.store.database:MetadataStore"),
    },
    default="sqlite:///.conveyor/conveyor.db",
)
ARTIFACTS = Seam(
    "artifacts",
    "content-addressed artifact store (models, snapshots)",
    {
        "file": BackendSpec("conveyor.artifacts.store:ArtifactStore"),
        "memory": BackendSpec("conveyor.artifacts.store:ArtifactStore"),
        "s3": BackendSpec("conveyor.artifacts.store:ArtifactStore", "s3", ("s3fs",)),
    },
    default="file://.conveyor/artifacts",
)
EVENTS = Seam(
    "events",
    "append-only event log",
    {
        "sqlite": BackendSpec("conveyor.events.sql:SqlEventLog"),
        "postgresql": replace(_PG, target="conveyor.events.sql:SqlEventLog"),
        "nats": BackendSpec("conveyor.events.nats:NatsEventLog", "nats", ("nats",)),
        "redis": BackendSpec(
            "conveyor.events.redis_stream:RedisStreamEventLog", "redis", ("redis",)
        ),
    },
    default="sqlite:///.conveyor/events.db",
)
#: The key-value backends (:mod:`conveyor.kv`), for every seam that is a key-value store.
KV_BACKENDS: dict[str, BackendSpec] = {
    "memory": BackendSpec("conveyor.kv.memory:MemoryKV"),
    "sqlite": BackendSpec("conveyor.kv.sql:SqliteKV"),
    "redis": BackendSpec("conveyor.kv.redis:RedisKV", "redis", ("redis",)),
}
CACHE = Seam("cache", "cache (key-value with TTL)", KV_BACKENDS, default="memory://")

#: The foundation's seams, by the name used in ``conveyor.yaml`` under ``backends:``.
#: Capabilities add their own (:func:`conveyor.capability.seams` lists them all).
SEAMS: dict[str, Seam] = {s.name: s for s in (STORE, ARTIFACTS, EVENTS, CACHE)}
