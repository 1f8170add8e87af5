"""Writing what the deploy commands generate: whole files or none."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_whole"]


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a command killed
    mid-write leaves the old file or the new one, never half of one (which a later
    ``conveyor build`` or ``ci init`` would take for a hand edit and refuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
