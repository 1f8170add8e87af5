"""The model server's section of ``conveyor.yaml``: ``serving:``.

Every field can be set from the environment: ``CONVEYOR_SERVING__PORT=8080``,
``CONVEYOR_SERVING__BATCHING__MAX_WAIT_MS=1``. Where the rate limiter keeps its
buckets is a backend URL, ``backends.ratelimit`` (``CONVEYOR_RATELIMIT``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.config import URL

if TYPE_CHECKING:
    from conveyor.backends import BackendURL
    from conveyor.config import ProjectSpec

__all__ = [
    "SECTIONS",
    "BatchingSpec",
    "DependenciesSpec",
    "DrainSpec",
    "ServingSpec",
    "serving_of",
]


class BatchingSpec(BaseModel):
    """Dynamic batching per served version (``max_batch_size: 1`` turns it off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, le=4096, description="Rows per model call, at most.")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait for a batch to fill.")
    max_queue: int = Field(
        1024, ge=1, description="Queued rows per version before 503 + Retry-After."
    )
    inline_max_ms: float = Field(
        0.5,
        ge=0,
        le=10,
        description="A request that arrives while the worker has no other in flight calls "
        "the model on the event loop, not the batcher's thread, when its measured cost is at "
        "most this (saves two thread hand-offs; bounds how long the loop is held). 0: never.",
    )


class DependenciesSpec(BaseModel):
    """Timeouts and circuit breakers for the services on the request path (cache, rate
    limiter, metadata store): a slow or dead one is bypassed, never waited on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache_timeout_s: float = Field(
        0.02, gt=0, le=10, description="Longest wait for the prediction cache; then a miss."
    )
    ratelimit_timeout_s: float = Field(
        0.05,
        gt=0,
        le=10,
        description="Longest wait for the shared rate limiter; then this worker's own buckets.",
    )
    store_timeout_s: float = Field(
        0.5,
        gt=0,
        le=30,
        description="Longest wait for the store to verify a key not in memory; then the "
        "keys read before (stale_keys_s).",
    )
    failures: int = Field(
        3, ge=1, le=100, description="Failures in a row after which a service is bypassed."
    )
    reset_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Wait before one trial call to a bypassed service (doubles to 30 s).",
    )
    stale_keys_s: float = Field(
        300,
        ge=0,
        description="While the store is down, keys read within this many seconds still "
        "authenticate (revoked and expired ones stay refused); 0: refuse with 503.",
    )


class DrainSpec(BaseModel):
    """What a worker does on SIGTERM before it exits (``conveyor.serving.drain``): readiness
    fails at once while requests are still answered, then it stops accepting, finishes
    what is in flight and exits 0. SIGINT (Ctrl-C) or a second SIGTERM skips the wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Readiness fails at least this long before the server stops accepting: "
        "the time its balancer or Kubernetes takes to see it (probe period x failure "
        "threshold).",
    )
    quiet_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="After min_s, the server stops accepting once no request came for this long.",
    )
    max_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="The longest drain window: requests still coming, the server stops "
        "accepting after this anyway.",
    )
    graceful_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Once it stopped accepting, the longest wait for the requests in flight "
        "(then they are cut); a stop takes at most max_s + graceful_s plus the shut-down.",
    )
    shutdown_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="The longest shut-down after the requests (batch queues, the event log's "
        "last commit): past it the process exits anyway, logging the threads still waiting "
        "on a service that does not answer.",
    )


class ServingSpec(BaseModel):
    """``conveyor serve``: where it listens, who may call it, and how it batches and caches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")
    auth: Literal["required", "disabled"] = Field(
        "required",
        description="required: every request needs an API key; disabled: open until the "
        "first key is created (local development).",
    )
    rate_limiter: str | None = Field(
        None,
        description="Retired: the rate limiter is the backend URL backends.ratelimit.",
        json_schema_extra={"retired": True},
    )
    allow_unrouted_versions: bool = Field(
        False,
        description="true: any caller allowed to predict may name a version on no route "
        "(?version=N, /v2/.../versions/N); false: that needs the deployer role.",
    )
    max_body_bytes: int = Field(8 << 20, ge=1024, description="Larger request bodies get 413.")
    header_timeout_s: float = Field(
        10,
        gt=0,
        le=300,
        description="A connection that has not sent a request's headers within this is "
        "closed (slow-header clients).",
    )
    body_timeout_s: float = Field(
        30,
        gt=0,
        le=3600,
        description="Longest wait for the next piece of a request body; a trickled body gets 408.",
    )
    keep_alive_s: float = Field(
        5, gt=0, le=600, description="An idle keep-alive connection is closed after this."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections and requests in flight per worker; beyond it new requests "
        "get 503 at once.",
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    drain: DrainSpec = Field(default_factory=DrainSpec)
    dependencies: DependenciesSpec = Field(default_factory=DependenciesSpec)
    closed_form: bool = Field(
        True,
        description="Predict a scikit-learn linear model (LogisticRegression, "
        "LinearRegression, ...) by its formula, past scikit-learn's per-call input checks "
        "(the signature has checked the input): the same answers, checked against the "
        "model at load, in about 3 us instead of 120 a row; false: always the model's own "
        "predict.",
    )
    cache: bool = Field(True, description="Cache predictions in the cache backend.")
    cache_ttl_s: float = Field(300, gt=0, description="Seconds a cached prediction lives.")
    poll_interval_s: float = Field(
        0.5, gt=0, le=10, description="How often workers re-read the routes."
    )
    listen_url: URL | None = Field(
        None,
        description="PostgreSQL: where workers LISTEN for route changes (pushed within "
        "milliseconds; polling stays as the fallback). Default: the store's URL. Set it to "
        "the database directly (or a session-mode pool) when the store's URL is a "
        "transaction-mode pooler such as PgBouncer, which cannot hold a LISTEN.",
    )
    payload_sample_rate: float = Field(
        0.0, ge=0, le=1, description="Share of predictions whose inputs go into the event log."
    )
    ssl_certfile: str | None = Field(None, description="TLS certificate (PEM).")
    ssl_keyfile: str | None = Field(None, description="TLS private key (PEM).")

    @field_validator("listen_url")
    @classmethod
    def _postgresql(cls, value: BackendURL | None) -> BackendURL | None:
        if value is not None and value.scheme != "postgresql":
            raise ValueError(
                f"{value} is not a PostgreSQL URL: only PostgreSQL has LISTEN/NOTIFY "
                "(expected postgresql://user@host:5432/db)"
            )
        return value

    @field_validator("rate_limiter")
    @classmethod
    def _moved(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "the rate limiter moved to backends.ratelimit (environment: CONVEYOR_RATELIMIT); "
                f"write `backends: {{ratelimit: {value}}}` instead"
            )
        return value


SECTIONS: dict[str, Any] = {
    "serving": (
        ServingSpec,
        Field(
            default_factory=ServingSpec, description="conveyor serve: listening, auth, batching."
        ),
    ),
}


def serving_of(spec: ProjectSpec) -> ServingSpec:
    """The ``serving:`` section."""
    serving: ServingSpec = spec.section("serving")
    return serving
