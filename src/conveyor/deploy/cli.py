"""``conveyor smoke`` and ``conveyor promote``."""

from __future__ import annotations

import typer

app = typer.Typer()
