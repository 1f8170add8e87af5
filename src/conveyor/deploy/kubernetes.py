"""``conveyor deploy --target kubernetes --env NAME``: the chart rendered from the spec."""

from __future__ import annotations
