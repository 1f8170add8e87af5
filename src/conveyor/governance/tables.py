"""Governance's table: API keys, stored as hashes.

Declared on the metadata store's ``Base``; created and changed only by this
capability's migration chain (``migrations/``), which a test holds equal to them.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.governance.roles import ROLES
from conveyor.store.models import Base, one_of
from conveyor.store.types import utcnow

__all__ = [
    "ApiKeyRecord",
]


class ApiKeyRecord(Base):
    """An API key, stored as the sha256 of its secret (the secret is shown once).

    Keys are 256-bit random tokens, so an unsalted fast hash is enough: there
    is nothing to brute-force, and a lookup by hash stays one index probe.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # The first characters of the token, safe to show ("cvy_3f9a1c").
    prefix: Mapped[str] = mapped_column(sa.String(16))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    # Token bucket: sustained requests per second and burst size; None = unlimited.
    rate_per_second: Mapped[float | None] = mapped_column(sa.Float)
    burst: Mapped[int | None] = mapped_column(sa.Integer)
    created_by: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (sa.CheckConstraint(one_of("role", ROLES), name="role"),)
