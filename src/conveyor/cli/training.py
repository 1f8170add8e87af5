"""``conveyor train`` and ``conveyor optimize``: candidates from the spec, optimized versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    echo_report,
    errors,
    open_project,
)

if TYPE_CHECKING:
    from conveyor.training.optimize.versions import Optimized


@errors
def train(
    name: Annotated[str, typer.Argument(help="Model name under models: in conveyor.yaml.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="key=value overriding the spec's params.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: drawn and recorded).")] = None,
    incremental: Annotated[
        bool | None,
        typer.Option(
            "--incremental/--from-scratch",
            help="Continue the champion with partial_fit (default: spec's retrain.incremental).",
        ),
    ] = None,
    auto_promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            help="Make it champion if its gates pass (default: the spec's auto_promote).",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train NAME on its dataset's latest version, run its gates, and register it.

    A candidate that passes becomes challenger (and champion with --promote);
    one that fails stays registered with its report. Exit code 3 when the gates failed.
    """
    from conveyor.cli.models import _params
    from conveyor.training.flow import train_candidate

    with open_project(project) as proj:
        who = authorized(proj, "training.train")
        candidate = train_candidate(
            proj,
            name,
            params=_params(param),
            seed=seed,
            actor=who,
            incremental=incremental,
            auto_promote=auto_promote,
        )
        if as_json:
            echo_json(candidate.to_dict())
        else:
            echo_report(candidate.report, as_json=False)
            out = console()
            moved = [
                a
                for a, m in (
                    ("challenger", candidate.challenger),
                    ("champion", candidate.promotion),
                )
                if m
            ]
            out.print(
                f"{candidate.version.ref}: {candidate.report.verdict}"
                + (f"; now {' and '.join(moved)}" if moved else "; no alias moved")
            )
    if not candidate.passed:
        check_failed()


@errors
def optimize(
    ref: Annotated[str, typer.Argument(help="Version to optimize: name@N or name@alias.")],
    method: Annotated[
        str, typer.Option(help="onnx (scikit-learn, PyTorch), prune (PyTorch), distill.")
    ] = "onnx",
    amount: Annotated[float, typer.Option(help="prune: share of weights to zero.")] = 0.5,
    max_depth: Annotated[int, typer.Option(help="distill: the student tree's depth.")] = 6,
    quantize: Annotated[
        bool, typer.Option("--quantize/--no-quantize", help="INT8 dynamic quantization.")
    ] = True,
    max_metric_drop: Annotated[
        float, typer.Option(help="Largest acceptable hold-out metric drop.")
    ] = 0.01,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A smaller or faster version of REF, linked to it, with a report (default: ONNX INT8).

    The report compares size, p95 latency and hold-out quality with the parent; exit 3
    when it failed (the version is registered all the same, with its report).
    """
    from conveyor.training.optimize.versions import optimize_version

    with open_project(project) as proj:
        who = authorized(proj, "training.optimize")
        done = optimize_version(
            proj,
            ref,
            method=method,  # type: ignore[arg-type]  # checked by optimize_version
            amount=amount,
            max_depth=max_depth,
            quantize=quantize,
            max_metric_drop=max_metric_drop,
            actor=who,
        )
        if as_json:
            echo_json(done.to_dict())
        else:
            _print_optimized(done)
    if not done.report.passed:
        check_failed()


def _print_optimized(done: Optimized) -> None:
    echo_report(done.report, as_json=False)
    out = console()
    c = done.comparison
    out.print(
        f"{done.version.ref} from {done.parent.ref}: size {c.child_size_bytes:,} vs "
        f"{c.parent_size_bytes:,} bytes, p95 {c.child_p95_latency_ms:.3f} vs "
        f"{c.parent_p95_latency_ms:.3f} ms"
        + (
            f", {c.metric} {c.child_metric:.4f} vs {c.parent_metric:.4f}"
            if c.child_metric is not None and c.parent_metric is not None
            else ""
        )
    )
