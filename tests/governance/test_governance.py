"""API keys on real stores (SQLite, PostgreSQL), roles, rate limiters in memory and Redis."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor.backends import BackendURL
from conveyor.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BackendUnavailableError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnknownBackendError,
)
from conveyor.events.log import EventLog
from conveyor.governance.access import Access
from conveyor.governance.keys import ApiKeys, hash_token
from conveyor.governance.ratelimit import (
    RATELIMIT,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from conveyor.governance.roles import ROLES, actions, allows, require
from conveyor.governance.tables import ApiKeyRecord
from conveyor.store.database import MetadataStore
from conveyor.testing.matrix import only
from conveyor.testing.services import REDIS_URL

# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def store(store_url: str) -> Iterator[MetadataStore]:
    with MetadataStore.from_url(store_url) as opened:
        yield opened


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def events(events_path: Path) -> Iterator[EventLog]:
    with EventLog.from_url(f"sqlite:///{events_path}") as log:
        yield log


@pytest.fixture
def keys(store: MetadataStore, events: EventLog) -> ApiKeys:
    return ApiKeys(store, events)


def set_expiry(store: MetadataStore, name: str, when: datetime) -> None:
    with store.session() as session:
        session.execute(
            sa.update(ApiKeyRecord).where(ApiKeyRecord.name == name).values(expires_at=when)
        )


# -- create, verify, revoke, expire ---------------------------------------------------


def test_create_returns_a_token_that_verifies(keys: ApiKeys) -> None:
    token, key = keys.create("ci", "deployer", rate_per_second=5, burst=10, actor="alice")
    assert token.startswith("cvy_") and len(token) == 4 + 43
    assert key.prefix == token[:10]
    assert (key.name, key.role, key.rate_per_second, key.burst) == ("ci", "deployer", 5.0, 10)
    assert key.created_by == "alice" and key.limited
    verified = keys.verify(token)
    assert verified == key
    assert keys.get("ci") == key
    assert [k.name for k in keys.list()] == ["ci"]
    other_token, _ = keys.create("other", "viewer")
    assert other_token != token
    assert keys.verify(other_token).name == "other"


def test_a_rate_without_burst_gets_one_seconds_worth(keys: ApiKeys) -> None:
    _, key = keys.create("a", "predictor", rate_per_second=2.5)
    assert key.burst == 3
    _, unlimited = keys.create("b", "predictor")
    assert unlimited.rate_per_second is None and unlimited.burst is None
    assert not unlimited.limited


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"role": "root"}, "role"),
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"rate_per_second": 0}, "rate_per_second"),
        ({"rate_per_second": float("nan")}, "rate_per_second"),
        ({"rate_per_second": 1, "burst": 0}, "burst"),
        ({"burst": 5}, "burst"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at"),
        ({"expires_at": datetime(2999, 1, 1)}, "expires_at"),  # naive
    ],
)
def test_bad_create_arguments_name_the_field(
    keys: ApiKeys, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"name": "k", "role": "viewer", **kwargs}
    name, role = args.pop("name"), args.pop("role")
    with pytest.raises(InvalidInputError) as caught:
        keys.create(name, role, **args)  # type: ignore[arg-type]
    assert caught.value.context["field"] == field
    assert not keys.any()


def test_names_are_unique_even_after_revocation(keys: ApiKeys) -> None:
    keys.create("ci", "viewer")
    with pytest.raises(AlreadyExistsError, match="'ci' already exists"):
        keys.create("ci", "admin")
    keys.revoke("ci")
    with pytest.raises(AlreadyExistsError):
        keys.create("ci", "viewer")


def test_revoked_key_is_refused_at_once_here_and_after_the_cache_ttl_elsewhere(
    store: MetadataStore, keys: ApiKeys
) -> None:
    token, _ = keys.create("ci", "predictor")
    other_worker = ApiKeys(store, None, cache_ttl=3600)
    assert other_worker.verify(token).name == "ci"  # now cached there
    revoked = keys.revoke("ci", actor="bob")
    assert revoked.revoked_at is not None
    with pytest.raises(AuthenticationError, match="'ci' was revoked") as caught:
        keys.verify(token)
    assert caught.value.context["reason"] == "revoked"
    # The other worker still holds its cached copy until the TTL passes (documented);
    # dropping its cache stands for the TTL running out.
    assert other_worker.verify(token).name == "ci"
    other_worker.clear_cache()
    with pytest.raises(AuthenticationError, match="revoked"):
        other_worker.verify(token)
    uncached = ApiKeys(store, None, cache_ttl=0)
    with pytest.raises(AuthenticationError, match="revoked"):
        uncached.verify(token)


def test_revoke_is_idempotent_and_unknown_names_are_not_found(
    keys: ApiKeys, events: EventLog
) -> None:
    keys.create("ci", "viewer")
    first = keys.revoke("ci")
    again = keys.revoke("ci")
    assert again.revoked_at == first.revoked_at
    kinds = [e.kind for e in events.latest(10)]
    assert kinds == ["auth.key_created", "auth.key_revoked"]
    with pytest.raises(NotFoundError, match="no API key named 'nope'"):
        keys.revoke("nope")
    with pytest.raises(NotFoundError):
        keys.get("nope")


def test_expired_key_is_refused(store: MetadataStore, keys: ApiKeys) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    token, key = keys.create("temp", "viewer", expires_at=soon)
    assert key.expires_at == soon
    assert keys.verify(token).name == "temp"
    set_expiry(store, "temp", datetime.now(UTC) - timedelta(seconds=1))
    fresh = ApiKeys(store, None)
    with pytest.raises(AuthenticationError, match="'temp' expired at") as caught:
        fresh.verify(token)
    assert caught.value.context["reason"] == "expired"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("cvy_short", "malformed"),
        ("Bearer cvy_" + "a" * 43, "malformed"),
        ("xyz_" + "a" * 43, "malformed"),
        ("cvy_" + "a" * 42 + "!", "malformed"),
        ("cvy_" + "a" * 43, "unknown"),
    ],
)
def test_missing_malformed_and_unknown_tokens(
    keys: ApiKeys, token: str | None, reason: str
) -> None:
    keys.create("real", "admin")
    with pytest.raises(AuthenticationError) as caught:
        keys.verify(token)
    assert caught.value.context["reason"] == reason
    if token:
        body = str(caught.value.to_dict())
        assert token not in body
        assert token[4:14] not in body


def test_unknown_token_stays_unknown_while_cached_then_a_new_key_works(keys: ApiKeys) -> None:
    # Negative results are cached by hash; a newly created key has a new hash.
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="unknown"):
            keys.verify("cvy_" + "b" * 43)
    token, _ = keys.create("new", "viewer")
    assert keys.verify(token).name == "new"


def test_the_token_is_never_stored_nor_logged(
    store: MetadataStore,
    keys: ApiKeys,
    events: EventLog,
    events_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        token, key = keys.create("ci", "deployer", rate_per_second=1, actor="alice")
        keys.verify(token)
        keys.revoke("ci", actor="bob")
        with pytest.raises(AuthenticationError):
            keys.verify(token)
    secret = token[4:]
    with store.read() as session:
        rows = session.execute(sa.select(ApiKeyRecord.__table__)).all()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert secret not in stored and token not in stored
    assert hash_token(token) in stored  # what is stored is the hash
    if store.url.scheme == "sqlite":
        dump = "\n".join(sqlite3.connect(store.url.location).iterdump())
        assert secret not in dump
    dump = "\n".join(sqlite3.connect(events_path).iterdump())
    assert secret not in dump
    assert "auth.key_created" in dump and "auth.key_revoked" in dump
    assert secret not in caplog.text
    recorded = events.latest(10)
    assert [(e.kind, e.actor, e.subject) for e in recorded] == [
        ("auth.key_created", "alice", "ci"),
        ("auth.key_revoked", "bob", "ci"),
    ]
    for event in recorded:
        assert event.payload["name"] == "ci" and event.payload["role"] == "deployer"
        assert event.payload["key_id"] == key.id
        assert secret not in str(event.to_dict())


# -- roles ----------------------------------------------------------------------------


_READ = {"serving.read", "models.read"}
_DEPLOY = {
    "serving.deploy",
    "serving.route",
    "serving.rollback",
    "models.register",
    "models.promote",
    "training.train",
    "training.evaluate",
    "training.optimize",
    "pipelines.run",
    "audit.read",
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(_READ | _DEPLOY | {"serving.predict", "keys.manage"}))
def test_roles_matrix(role: str, action: str) -> None:
    expected = {
        "viewer": _READ,
        "predictor": _READ | {"serving.predict"},
        "deployer": _READ | {"serving.predict"} | _DEPLOY,
        "admin": set(actions()),
    }[role]
    assert allows(role, action) is (action in expected)
    if action in expected:
        require(role, action)
    else:
        with pytest.raises(PermissionDeniedError) as caught:
            require(role, action)
        assert repr(action) in caught.value.message
        assert repr(actions()[action]) in caught.value.message
        assert caught.value.context["required_role"] == actions()[action]


def test_every_action_is_declared_by_a_capability_with_a_known_role() -> None:
    from conveyor.capability import capabilities

    declared = {a: c.name for c in capabilities() for a in c.actions}
    assert set(actions()) == set(declared)
    assert all(role in ROLES for role in actions().values())
    # A capability's actions are named after it (or its own vocabulary), never bare verbs.
    assert all("." in action for action in declared), declared


def test_unknown_role_or_action_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="role 'root'"):
        require("root", "serving.read")
    with pytest.raises(InvalidInputError, match="action 'delete' is not declared"):
        require("admin", "delete")


# -- who may act: one rule for the CLI and the servers -------------------------------------


def test_any_counts_revoked_keys(store: MetadataStore, keys: ApiKeys) -> None:
    assert not keys.any()
    keys.create("only", "admin")
    assert keys.any()
    keys.revoke("only")
    assert ApiKeys(store, None).any()  # revoking every key does not reopen anything


def test_server_runs_open_only_when_disabled_and_no_key_exists(store: MetadataStore) -> None:
    writer = ApiKeys(store, None)
    required = Access.for_server(ApiKeys(store, None, cache_ttl=0), "required")
    disabled = Access.for_server(ApiKeys(store, None, cache_ttl=0), "disabled")
    assert not required.open
    with pytest.raises(AuthenticationError, match="no API key"):
        required.authorize(None, "serving.read")
    assert disabled.open
    opened = disabled.authorize(None, "keys.manage")
    assert opened.key is None and opened.actor == "anonymous"
    token, _ = writer.create("viewer", "viewer")
    assert not disabled.open
    with pytest.raises(AuthenticationError):
        disabled.authorize(None, "serving.read")
    caller = disabled.authorize(token, "serving.read")
    assert caller.key is not None and caller.actor == "key:viewer"
    with pytest.raises(PermissionDeniedError):
        disabled.authorize(token, "serving.predict")
    with pytest.raises(InvalidInputError, match="auth: 'off'"):
        Access.for_server(writer, "off")


def test_local_rule_allows_the_first_key_then_needs_a_key(keys: ApiKeys) -> None:
    local = Access(
        keys, open_until_first_key=True, anonymous="cli:alice", missing_hint="set CONVEYOR_API_KEY"
    )
    assert local.authorize(None, "keys.manage").actor == "cli:alice"  # bootstrap
    admin, _ = keys.create("admin", "admin")
    viewer, _ = keys.create("viewer", "viewer")
    missing = r"'keys.manage' needs .*'admin'.*CONVEYOR_API_KEY"
    with pytest.raises(AuthenticationError, match=missing):
        local.authorize(None, "keys.manage")
    with pytest.raises(PermissionDeniedError):
        local.authorize(viewer, "keys.manage")
    found = local.authorize(admin, "keys.manage")
    assert found.key is not None and found.key.name == "admin"
    # The CLI and a server record the same actor for the same key.
    server = Access.for_server(keys, "required")
    assert server.authorize(admin, "keys.manage").actor == found.actor == "key:admin"


def test_identify_is_the_same_rule_without_a_role(keys: ApiKeys) -> None:
    """For what no capability restricts to a role: any valid key, or anyone while open."""
    local = Access(
        keys, open_until_first_key=True, anonymous="cli:alice", missing_hint="set CONVEYOR_API_KEY"
    )
    assert local.identify(None).actor == "cli:alice"
    viewer, _ = keys.create("viewer", "viewer")
    caller = local.identify(viewer)
    assert caller.key is not None and caller.actor == "key:viewer"
    with pytest.raises(AuthenticationError, match="needs one; set CONVEYOR_API_KEY"):
        local.identify(None)
    with pytest.raises(AuthenticationError):
        local.identify("cvy_" + "z" * 43)
    keys.revoke("viewer")
    with pytest.raises(AuthenticationError, match="revoked"):
        local.identify(viewer)


def test_the_event_loop_path_reads_the_store_only_on_a_miss(
    store: MetadataStore, keys: ApiKeys
) -> None:
    import asyncio

    token, _ = keys.create("p", "predictor")
    reader = ApiKeys(store, None, cache_ttl=60)
    access = Access.for_server(reader, "required")
    assert reader.verify_cached(token) is None  # nothing in memory yet: a store read is needed
    caller = asyncio.run(access.authorize_async(token, "serving.predict"))
    assert caller.actor == "key:p"
    cached = reader.verify_cached(token)  # now answered from memory, no store read
    assert cached is not None and cached.name == "p"
    with pytest.raises(AuthenticationError, match="malformed"):
        reader.verify_cached("cvy_short")  # known without the store either
    with pytest.raises(PermissionDeniedError):
        asyncio.run(access.authorize_async(token, "serving.route"))
    open_access = Access.for_server(ApiKeys(store, None), "disabled")
    with pytest.raises(AuthenticationError):  # keys exist: closed, learnt in a thread
        asyncio.run(open_access.authorize_async(None, "serving.read"))


# -- rate limiters ------------------------------------------------------------------------


@pytest.fixture
def limiter(ratelimit_url: str) -> Iterator[RateLimiter]:
    with RATELIMIT.open(ratelimit_url) as opened:
        yield opened


def test_burst_then_refusal_with_a_sensible_retry_after(limiter: RateLimiter) -> None:
    for _ in range(3):
        limiter.take("k1", 2.0, 3)
    with pytest.raises(RateLimitedError) as caught:
        limiter.take("k1", 2.0, 3)
    retry = caught.value.retry_after
    assert 0 < retry <= 0.5  # one token at 2/s
    assert caught.value.to_dict()["code"] == "rate_limited"
    assert caught.value.to_dict()["retry_after"] == retry
    limiter.take("k2", 2.0, 3)  # another key has its own bucket


def test_a_take_of_many_tokens_at_once(limiter: RateLimiter) -> None:
    # tokens per minute: 100 a minute, a call of 60 tokens, then one of 50 waits
    limiter.take("tpm", 100 / 60, 100, amount=60, unit="tokens")
    with pytest.raises(RateLimitedError, match="tokens/s") as caught:
        limiter.take("tpm", 100 / 60, 100, amount=50, unit="tokens")
    assert 5.0 < caught.value.retry_after <= 6.1  # 10 more tokens at 1.67/s
    limiter.take("tpm", 100 / 60, 100, amount=40, unit="tokens")  # what is left fits
    with pytest.raises(InvalidInputError, match="more than the limit allows"):
        limiter.take("tpm", 100 / 60, 100, amount=101, unit="tokens")


def test_bucket_refills_after_time_passes(limiter: RateLimiter) -> None:
    refused = None
    for _ in range(10_000):
        try:
            limiter.take("fast", 200.0, 2)
        except RateLimitedError as exc:
            refused = exc
            break
    assert refused is not None
    assert 0 < refused.retry_after <= 1 / 200
    time.sleep(refused.retry_after + 0.002)  # the refill is the behaviour under test
    limiter.take("fast", 200.0, 2)


def test_unlimited_and_invalid_limits(limiter: RateLimiter) -> None:
    for _ in range(100):
        limiter.take("free", None)
    with pytest.raises(InvalidInputError, match="rate_per_second"):
        limiter.take("k", -1.0, 1)
    with pytest.raises(InvalidInputError, match="burst"):
        limiter.take("k", 1.0, 0)


def test_memory_limiter_arithmetic_on_a_given_clock() -> None:
    now = [100.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    limiter.take("k", 4.0, 2)
    limiter.take("k", 4.0, 2)
    with pytest.raises(RateLimitedError) as caught:
        limiter.take("k", 4.0, 2)
    assert caught.value.retry_after == pytest.approx(0.25)
    now[0] += 0.125  # half a token
    with pytest.raises(RateLimitedError) as caught:
        limiter.take("k", 4.0, 2)
    assert caught.value.retry_after == pytest.approx(0.125)
    now[0] += 10.0  # refills to the burst, not beyond
    limiter.take("k", 4.0, 2)
    limiter.take("k", 4.0, 2)
    with pytest.raises(RateLimitedError):
        limiter.take("k", 4.0, 2)


@only("ratelimit_url", "redis")
def test_two_redis_limiters_share_one_bucket(ratelimit_url: str) -> None:
    url = ratelimit_url
    with RedisRateLimiter.from_url(url) as one, RedisRateLimiter.from_url(url) as two:
        one.take("shared", 1.0, 2)
        two.take("shared", 1.0, 2)
        with pytest.raises(RateLimitedError):
            one.take("shared", 1.0, 2)
        with pytest.raises(RateLimitedError):
            two.take("shared", 1.0, 2)


@only("ratelimit_url", "redis")
def test_redis_bucket_lives_under_the_prefix_and_expires(ratelimit_url: str) -> None:
    import redis

    redis_prefix = BackendURL.parse(ratelimit_url).query["prefix"]
    with RedisRateLimiter.from_url(ratelimit_url) as limiter:
        limiter.take("k", 10.0, 5)
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.exists(f"{redis_prefix}k")
        assert 0 < client.pttl(f"{redis_prefix}k") <= 1500


def test_limiter_urls() -> None:
    with RATELIMIT.open("memory://") as memory:
        assert isinstance(memory, MemoryRateLimiter)
        memory.ping()
    with pytest.raises(UnknownBackendError, match="memory://, redis://"):
        RATELIMIT.open("nats://127.0.0.1:4222")
    with pytest.raises(InvalidInputError, match="no path or options"):
        RATELIMIT.open("memory://somewhere")
    with pytest.raises(InvalidInputError, match="database number"):
        RATELIMIT.open("redis://127.0.0.1:6379/zero")
    with pytest.raises(InvalidInputError, match="unknown"):
        RATELIMIT.open("redis://127.0.0.1:6379/0?colour=red")


def test_unreachable_redis_names_host_and_port() -> None:
    limiter = RATELIMIT.open("redis://:hunter2@127.0.0.1:1/0?connect_timeout=0.2")
    with limiter, pytest.raises(BackendUnavailableError) as caught:
        limiter.take("k", 1.0, 1)
    assert "127.0.0.1:1" in caught.value.message
    assert "hunter2" not in caught.value.message
    with pytest.raises(BackendUnavailableError, match="ratelimit"):
        limiter.ping()  # what conveyor doctor calls
