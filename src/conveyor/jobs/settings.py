"""The jobs section of ``conveyor.yaml``: ``jobs:``.

::

    jobs:
      url: nats://127.0.0.1:4222    # the JetStream server holding the queue and the results
      name: conveyor_jobs           # stream CONVEYOR_JOBS, subject conveyor_jobs.requests,
                                    # KV bucket conveyor_jobs_results, consumer workers
      result_ttl_s: 86400           # how long a job's record and result are kept
      max_queued: 1000000           # requests waiting; beyond, submissions get 503
      ack_wait_s: 30                # a worker silent this long loses its job to another
      max_deliver: 5                # deliveries before a job is failed ("gave up")
      concurrency: 32               # jobs one worker scores at once
      submit_timeout_s: 2           # longest wait for NATS to take a submission; then 503
      callback_secret: null         # HMAC-SHA256 key of callbacks (required to accept one)
      callback_attempts: 6
      callback_backoff_s: 0.5       # first retry; doubles (jittered) up to the max
      callback_max_backoff_s: 30
      callback_timeout_s: 5

Every field can be set from the environment (``CONVEYOR_JOBS__URL=nats://nats:4222``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "JobsSpec", "jobs_of"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class JobsSpec(BaseModel):
    """The asynchronous prediction queue: where it lives, its limits, its callbacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        "nats://127.0.0.1:4222",
        description="The NATS JetStream server holding the queue (a stream) and the job "
        "records (a KV bucket): nats://[user:password@]host:port.",
    )
    name: str = Field(
        "conveyor_jobs",
        description="Names the stream (upper case), its subject (NAME.requests) and the "
        "results bucket (NAME_results); one queue per name.",
    )
    result_ttl_s: float = Field(
        86_400.0, gt=0, description="Seconds a job's record and result are kept (the KV TTL)."
    )
    max_queued: int = Field(
        1_000_000,
        ge=1,
        description="Requests the stream holds; beyond, a submission is refused (503).",
    )
    ack_wait_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a worker may hold a job without a sign of life before JetStream "
        "gives it to another worker (a crashed worker's jobs are redelivered after this).",
    )
    max_deliver: int = Field(
        5, ge=1, description="Deliveries of one job before it is failed (gave up)."
    )
    concurrency: int = Field(32, ge=1, le=10_000, description="Jobs one worker scores at once.")
    submit_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="The longest a server waits for NATS to take an async request (or a job "
        "read); then 503. After serving.dependencies.failures such failures in a row the "
        "queue is bypassed: requests get 503 at once, with Retry-After, until a trial "
        "submission every serving.dependencies.reset_s (doubling to 30 s) succeeds.",
    )
    callback_secret: SecretStr | None = Field(
        None,
        description="The HMAC-SHA256 key callbacks are signed with; a request with a "
        "callback_url is refused while it is unset.",
    )
    callback_attempts: int = Field(
        6, ge=1, le=50, description="Deliveries of a callback before giving up."
    )
    callback_backoff_s: float = Field(
        0.5, gt=0, description="The first retry's delay; it doubles (with full jitter)."
    )
    callback_max_backoff_s: float = Field(30.0, gt=0, description="The longest retry delay.")
    callback_timeout_s: float = Field(5.0, gt=0, description="One callback's timeout.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("letters, digits, _ and - only (1-64): it names a stream and a bucket")
        return value

    @property
    def stream(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def subject(self) -> str:
        return f"{self.name}.requests"

    @property
    def bucket(self) -> str:
        return f"{self.name}_results"


SECTIONS: dict[str, Any] = {
    "jobs": (
        JobsSpec,
        Field(
            default_factory=JobsSpec,
            description="Asynchronous predictions: the JetStream queue, results, callbacks.",
        ),
    ),
}


def jobs_of(spec: ProjectSpec) -> JobsSpec:
    """The ``jobs:`` section (defaults when the spec has none)."""
    found = getattr(spec, "jobs", None)
    return found if isinstance(found, JobsSpec) else JobsSpec()
