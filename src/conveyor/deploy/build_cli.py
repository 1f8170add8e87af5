"""``conveyor build``: the image recipe, its locked requirements and docker-compose."""

from __future__ import annotations

import typer

app = typer.Typer()
