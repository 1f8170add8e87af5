"""``conveyor monitor grafana`` and ``conveyor monitor prometheus-rules``: generated from the
spec, for teams that already run Grafana and Prometheus.

::

    conveyor monitor grafana -o conveyor-dashboard.json     # import it in Grafana
    conveyor monitor prometheus-rules -o conveyor.rules.yml  # rule_files: of prometheus.yml
    conveyor monitor prometheus-rules --check                # and run promtool check rules on it
    conveyor monitor alertmanager -o alertmanager.yml --check  # amtool check-config

They read only ``conveyor.yaml`` (no store, no server): no role is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import ProjectOpt, errors

__all__ = ["alertmanager_command", "grafana_command", "prometheus_rules_command"]

OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write it to this file (default: print it)."),
]


@errors
def grafana_command(
    output: OutputOpt = None,
    uid: Annotated[
        str | None, typer.Option(help="The dashboard's uid (default: conveyor-PROJECT).")
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """A Grafana dashboard (JSON) of the serving monitors over the server's Prometheus
    series: traffic, errors, latency p50/p95/p99, batching, cache, shed load, CPU and memory,
    per model, version and arm, with the SLOs and alert thresholds drawn."""
    import orjson

    from conveyor.config import load_spec
    from conveyor.monitoring.interop.grafana import dashboard

    board = dashboard(load_spec(project), uid=uid)
    text = orjson.dumps(board, option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    _write(output, text)
    panels = sum(1 for p in board["panels"] if p["type"] != "row")
    typer.echo(f"wrote the dashboard {board['uid']!r} ({panels} panels) to {output}", err=True)


@errors
def prometheus_rules_command(
    output: OutputOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Run `promtool check rules` on the result.")
    ] = False,
    project: ProjectOpt = None,
) -> None:
    """Prometheus recording rules (conveyor:MONITOR:WINDOW) and alerting rules translated
    from Conveyor's own alert rules (same names, thresholds, for and severity), as a rule
    file. Rules on monitors Prometheus has no series for are listed in its header."""
    from conveyor.config import load_spec
    from conveyor.monitoring.interop.prometheus import rules_document, rules_yaml

    spec = load_spec(project)
    text = rules_yaml(spec)
    if output is not None:
        _write(output, text)
    elif not check:
        typer.echo(text, nl=False)
    if check:
        _promtool(text)
    if output is not None:
        document, exported = rules_document(spec)
        counts = [len(g["rules"]) for g in document["groups"]]
        typer.echo(
            f"wrote {counts[0]} recording rules and {sum(counts[1:])} alerting rules to {output}"
            + (
                f" ({len(exported)} on monitors exported by GET /v1/monitor/metrics: see the "
                "header)"
                if exported
                else ""
            ),
            err=True,
        )


@errors
def alertmanager_command(
    output: OutputOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Run `amtool check-config` on the result.")
    ] = False,
    project: ProjectOpt = None,
) -> None:
    """An Alertmanager configuration for the generated rules' alerts: grouped by alert and
    model, repeated and inhibited as Conveyor's own (monitoring.alerts), sent to receivers
    made from its sinks (webhook, Slack, email; PagerDuty keys are left to you)."""
    from conveyor.config import load_spec
    from conveyor.monitoring.interop.alertmanager import alertmanager_yaml

    text = alertmanager_yaml(load_spec(project))
    if output is not None:
        _write(output, text)
    elif not check:
        typer.echo(text, nl=False)
    if check:
        _check("amtool", ["check-config"], text, "prometheus-alertmanager")
    if output is not None:
        typer.echo(f"wrote the Alertmanager configuration to {output}", err=True)


def _write(path: Path, text: str) -> None:
    from conveyor.errors import InvalidInputError

    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(
            f"--output {path}: cannot write it: {exc.strerror or exc}", field="output"
        ) from None


def _promtool(text: str) -> None:
    _check("promtool", ["check", "rules"], text, "prometheus")


def _check(tool_name: str, args: list[str], text: str, package: str) -> None:
    """``tool_name ARGS FILE`` on ``text``; its refusal is a ConfigError with its words."""
    import shutil
    import subprocess
    import tempfile

    from conveyor.errors import ConfigError, MissingDependencyError

    tool = shutil.which(tool_name)
    if tool is None:
        raise MissingDependencyError(
            f"--check needs {tool_name} (Debian/Ubuntu: apt-get install {package})",
            dependency=tool_name,
        )
    with tempfile.NamedTemporaryFile("w", suffix=".yml", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        done = subprocess.run(
            [tool, *args, f.name], capture_output=True, text=True, check=False, timeout=60
        )
    if done.returncode != 0:
        raise ConfigError(
            f"{tool_name} {' '.join(args)} refused the generated file: "
            + (done.stderr or done.stdout).strip()
        )
    typer.echo(done.stdout.strip().replace(f.name, "the file"), err=True)
