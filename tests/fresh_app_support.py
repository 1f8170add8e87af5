"""Run a few lines against a project's app in a fresh interpreter: what a server imports
and builds at start-up is only visible in a process that imported nothing before it.

``run_fresh_app(root, body, role=...)`` runs ``body`` (indented as a ``with`` block's
inside) with ``project`` open, ``token`` a new key of ``role``, ``auth`` its header and
``client`` a Starlette ``TestClient`` over ``create_app(project)`` (its lifespan run), then
prints ``stopped cleanly`` once the app has shut down; it returns what was printed and
fails the test with the process's stderr when it did not exit 0."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fresh_python import run_python

_HEAD = """\
import sys
from starlette.testclient import TestClient
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.serving.app import create_app

with Project.open(sys.argv[1]) as project:
    token = ApiKeys(project.store, project.events).create("fresh", sys.argv[2])[0]
    auth = {"authorization": f"Bearer {token}"}
    with TestClient(create_app(project)) as client:
"""


def run_fresh_app(root: Path, body: str, *, role: str = "predictor") -> str:
    script = _HEAD + textwrap.indent(textwrap.dedent(body), " " * 8)
    script += '\nprint("stopped cleanly")\n'
    return run_python(script, str(root), role)
