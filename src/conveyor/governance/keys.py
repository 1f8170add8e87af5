"""API keys: created with a role and limits, stored as a hash, verified on every request.

::

    keys = ApiKeys(store, events)
    token, key = keys.create("ci-deployer", "deployer", rate_per_second=50, burst=100,
                             actor="cli:alice")
    print(token)                       # shown once: only its sha256 is stored
    key = keys.verify(token)           # AuthenticationError if unknown, revoked, expired
    key.require("serving.route")       # PermissionDeniedError if the role is too low

**Tokens.** ``cvy_`` followed by the 43 characters of
``secrets.token_urlsafe(32)`` (256 random bits). The store keeps only the
sha256 hex digest (an unsalted fast hash is enough for a 256-bit random
secret: there is nothing to brute-force) and the first 10 characters
(``prefix``, safe to show). A token is looked up by its hash through the
unique index; no error message, log line or audit event ever contains it.

**Cache.** :meth:`ApiKeys.verify` is on every request's path, so verified
keys (and unknown hashes) are remembered in-process for ``cache_ttl``
seconds (5 by default), keyed by hash. A key revoked through this process
stops working at once; in every other worker and machine it stops working
within ``cache_ttl`` seconds. Expiry is checked on every call, cached or not.
:meth:`ApiKeys.cached` answers from that memory alone, so a server can check
a key on its event loop and go to the store (in a thread) only on a miss.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.governance.events import AUTH_KEY_CREATED, AUTH_KEY_REVOKED
from conveyor.governance.ratelimit import check_limits
from conveyor.governance.roles import Role, allows, check_role, require

if TYPE_CHECKING:
    from conveyor.capability import EventKind
    from conveyor.events.log import EventLog
    from conveyor.governance.tables import ApiKeyRecord
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore

__all__ = ["PREFIX_LENGTH", "TOKEN_PREFIX", "ApiKey", "ApiKeys", "hash_token"]

TOKEN_PREFIX = "cvy_"
PREFIX_LENGTH = 10
_TOKEN = re.compile(r"^cvy_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,199}$")
# Bounds on the verification cache, so a flood of random tokens cannot grow it without end.
_CACHE_MAX = 10_000


def hash_token(token: str) -> str:
    """The sha256 hex digest stored for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored: never its secret."""

    id: str
    name: str
    prefix: str
    role: Role
    rate_per_second: float | None
    burst: int | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, row: ApiKeyRecord) -> ApiKey:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            role=row.role,  # type: ignore[arg-type]
            rate_per_second=row.rate_per_second,
            burst=row.burst,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    @property
    def limited(self) -> bool:
        """Whether requests with this key go through the rate limiter."""
        return self.rate_per_second is not None

    def expired(self, now: datetime | None = None) -> bool:
        from conveyor.store.types import utcnow

        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def allows(self, action: str) -> bool:
        return allows(self.role, action)

    def require(self, action: str) -> None:
        require(self.role, action)

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role,
            "rate_per_second": self.rate_per_second,
            "burst": self.burst,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
        }


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"key name {name!r}: use 1 to 200 letters, digits, '_', '.', '@', ':' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name


class ApiKeys:
    """Create, list, revoke and verify API keys stored in the metadata store.

    Thread-safe; one instance per process is enough (the verification cache
    lives on it). ``events``, when given, receives an audit event for every
    create and revoke (``auth.key_created``, ``auth.key_revoked``: the call
    returns after it is stored).
    """

    def __init__(
        self,
        store: MetadataStore,
        events: EventLog | None = None,
        *,
        cache_ttl: float = 5.0,
    ) -> None:
        if not (math.isfinite(cache_ttl) and cache_ttl >= 0):
            raise InvalidInputError(
                f"cache_ttl {cache_ttl!r} must be >= 0 seconds", field="cache_ttl"
            )
        self.store = store
        self.events = events
        self.cache_ttl = cache_ttl
        # hash -> (key or None for "no such key", monotonic time it was read)
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._lock = threading.Lock()
        self._any = False  # keys are never deleted: once one exists, it stays True

    # -- mutations ---------------------------------------------------------------

    def create(
        self,
        name: str,
        role: str,
        *,
        rate_per_second: float | None = None,
        burst: int | None = None,
        expires_at: datetime | None = None,
        actor: str | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key: returns ``(token, key)``. The token is shown here only, never again.

        AlreadyExistsError when a key (even a revoked one) has that name.
        """
        import uuid

        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord
        from conveyor.store.types import aware_utc, utcnow

        _check_name(name)
        checked_role = check_role(role)
        rate, burst = check_limits(rate_per_second, burst)
        now = utcnow()
        if expires_at is not None:
            expires_at = aware_utc(expires_at, "expires_at")
            if expires_at <= now:
                raise InvalidInputError(
                    f"expires_at {expires_at.isoformat()} is not in the future",
                    field="expires_at",
                )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRecord(
            id=uuid.uuid4().hex,
            name=name,
            prefix=token[:PREFIX_LENGTH],
            hash=hash_token(token),
            role=checked_role,
            rate_per_second=rate,
            burst=burst,
            created_by=actor,
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
        )
        try:
            with self.store.session() as session:
                taken = session.scalar(sa.select(ApiKeyRecord.id).where(ApiKeyRecord.name == name))
                if taken is not None:
                    raise AlreadyExistsError(
                        f"an API key named {name!r} already exists; revoke it and pick "
                        "another name",
                        name=name,
                    )
                session.add(row)
                session.flush()
                key = ApiKey.from_record(row)
        except AlreadyExistsError as exc:  # a concurrent create of the same name
            raise AlreadyExistsError(
                f"an API key named {name!r} already exists; revoke it and pick another name",
                name=name,
            ) from exc
        self._any = True
        self._audit(AUTH_KEY_CREATED, key, actor)
        return token, key

    def revoke(self, name: str, actor: str | None = None) -> ApiKey:
        """Revoke the key ``name`` (NotFoundError if there is none).

        Revoking a revoked key changes nothing and records nothing. This
        process refuses the key at once; other processes within ``cache_ttl``.
        """
        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord
        from conveyor.store.types import utcnow

        with self.store.session() as session:
            row = session.scalar(
                sa.select(ApiKeyRecord).where(ApiKeyRecord.name == name).with_for_update()
            )
            if row is None:
                raise NotFoundError(f"no API key named {name!r}", name=name)
            changed = row.revoked_at is None
            if changed:
                row.revoked_at = utcnow()
                session.flush()
            key = ApiKey.from_record(row)
            digest = row.hash
        with self._lock:
            # Remembered revoked (not forgotten): refused at once here, and still refused
            # when a server authenticates from memory because the store is down.
            self._cache[digest] = (key, time.monotonic())
        if changed:
            self._audit(AUTH_KEY_REVOKED, key, actor)
        return key

    def _audit(self, kind: EventKind, key: ApiKey, actor: str | None) -> None:
        if self.events is None:
            return
        self.events.record(
            kind,
            subject=key.name,
            actor=actor,
            payload={
                "key_id": key.id,
                "name": key.name,
                "role": key.role,
                "prefix": key.prefix,
                "rate_per_second": key.rate_per_second,
                "burst": key.burst,
                "expires_at": None if key.expires_at is None else key.expires_at.isoformat(),
            },
        )

    # -- reads -----------------------------------------------------------------------

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""
        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord

        stmt = sa.select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.name)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRecord.revoked_at.is_(None))
        with self.store.read() as session:
            return [ApiKey.from_record(row) for row in session.scalars(stmt)]

    def get(self, name: str) -> ApiKey:
        """The key named ``name`` (NotFoundError if there is none)."""
        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord

        with self.store.read() as session:
            row = session.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.name == name))
            if row is None:
                raise NotFoundError(f"no API key named {name!r}", name=name)
            return ApiKey.from_record(row)

    @classmethod
    def for_project(cls, project: Project) -> ApiKeys:
        """The project's keys (``project.keys``), with the default 5 s verification cache."""
        return cls(project.store, project.events)

    @property
    def known_to_exist(self) -> bool:
        """True once this process has seen a key exist (it never turns false: keys are
        revoked, never deleted)."""
        return self._any

    def any(self) -> bool:
        """Whether any key was ever created (revoked ones count): the bootstrap test."""
        if self._any:
            return True
        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord

        with self.store.read() as session:
            found = session.scalar(sa.select(ApiKeyRecord.id).limit(1)) is not None
        self._any = found
        return found

    # -- verification ------------------------------------------------------------------

    def verify(self, token: str | None) -> ApiKey:
        """The active key whose secret is ``token`` (reads the store on a cache miss).

        AuthenticationError when the token is missing, malformed, unknown,
        revoked or expired; the message never contains the token.
        """
        return _active(self._lookup(_digest(token)))

    def verify_cached(self, token: str | None) -> ApiKey | None:
        """Like :meth:`verify` from memory only: None when the store must be read.

        Raises what :meth:`verify` raises when the answer is known without the
        store (a missing or malformed token, a cached unknown, revoked or
        expired key), so an event loop can call it and go to a thread on None.
        """
        digest = _digest(token)
        cached = self._cache.get(digest)
        if cached is None or time.monotonic() - cached[1] >= self.cache_ttl:
            return None
        return _active(cached[0])

    def verify_stale(self, token: str | None, max_age_s: float) -> ApiKey | None:
        """The key as this process last read it from the store, if that was at most
        ``max_age_s`` ago; None otherwise. For when the store does not answer: a key
        read revoked (or since expired) is still refused (AuthenticationError)."""
        digest = _digest(token)
        cached = self._cache.get(digest)
        if cached is None or time.monotonic() - cached[1] > max_age_s:
            return None
        return _active(cached[0])

    def _lookup(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.cache_ttl:
            return cached[0]
        import sqlalchemy as sa

        from conveyor.governance.tables import ApiKeyRecord

        with self.store.read() as session:
            row = session.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.hash == digest))
            # The unique index found the row by hash; compare again in constant time anyway.
            found = row is not None and secrets.compare_digest(row.hash, digest)
            key = ApiKey.from_record(row) if row is not None and found else None
        if self.cache_ttl > 0:
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._evict(now)
                self._cache[digest] = (key, now)
        return key

    def _evict(self, now: float) -> None:
        """Drop stale entries; if all are fresh (a flood), drop the oldest half."""
        stale = [d for d, (_, at) in self._cache.items() if now - at >= self.cache_ttl]
        for digest in stale:
            del self._cache[digest]
        if len(self._cache) >= _CACHE_MAX:
            for digest in list(self._cache)[: _CACHE_MAX // 2]:
                del self._cache[digest]

    def clear_cache(self) -> None:
        """Forget every verified key (the next verify of each reads the store)."""
        with self._lock:
            self._cache.clear()


def _digest(token: str | None) -> str:
    if not token:
        raise AuthenticationError(
            "no API key: send one as 'Authorization: Bearer cvy_...' "
            "(create one with `conveyor keys create NAME --role ROLE`)",
            reason="missing",
        )
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise AuthenticationError(
            "malformed API key: expected 'cvy_' followed by 43 characters",
            reason="malformed",
        )
    return hash_token(token)


def _active(key: ApiKey | None) -> ApiKey:
    if key is None:
        raise AuthenticationError("unknown API key", reason="unknown")
    if key.revoked_at is not None:
        raise AuthenticationError(
            f"API key {key.name!r} was revoked at {key.revoked_at.isoformat()}",
            reason="revoked",
            name=key.name,
        )
    if key.expired():
        assert key.expires_at is not None
        raise AuthenticationError(
            f"API key {key.name!r} expired at {key.expires_at.isoformat()}",
            reason="expired",
            name=key.name,
        )
    return key
