"""The ``monitoring.sink`` section of ``conveyor.yaml``: the event log moved off a broker.

::

    monitoring:
      sink:
        source: nats://127.0.0.1:4222/CONVEYOR_EVENTS   # what the servers write to
        durable: conveyor-sink      # the JetStream consumer that remembers where it is
        batch_events: 20000         # events held (in PostgreSQL, not yet acked) at most
        interval_s: 1.0             # longest an event waits for its Parquet file and its ack
        ack_wait_s: 60              # redelivery of an event not acked by then

Every field can be set from the environment (``CONVEYOR_MONITORING__SINK__SOURCE``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SinkSpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SinkSpec(BaseModel):
    """``conveyor events sink``: moves the events servers write to a broker (``nats://``)
    into this project's SQL event log and its Parquet copy."""

    model_config = _STRICT

    source: str | None = Field(
        None,
        description="The broker's event log the sink reads (nats://host:4222/STREAM); "
        "--source overrides it.",
    )
    durable: str = Field(
        "conveyor-sink",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Name of the durable JetStream consumer (it keeps the sink's position).",
    )
    batch_events: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Most events held in PostgreSQL before their Parquet file is written and "
        "they are acked.",
    )
    interval_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="Longest an event waits between PostgreSQL and its Parquet file and ack.",
    )
    ack_wait_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="An event delivered and not acked within this is delivered again (a "
        "sink killed mid-batch); keep it above interval_s plus a compaction.",
    )
