"""``conveyor ci init --provider github|gitlab``: a CI/CD pipeline for the project."""

from __future__ import annotations

import typer

ci_app = typer.Typer(help="CI/CD pipeline templates for the project.", no_args_is_help=True)
