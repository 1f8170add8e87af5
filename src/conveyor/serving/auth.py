"""API keys, roles and rate limits for the model server and the CLI.

::

    keys = ApiKeys(store, events)
    token, key = keys.create("ci-deployer", "deployer", rate_per_second=50, burst=100,
                             actor="cli:alice")
    print(token)                       # shown once: only its sha256 is stored
    key = keys.verify(token)           # AuthenticationError if unknown, revoked, expired
    require(key.role, "deploy")        # PermissionDeniedError if the role is too low
    limiter = rate_limiter_from_url("redis://127.0.0.1:6379/0")
    if key.limited:
        limiter.take(key.id, key.rate_per_second, key.burst)   # RateLimitedError(retry_after)

**Tokens.** ``cvy_`` followed by the 43 characters of
``secrets.token_urlsafe(32)`` (256 random bits). The store keeps only the
sha256 hex digest (an unsalted fast hash is enough for a 256-bit random
secret: there is nothing to brute-force) and the first 10 characters
(``prefix``, safe to show). A token is looked up by its hash through the
unique index; no error message, log line or audit event ever contains it.

**Roles.** ``viewer < predictor < deployer < admin``: each role may do what
the ones before it may. :data:`ACTIONS` maps each action to the lowest role
allowed to do it.

**Cache.** :meth:`ApiKeys.verify` is on every request's path, so verified
keys (and unknown hashes) are remembered in-process for ``cache_ttl``
seconds (5 by default), keyed by hash. A key revoked through this process
stops working at once; in every other worker and machine it stops working
within ``cache_ttl`` seconds. Expiry is checked on every call, cached or not.

**Bootstrap.** The server's setting ``auth: required | disabled`` (default
``required``). :class:`Bootstrap` lets requests through unauthenticated only
while ``auth: disabled`` *and* no key has ever been created
(:meth:`ApiKeys.any`, which counts revoked keys too): creating the first key
closes the server, so a forgotten ``disabled`` cannot leave a keyed
deployment open, and revoking every key does not reopen it. The CLI's rule
is :func:`authorize_local`: with ``CONVEYOR_API_KEY`` set it verifies that
key and requires the action's role; with no key in the project at all, local
use is allowed (that is how the first admin key is created). See
``docs/security.md``.

**Rate limits.** A token bucket per key: ``rate_per_second`` tokens are
added per second up to ``burst``; each request takes one. The
:class:`MemoryRateLimiter` counts per process (monotonic clock); the
:class:`RedisRateLimiter` is shared by every worker and machine: one Lua
script refills and takes atomically, using the Redis server's clock, so
workers' clocks never disagree.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from conveyor.backends import BackendURL, Closeable, unavailable
from conveyor.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ClosedError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnknownBackendError,
)

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.store.database import MetadataStore
    from conveyor.store.models import ApiKeyRecord

__all__ = [
    "ACTIONS",
    "AUTH_MODES",
    "ROLES",
    "Action",
    "ApiKey",
    "ApiKeys",
    "AuthMode",
    "Bootstrap",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "Role",
    "allows",
    "authorize_local",
    "hash_token",
    "rate_limiter_from_url",
    "require",
]

Role = Literal["viewer", "predictor", "deployer", "admin"]
#: Lowest to highest: each role may do everything the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "predictor", "deployer", "admin")

Action = Literal[
    "read",
    "metadata",
    "health",
    "predict",
    "deploy",
    "route",
    "rollback",
    "promote",
    "keys",
]
#: The lowest role allowed to do each action.
ACTIONS: dict[str, Role] = {
    "read": "viewer",
    "metadata": "viewer",
    "health": "viewer",
    "predict": "predictor",
    "deploy": "deployer",
    "route": "deployer",
    "rollback": "deployer",
    "promote": "deployer",
    "keys": "admin",
}

AuthMode = Literal["required", "disabled"]
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)

TOKEN_PREFIX = "cvy_"
PREFIX_LENGTH = 10
_TOKEN = re.compile(r"^cvy_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,199}$")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Bounds on the verification cache, so a flood of random tokens cannot grow it without end.
_CACHE_MAX = 10_000


# -- roles ----------------------------------------------------------------------


def _check_role(role: str) -> Role:
    if role not in _RANK:
        raise InvalidInputError(
            f"role {role!r}: expected one of {', '.join(ROLES)}", field="role", allowed=ROLES
        )
    return role


def _check_action(action: str) -> Role:
    needed = ACTIONS.get(action)
    if needed is None:
        raise InvalidInputError(
            f"action {action!r}: expected one of {', '.join(ACTIONS)}", field="action"
        )
    return needed


def allows(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (InvalidInputError for an unknown one of either)."""
    needed = _check_action(action)
    return _RANK[_check_role(role)] >= _RANK[needed]


def require(role: str, action: str) -> None:
    """Raise PermissionDeniedError unless ``role`` may do ``action``."""
    if not allows(role, action):
        needed = ACTIONS[action]
        raise PermissionDeniedError(
            f"{action!r} needs the role {needed!r} or higher; this key's role is {role!r}",
            action=action,
            required_role=needed,
            role=role,
        )


# -- keys -----------------------------------------------------------------------


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


def _check_limits(rate: float | None, burst: int | None) -> tuple[float | None, int | None]:
    """Validated (rate, burst); a rate without a burst gets a burst of one second's worth."""
    if rate is None:
        if burst is not None:
            raise InvalidInputError(
                "burst needs rate_per_second too (the rate refills the burst)", field="burst"
            )
        return None, None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InvalidInputError(
            f"rate_per_second {rate!r} must be a positive number", field="rate_per_second"
        )
    if rate <= 0:
        raise InvalidInputError(
            f"rate_per_second {rate!r} must be a positive number", field="rate_per_second"
        )
    if burst is None:
        burst = max(1, math.ceil(rate))
    elif isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise InvalidInputError(f"burst {burst!r} must be an integer >= 1", field="burst")
    return float(rate), burst


class ApiKeys:
    """Create, list, revoke and verify API keys stored in the metadata store.

    Thread-safe; one instance per process is enough (the verification cache
    lives on it). ``events``, when given, receives an audit event for every
    create and revoke (``durable=True``: the call returns after it is stored).
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

        from conveyor.store.models import ApiKeyRecord
        from conveyor.store.types import aware_utc, utcnow

        _check_name(name)
        checked_role = _check_role(role)
        rate, burst = _check_limits(rate_per_second, burst)
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
        self._audit("auth.key_created", key, actor)
        return token, key

    def revoke(self, name: str, actor: str | None = None) -> ApiKey:
        """Revoke the key ``name`` (NotFoundError if there is none).

        Revoking a revoked key changes nothing and records nothing. This
        process forgets the key at once; other processes within ``cache_ttl``.
        """
        import sqlalchemy as sa

        from conveyor.store.models import ApiKeyRecord
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
            self._cache.pop(digest, None)
        if changed:
            self._audit("auth.key_revoked", key, actor)
        return key

    def _audit(self, kind: str, key: ApiKey, actor: str | None) -> None:
        if self.events is None:
            return
        self.events.emit(
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
            durable=True,
        )

    # -- reads -----------------------------------------------------------------------

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""
        import sqlalchemy as sa

        from conveyor.store.models import ApiKeyRecord

        stmt = sa.select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.name)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRecord.revoked_at.is_(None))
        with self.store.read() as session:
            return [ApiKey.from_record(row) for row in session.scalars(stmt)]

    def get(self, name: str) -> ApiKey:
        """The key named ``name`` (NotFoundError if there is none)."""
        import sqlalchemy as sa

        from conveyor.store.models import ApiKeyRecord

        with self.store.read() as session:
            row = session.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.name == name))
            if row is None:
                raise NotFoundError(f"no API key named {name!r}", name=name)
            return ApiKey.from_record(row)

    def any(self) -> bool:
        """Whether any key was ever created (revoked ones count): the bootstrap test."""
        if self._any:
            return True
        import sqlalchemy as sa

        from conveyor.store.models import ApiKeyRecord

        with self.store.read() as session:
            found = session.scalar(sa.select(ApiKeyRecord.id).limit(1)) is not None
        self._any = found
        return found

    # -- verification ------------------------------------------------------------------

    def verify(self, token: str | None) -> ApiKey:
        """The active key whose secret is ``token``.

        AuthenticationError when the token is missing, malformed, unknown,
        revoked or expired; the message never contains the token.
        """
        if not token:
            raise AuthenticationError(
                "no API key: send one as 'Authorization: Bearer cvy_...' "
                "(create one with `conveyor keys create`)",
                reason="missing",
            )
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise AuthenticationError(
                "malformed API key: expected 'cvy_' followed by 43 characters",
                reason="malformed",
            )
        digest = hash_token(token)
        key = self._lookup(digest)
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

    def _lookup(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.cache_ttl:
            return cached[0]
        import sqlalchemy as sa

        from conveyor.store.models import ApiKeyRecord

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


# -- who may call: the server's bootstrap rule and the CLI's -------------------------


class Bootstrap:
    """The server's rule for requests, from its ``auth: required | disabled`` setting.

    :meth:`authorize` returns the caller's key after checking its role, or
    None when the server runs open: only with ``auth: disabled`` while no key
    has ever been created. Once :meth:`ApiKeys.any` is true (it never turns
    false again) every request needs a key, whatever the setting.
    """

    def __init__(self, keys: ApiKeys, mode: str = "required") -> None:
        if mode not in AUTH_MODES:
            raise InvalidInputError(
                f"auth: {mode!r}: expected one of {', '.join(AUTH_MODES)}", field="auth"
            )
        self.keys = keys
        self.mode: AuthMode = mode
        self._checked_at = -math.inf

    @property
    def open(self) -> bool:
        """Whether requests may go without a key now (re-checked every ``cache_ttl``)."""
        if self.mode == "required":
            return False
        if self.keys._any:
            return False
        now = time.monotonic()
        if now - self._checked_at >= self.keys.cache_ttl:
            self._checked_at = now
            self.keys.any()
        return not self.keys._any

    def authorize(self, token: str | None, action: str) -> ApiKey | None:
        """The verified key allowed to do ``action``; None when the server runs open."""
        _check_action(action)
        if self.open:
            return None
        key = self.keys.verify(token)
        key.require(action)
        return key


def authorize_local(keys: ApiKeys, action: str, token: str | None) -> ApiKey | None:
    """The CLI's rule: who may run a command that does ``action`` on this project.

    - ``token`` (from ``CONVEYOR_API_KEY``) given: it must verify and its role
      must allow ``action``; the key is returned.
    - no token and no key was ever created in the project: allowed, None is
      returned (bootstrap: this is how the first admin key is created).
    - no token but keys exist: AuthenticationError asking for one.
    """
    needed = _check_action(action)
    if token:
        key = keys.verify(token)
        key.require(action)
        return key
    if not keys.any():
        return None
    raise AuthenticationError(
        f"this project has API keys: set CONVEYOR_API_KEY to a key with the role "
        f"{needed!r} or higher to {action}",
        reason="missing",
        action=action,
        required_role=needed,
    )


# -- rate limits --------------------------------------------------------------------


class RateLimiter(Closeable, ABC):
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    @abstractmethod
    def _take(self, key_id: str, rate: float, burst: int) -> float:
        """Take one token; return 0.0, or the seconds until one is available (none taken)."""

    def take(self, key_id: str, rate: float | None, burst: int | None = None) -> None:
        """Spend one request of ``key_id``'s budget, or raise RateLimitedError(retry_after).

        ``rate=None`` means unlimited; ``burst=None`` means one second's worth.
        """
        if rate is None:
            return
        checked_rate, checked_burst = _check_limits(rate, burst)
        assert checked_rate is not None and checked_burst is not None
        wait = self._take(key_id, checked_rate, checked_burst)
        if wait > 0:
            raise RateLimitedError(
                f"rate limit of {checked_rate:g} requests/s (burst {checked_burst}) reached; "
                f"retry in {wait:.3f} s",
                retry_after=wait,
                rate_per_second=checked_rate,
                burst=checked_burst,
            )


class MemoryRateLimiter(RateLimiter):
    """Buckets in this process's memory, on the monotonic clock. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, key_id: str, rate: float, burst: int) -> float:
        if self._closed:
            raise ClosedError("the rate limiter is closed")
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate

    def close(self) -> None:
        self._closed = True
        self._buckets.clear()

    def __repr__(self) -> str:
        return f"MemoryRateLimiter({len(self._buckets)} buckets)"


# Refill and take in one atomic step, on the Redis server's clock (TIME), so
# workers with skewed clocks share one consistent bucket. Numbers are stored
# with 17 significant digits, which round-trip a double exactly. Returns the
# wait in seconds as a string (a Lua number would be truncated to an integer).
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

_REDIS_DEFAULT_PREFIX = "conveyor:ratelimit:"


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every worker and machine that uses the same database.

    ``redis://[user:password@]host:port/db?prefix=conveyor:ratelimit:``, with
    ``socket_timeout`` and ``connect_timeout`` (seconds). A bucket is one hash
    per key, expiring once it would be full again. Redis errors become
    BackendUnavailableError naming host and port.
    """

    def __init__(self, url: BackendURL, prefix: str, client: Any) -> None:
        self.url = url
        self.prefix = prefix
        self._client = client
        self._script = client.register_script(_TAKE_LUA)
        self._closed = False

    @classmethod
    def from_url(cls, url: str | BackendURL) -> RedisRateLimiter:
        """Build the client; no connection is made until the first take."""
        from conveyor.kv.options import check_query, float_option

        parsed = BackendURL.parse(url)
        check_query(parsed, {"socket_timeout", "connect_timeout"})
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise MissingDependencyError(
                "the Redis rate limiter needs redis-py: pip install 'conveyor[redis]'",
                package="redis",
            ) from exc
        db_text = parsed.path.strip("/") or "0"
        if not (db_text.isascii() and db_text.isdigit()):
            raise InvalidInputError(
                f"{parsed}: the path names the Redis database number (redis://host:6379/0), "
                f"got {db_text!r}",
                field="url",
            )
        prefix = parsed.query.get("prefix", _REDIS_DEFAULT_PREFIX)
        if not prefix:
            raise InvalidInputError(f"{parsed}: prefix must not be empty", field="prefix")
        host, port = parsed.host or "127.0.0.1", parsed.port or 6379
        client = redis.Redis(
            host=host,
            port=port,
            db=int(db_text),
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.scheme == "rediss",
            socket_timeout=float_option(parsed, "socket_timeout", 2.0),
            socket_connect_timeout=float_option(parsed, "connect_timeout", 2.0),
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            health_check_interval=30,
        )
        return cls(parsed.with_(host=host, port=port), prefix, client)

    def _take(self, key_id: str, rate: float, burst: int) -> float:
        import redis

        if self._closed:
            raise ClosedError(f"the rate limiter on {self.url} is closed")
        try:
            raw = self._script(keys=[self.prefix + key_id], args=[repr(rate), burst])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "rate limiter", exc) from exc
        return float(raw)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._client.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisRateLimiter({str(self.url)!r}, prefix={self.prefix!r})"


def rate_limiter_from_url(url: str | BackendURL) -> RateLimiter:
    """``memory://`` (per process) or ``redis://host:6379/0`` (shared)."""
    parsed = BackendURL.parse(url)
    if parsed.scheme == "memory":
        return MemoryRateLimiter()
    if parsed.scheme in ("redis", "rediss"):
        return RedisRateLimiter.from_url(parsed)
    raise UnknownBackendError(
        f"no rate limiter for {parsed.scheme}://; known: memory://, redis://, rediss://",
        scheme=parsed.scheme,
    )
