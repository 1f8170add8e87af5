"""One server of a fleet: ``conveyor serve`` that drains on SIGTERM.

Run as ``python -m conveyor.fleet.node --project ROOT --host H --port P --workers W``
(``conveyor fleet up`` does): the same app, settings and workers as ``conveyor serve``
(:func:`conveyor.serving.server.serve`), with the app factory
:func:`conveyor.fleet.drain.worker_app` (a drain sized from the balancer), and
``serving.drain.graceful_s`` for the requests in flight. TLS terminates at the balancer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    from conveyor.config import load_spec
    from conveyor.fleet.settings import fleet_of
    from conveyor.serving.server import serve
    from conveyor.serving.settings import serving_of

    parser = argparse.ArgumentParser(prog="python -m conveyor.fleet.node")
    parser.add_argument("--project", type=Path, default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    spec = load_spec(args.project)
    serving = serving_of(spec)
    fleet = fleet_of(spec)
    serve(
        spec.root,
        "conveyor.fleet.drain:worker_app",
        host=args.host or fleet.server_host,
        port=fleet.server_port if args.port is None else args.port,
        workers=args.workers or fleet.workers or serving.workers,
        header_timeout_s=serving.header_timeout_s,
        keep_alive_s=serving.keep_alive_s,
        max_connections=serving.max_connections,
        graceful_s=serving.drain.graceful_s,
    )


if __name__ == "__main__":
    main()
