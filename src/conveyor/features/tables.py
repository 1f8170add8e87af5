"""The feature store's tables: every applied version of every definition (append-only),
where each view's materialization stands, and the log of pushed rows."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import utcnow


class FeatureDefinitionRecord(Base):
    """Version ``version`` of the definition ``kind``/``name`` (entity, view, on_demand,
    service): its canonical JSON and digest, who applied it and when."""

    __tablename__ = "feature_definitions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(63))
    version: Mapped[int] = mapped_column(sa.Integer)
    digest: Mapped[str] = mapped_column(sa.String(71))
    definition: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("kind", "name", "version"),)


class MaterializationRecord(Base):
    """Where the materialization of one view stands (``conveyor features materialize``).

    Positions are nanoseconds since 1970 (UTC) of a row's created time, or of its event
    time when the view has no created time (or the row's is null): exact for any
    timestamp unit. ``watermark``: every row at or before it was written by a finished
    run. While a run is under way (``run_token`` set), ``checkpoint`` is where its last
    written chunk ended: a run that finds a token left behind (its process died)
    continues from there.
    """

    __tablename__ = "feature_materializations"

    view: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    definition: Mapped[str] = mapped_column(sa.String(71))
    watermark: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    run_token: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    run_mode: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    run_from: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    checkpoint: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    run_chunks: Mapped[int] = mapped_column(sa.Integer, default=0)
    run_rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeaturePushRecord(Base):
    """One push to a view (``project.features.push``): its rows, as they were written
    online, kept as one Parquet artifact that the view's offline rows include.

    ``digest`` is the SHA-256 of the rows as given, before the created time was filled
    in: the same rows pushed again are the same push (a retry), logged once.
    """

    __tablename__ = "feature_pushes"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    view: Mapped[str] = mapped_column(sa.String(63))
    digest: Mapped[str] = mapped_column(sa.String(71))
    artifact: Mapped[str] = mapped_column(sa.String(71))
    rows: Mapped[int] = mapped_column(sa.Integer)
    first_event: Mapped[datetime] = mapped_column()
    last_event: Mapped[datetime] = mapped_column()
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    pushed_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("view", "digest"),)
