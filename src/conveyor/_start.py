"""The ``conveyor`` command's entry point: no garbage collection during start-up.

Starting a command imports a few thousand modules and builds the CLI, the spec's
models, the server's app and a model: hundreds of thousands of objects that live as
long as the process. With the collector on, every 700 allocations start a young
collection that walks them, and the older generations are walked again and again as
they grow; that was about a sixth of ``conveyor serve``'s start-up (1.64 s against
1.40 s with the collector off, the same server, measured in one run).

So the collector is off until the command runs: :func:`conveyor.cli.main` turns it
back on before any command but ``serve``, and the server turns it back on once its
start-up is over (``ServingApp.startup``: ``gc.freeze()`` first, so the start-up's
objects stay out of every later collection), or before it starts worker processes.
Start-up creates few reference cycles, so what it leaves uncollected is small.

``python -m conveyor`` runs the same entry point; ``python -m conveyor.cli`` runs the
command with the collector on from the start.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from conveyor.cli import main as run

    run()
