"""``make bench``: side-by-side benchmarks of Conveyor and its peers.

    python benchmarks/run.py                  # every benchmark, full sizes
    python benchmarks/run.py --only tracking  # one benchmark
    python benchmarks/run.py --quick          # small sizes: a smoke run

Each peer is installed in its own virtualenv under ``.bench-venvs/<peer>``
(never into Conveyor's), created on first use. Each benchmark module
measures Conveyor and its peer in the same run, writes
``benchmarks/results/<name>.json`` and returns a table printed here. No
timing is ever asserted: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# `python benchmarks/run.py` puts benchmarks/ on sys.path; importing this file
# from elsewhere (a test, an editor) should work the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.console import Console

#: name -> module under benchmarks/; each has PEERS, run(...) and summary(result).
BENCHMARKS = (
    "tracking",
    "event_log",
    "validation",
    "drift",
    "registry",
    "cli_start",
    "features_offline",
    "features_online",
    "monitor_query",
)

# Piped to a file or CI log, rich would wrap the table at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=150)


def _log(message: str) -> None:
    console.print(message, highlight=False, markup=False)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=BENCHMARKS, action="append", help="run only NAME (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--backend",
        action="append",
        choices=("sqlite", "postgresql"),
        help="only this metadata backend (repeatable; default: all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="repeat every side N times, tools alternating, and report medians "
        "(default: 3, or 1 with --quick)",
    )
    return parser.parse_args(argv)


def _run_one(module: ModuleType, args: argparse.Namespace) -> None:
    pythons = {peer: harness.ensure_venv(peer, log=_log) for peer in module.PEERS}
    options: dict[str, Any] = {}
    if args.rounds is not None:
        options["rounds"] = args.rounds
    if args.backend:
        options["backends"] = tuple(args.backend)
    # A module that has no such option (one benchmark has a single backend)
    # ignores it rather than failing the whole `make bench`.
    accepted = inspect.signature(module.run).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    started = time.perf_counter()
    result = module.run(quick=args.quick, pythons=pythons, log=_log, **options)
    console.print()
    console.print(module.summary(result))
    _log(f"{module.__name__}: {time.perf_counter() - started:.0f} s, written to {result['path']}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = args.only or list(BENCHMARKS)
    failed = []
    for name in names:
        console.rule(name)
        try:
            _run_one(importlib.import_module(name), args)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            console.print_exception()
            failed.append(f"{name}: {exc}")
    for line in failed:
        _log(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
