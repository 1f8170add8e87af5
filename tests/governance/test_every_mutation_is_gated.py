"""Every CLI command and every HTTP route is in one table saying what it may change and the
action it needs; a mutating one is refused to a viewer key, to a revoked key and to no key.

A new command or route fails ``test_the_table_lists_every_*`` until it is added here, with
its action: nothing that changes state can ship without a role in front of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import conveyor
from conveyor.governance.keys import ApiKeys
from conveyor.governance.roles import needed_role
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer

#: ``conveyor`` command -> (the action it needs, or None for one that changes nothing
#: shared; the arguments that get it past parsing to its key check).
CLI: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "version": (None, ()),
    "init": (None, ()),  # creates a new project: there are no keys yet to ask for
    "doctor": (None, ()),
    "spec": (None, ()),
    "audit": ("audit.read", ()),
    "train": ("training.train", ("fraud",)),
    "optimize": ("training.optimize", ("fraud@1",)),
    "events tail": (None, ()),
    "events kinds": (None, ()),
    "events compact": ("monitoring.compact", ()),
    # moves the broker's events into the SQL log and its Parquet copy (as compact does)
    "events sink": ("monitoring.compact", ("--source", "nats://127.0.0.1:4222/CVGATED")),
    "monitor latency": (None, ()),  # reads the event log's copy, as events tail reads the log
    "monitor live": (None, ("--once",)),  # the system monitors (conveyor monitor [MODEL])
    "monitor data": (None, ()),  # the data-quality monitors
    "monitor grafana": (None, ()),  # prints a dashboard generated from conveyor.yaml
    "monitor prometheus-rules": (None, ()),  # prints rules generated from conveyor.yaml
    "monitor alertmanager": (None, ()),  # prints a config generated from conveyor.yaml
    "monitor prometheus-config": (None, ("--target", "127.0.0.1:8000")),  # prints a config
    "monitor quality": (None, ("fraud",)),  # computes quality from feedback, records nothing
    # --record saves the concept-drift judgment and drift.detected (can start a retraining)
    "monitor quality --record": ("monitoring.drift", ("fraud", "--record")),
    # writes feedback events (ground truth) for predictions
    "feedback load": ("monitoring.feedback", ("labels.csv",)),
    "feedback quarantine": (None, ()),
    "feedback show": (None, ("req-1",)),
    # records a drift report and drift.detected (which can start a retraining)
    "monitor drift": ("monitoring.drift", ("fraud",)),
    "alerts list": (None, ()),
    "alerts show": (None, ("x",)),
    "alerts rules": (None, ()),
    "alerts ack": ("alerts.manage", ("x",)),
    "alerts silence": ("alerts.manage", ("model=fraud",)),
    "alerts unsilence": ("alerts.manage", ("x",)),
    "alerts test": ("alerts.test", ()),  # sends a notification to every sink
    # notifies, writes alert.* events, runs the rules' actions (retrain, rollback)
    "alerts evaluate": ("alerts.evaluate", ()),
    "runs list": (None, ()),
    "runs show": (None, ("x",)),
    "reports list": (None, ()),
    "reports show": (None, ("x",)),
    "data ingest": ("data.ingest", ("tx",)),
    "features apply": ("features.apply", ()),
    "features list": (None, ()),
    "features show": (None, ("view", "spend")),
    "features history": (None, ("view", "spend")),
    "features materialize": ("features.materialize", ()),
    "features push": ("features.push", ("spend", "--file", "rows.jsonl")),
    "features get": (None, ("fraud", "--entity", "customer_id=1")),
    "features parity": ("features.check", ("fraud",)),
    "data validate": (None, ("tx",)),  # prints a report; stores nothing
    "data versions": (None, ("tx",)),
    "data profile": (None, ("tx@1",)),
    "data drift": ("data.check", ("tx@1", "tx@2")),
    "data forget": ("data.forget", ("--key", "customer_id=1", "--yes")),
    "data keygen": (None, ()),  # prints a new key; stores nothing
    "data rotate-key": ("data.rotate_key", ()),
    "data quarantine list": (None, ()),
    "data quarantine show": (None, ("b1",)),
    "data quarantine show --reveal": ("data.reveal", ("b1", "--reveal")),
    "data quarantine replay": ("data.ingest", ("b1",)),
    "data quarantine discard": ("data.quarantine", ("b1", "--reason", "bad")),
    "keys create": ("keys.manage", ("new", "--role", "viewer")),
    "keys list": ("keys.manage", ()),
    "keys revoke": ("keys.manage", ("viewer",)),
    "pipeline run": ("pipelines.run", ("flows.py:p",)),
    "pipeline list": (None, ("flows.py",)),
    "pipeline history": (None, ("p",)),
    "pipeline recover": ("pipelines.run", ()),
    "pipeline schedule": ("pipelines.run", ("flows.py:p",)),
    "models list": (None, ()),
    "models show": (None, ("fraud@1",)),
    "models register": ("models.register", ("fraud", "--object", "sklearn.dummy:DummyClassifier")),
    "models alias": ("models.promote", ("fraud", "champion", "1")),
    "models compile": ("models.register", ("fraud@1",)),  # records a version's formula
    "models rollback": ("models.promote", ("fraud", "champion")),
    "models history": (None, ("fraud", "champion")),
    "models promote": ("models.promote", ("fraud@1",)),
    "models gates": (None, ("fraud@1",)),
    "models gates --rerun": ("training.evaluate", ("fraud@1", "--rerun")),
    "models compare": (None, ("fraud@1", "fraud@2")),
    "deploy": ("serving.deploy", ("fraud@1",)),
    "rollback": ("serving.rollback", ("fraud",)),
    "serve": (None, ()),  # every request the server answers is checked by the server
    "predict": (None, ("fraud@1",)),  # in this process, from the registry: reads only
    "route show": (None, ("fraud",)),
    "route list": (None, ()),
    "route set": (
        "serving.route",
        ("fraud", "--policy", '{"mode": "fixed", "versions": [{"version": 1}]}'),
    ),
    "route history": (None, ("fraud",)),
    # rollouts (progressive delivery): each of these moves a route or an alias
    "rollout start": ("rollouts.manage", ("fraud@2",)),
    "rollout status": (None, ()),
    "rollout pause": ("rollouts.manage", ("fraud",)),
    "rollout resume": ("rollouts.manage", ("fraud",)),
    "rollout abort": ("rollouts.manage", ("fraud",)),
    "rollout promote": ("rollouts.manage", ("fraud",)),
    "rollout run": ("rollouts.manage", ("--once",)),
    # experiments and feature flags: each of these writes a route, a report or a flag
    "experiment start": (
        "experiments.manage",
        ("exp", "fraud", "--arms", "a=1,b=2", "--metric", "conversion", "--mde", "0.02"),
    ),
    "experiment status": (None, ()),
    "experiment report": ("experiments.manage", ("exp",)),  # saves; --no-save: viewer
    "experiment stop": ("experiments.manage", ("exp",)),
    "flag create": ("flags.manage", ("fraud", "f", "--version", "1")),
    "flag list": (None, ()),
    "flag show": (None, ("fraud", "f")),
    "flag ramp": ("flags.manage", ("fraud", "f", "10")),
    "flag target": ("flags.manage", ("fraud", "f", "a=b")),
    "flag kill": ("flags.manage", ("fraud", "f")),
    "flag delete": ("flags.manage", ("fraud", "f")),
    # batch scoring: writes predictions (a folder or a table) and a run record
    "score batch": ("scoring.batch", ("fraud", "--input", "in", "--output", "out")),
    # stream scoring: consumes a broker's stream (acks), writes scores and dead letters
    "score stream": ("scoring.stream", ("fraud", "--source", "nats://127.0.0.1:1/s")),
    # asynchronous predictions: queue a job (predictor), read one's own (predictor; any:
    # admin), run a worker (deployer: it scores with the deployed routes); status reads
    "jobs submit": ("jobs.submit", ("fraud", "--data", "rows.json")),
    "jobs get": ("jobs.read", ("x",)),
    "jobs status": (None, ()),  # jobs.status, role viewer: any valid key
    "jobs worker": ("jobs.work", ()),
    # readiness and shadow analysis: the report is saved with readiness.reported (viewer);
    # the load test sends traffic at the target rate (deployer); shadow reads only
    "monitor shadow": (None, ("fraud",)),
    "readiness": (None, ()),  # role viewer (readiness.read): any valid key
    "readiness --load-test": ("readiness.load_test", ("--load-test",)),
    # the serving fleet: writes the balancer's config (an audit event), starts or stops
    # server processes and the balancer on this host
    "fleet config": ("fleet.manage", ()),
    "fleet up": ("fleet.manage", ()),
    "fleet down": ("fleet.manage", ()),
    "fleet status": (None, ()),  # reads the state file and each server's readiness
    # RAG collections: a build writes a version (and moves live), alias moves what queries
    # are answered from, delete removes documents from every version; the rest read
    "rag build": ("rag.build", ("docs",)),
    "rag alias": ("rag.alias", ("docs", "1")),
    "rag delete": ("rag.delete", ("docs", "--doc", "a.md")),
    "rag list": (None, ()),
    "rag show": (None, ("docs",)),
    "rag search": (None, ("docs", "query")),  # rag.search, role viewer: any valid key
    "rag eval": (None, ("docs",)),  # rag.search: reads a version, records nothing
    "llm models": (None, ()),  # reads the spec
    "llm test": ("llm.call", ("fast",)),
    "llm quality": (None, ()),  # reads the event log
    "llm usage": (None, ()),  # reads the event log
    "llm prefixes": (None, ()),  # reads the event log
    # the MCP gateway: a test call acts through a tool (mcp.call); the rest read, or start
    # the servers in the calling process (servers, tools: the spec's, no key involved)
    "mcp servers": (None, ()),
    "mcp tools": (None, ()),
    "mcp test": ("mcp.call", ("one__echo", "{}")),
    "mcp calls": (None, ()),  # reads the event log
    "mcp serve": ("mcp.call", ("--stdio",)),
    "llm budgets": (None, ()),  # reads the counters
    "llm route show": (None, ()),
    "llm route set": ("llm.manage", ("fast", "--to", "a")),
    "llm route delete": ("llm.manage", ("fast",)),
    "llm route history": (None, ("fast",)),
    "llm route rollback": ("llm.manage", ("fast",)),
    "llm eval": ("llm.call", ("fast", "set.jsonl")),  # records an llm.eval event
    # a review holds a conversation: reading one is a reviewer's right too
    "review list": ("llm.review", ()),
    "review show": ("llm.review", ("rv_x",)),
    "review approve": ("llm.review", ("rv_x",)),
    "review reject": ("llm.review", ("rv_x",)),
    # deployment: writes files of the project, changes nothing shared
    "build": (None, ()),
    "ci init": (None, ()),
    "smoke record": (None, ("fraud@1",)),  # writes smoke/golden.json
    # asks the server for predictions, keeps its report and a deploy.smoke event
    "smoke": ("deploy.smoke", ("--url", "http://127.0.0.1:9")),
    # copies a version into the next environment's registry (the key checked there)
    "promote": ("deploy.promote", ("fraud@1", "--from", "dev")),
    # renders the chart (no key), then kubectl apply
    "deploy --target kubernetes --apply": (
        "deploy.apply",
        ("--target", "kubernetes", "--apply", "--env", "prod"),
    ),
}


def _cli_commands() -> Iterator[str]:
    import typer._click as click
    from typer.main import get_command

    from conveyor.cli import app

    def walk(command: Any, prefix: tuple[str, ...]) -> Iterator[str]:
        if hasattr(command, "list_commands"):
            if command.invoke_without_command:  # a group that is a command too (smoke)
                yield " ".join(prefix)
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, name), (*prefix, name))
        else:
            yield " ".join(prefix)

    yield from walk(get_command(app), ())


def test_the_table_lists_every_cli_command() -> None:
    listed = {name.split(" --")[0] for name in CLI}
    found = set(_cli_commands())
    assert found - listed == set(), "add these commands to CLI, with the action they need"
    assert listed - found == set(), "these commands are gone: remove them from CLI"


def test_every_action_in_the_table_is_declared() -> None:
    for name, (action, _) in CLI.items():
        if action is not None:
            assert needed_role(action) in ("predictor", "deployer", "admin"), name


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project with keys: an admin, a viewer, and a revoked deployer."""
    root = tmp_path_factory.mktemp("guarded")
    init_project(root, name="guarded")
    (root / "flows.py").write_text("from conveyor.pipelines import Pipeline\np = Pipeline('p')\n")
    with (root / "conveyor.yaml").open("a") as spec:  # promote and deploy name one
        spec.write("\nenvironments:\n  dev: {}\n  prod: {}\n")
    with Project.open(root, env={}) as project:
        keys = ApiKeys(project.store, project.events)
        admin, _ = keys.create("admin", "admin")
        viewer, _ = keys.create("viewer", "viewer")
        revoked, _ = keys.create("gone", "deployer")
        keys.revoke("gone")
    return {"root": root, "admin": admin, "viewer": viewer, "revoked": revoked}


def _run_as(
    root: Path, tokens: list[str | None], *args: str
) -> list[subprocess.CompletedProcess[str]]:
    """The same command once per token (None: no key), in this process (cli_support)."""
    return [
        conveyor(*args, "-C", str(root), env={} if t is None else {"CONVEYOR_API_KEY": t}, cwd=root)
        for t in tokens
    ]


def _processes_as(
    root: Path, tokens: list[str | None], *args: str
) -> list[subprocess.CompletedProcess[str]]:
    """The same command once per token (None: no key), the processes run side by side."""
    command = [sys.executable, "-m", "conveyor.cli", *args, "-C", str(root)]
    started = []
    for token in tokens:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        if token is not None:
            env["CONVEYOR_API_KEY"] = token
        started.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for process in started:
        out, err = process.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


MUTATING = sorted(
    (name, action, args)
    for name, (action, args) in CLI.items()
    if action is not None and needed_role(action) != "viewer"
)


@pytest.mark.parametrize(("name", "action", "args"), MUTATING, ids=[m[0] for m in MUTATING])
def test_a_mutating_command_refuses_a_viewer_a_revoked_key_and_no_key(
    guarded: dict[str, Any], name: str, action: str, args: tuple[str, ...]
) -> None:
    command = name.split(" --")[0].split()
    tokens = [guarded["viewer"], guarded["revoked"], None]
    _assert_refused(name, action, command, _run_as(guarded["root"], tokens, *command, *args))


def test_the_installed_command_refuses_a_viewer_a_revoked_key_and_no_key(
    guarded: dict[str, Any],
) -> None:
    """The refusals above as a user gets them: ``conveyor`` in its own process."""
    name, action, args = "data forget", "data.forget", ("--key", "customer_id=1", "--yes")
    tokens = [guarded["viewer"], guarded["revoked"], None]
    done = _processes_as(guarded["root"], tokens, *name.split(), *args)
    _assert_refused(name, action, name.split(), done)


def _assert_refused(
    name: str, action: str, command: list[str], done: list[subprocess.CompletedProcess[str]]
) -> None:
    as_viewer, revoked, nobody = done
    assert as_viewer.returncode == 1, (name, as_viewer.stdout, as_viewer.stderr)
    assert f"{action!r} needs the role {needed_role(action)!r}" in as_viewer.stderr, (
        name,
        as_viewer.stderr,
    )
    # Each refusal names the command itself, not only an action and a role.
    named = f"`conveyor {' '.join(command)}`"
    assert named in as_viewer.stderr, (name, as_viewer.stderr)
    assert revoked.returncode == 1 and "revoked" in revoked.stderr, (name, revoked.stderr)
    assert nobody.returncode == 1 and "no API key" in nobody.stderr, (name, nobody.stderr)
    assert named in nobody.stderr and f"({action!r})" in nobody.stderr, (name, nobody.stderr)
    # ... and the key to create for it.
    assert f"`conveyor keys create NAME --role {needed_role(action)}`" in nobody.stderr


# -- HTTP ----------------------------------------------------------------------------------

#: (method, path) -> the action it needs (None: open, a probe or the API's description).
HTTP: dict[tuple[str, str], str | None] = {
    ("GET", "/v1/models"): "serving.read",
    ("POST", "/v1/models/{model}/predict"): "serving.predict",  # ?mode=async too (a job)
    ("GET", "/v1/jobs/{id}"): "jobs.read",  # the owner's key, or an admin (jobs.read_any)
    ("GET", "/v1/models/{model}/route"): "serving.read",
    ("PUT", "/v1/models/{model}/route"): "serving.route",
    ("POST", "/v1/models/{model}/rollback"): "serving.rollback",
    ("GET", "/v1/audit"): "audit.read",
    ("POST", "/v1/features/get"): "features.read",
    ("POST", "/v1/features/push"): "features.push",
    ("GET", "/v1/monitor/latency"): "monitoring.read",
    ("GET", "/v1/monitor/system"): "monitoring.read",
    ("GET", "/v1/monitor/data"): "monitoring.read",
    ("GET", "/v1/monitor/overview"): "monitoring.read",
    ("GET", "/v1/monitor/grafana.json"): "monitoring.read",  # generated from the spec
    ("GET", "/v1/monitor/prometheus-rules"): "monitoring.read",  # generated from the spec
    ("GET", "/v1/monitor/metrics"): "monitoring.read",  # event-log monitors, for Prometheus
    ("POST", "/v1/feedback"): "monitoring.feedback",
    ("GET", "/v1/feedback/quarantine"): "monitoring.read",
    ("GET", "/v1/monitor/quality"): "monitoring.read",
    ("GET", "/v1/monitor/concept-drift"): "monitoring.read",  # computed, recorded nowhere
    ("GET", "/v1/monitor/drift"): "monitoring.read",  # computed, recorded nowhere
    # rollouts (progressive delivery)
    ("GET", "/v1/rollouts"): "rollouts.read",
    ("POST", "/v1/rollouts"): "rollouts.manage",
    ("GET", "/v1/rollouts/{ref}"): "rollouts.read",
    ("POST", "/v1/rollouts/{ref}/pause"): "rollouts.manage",
    ("POST", "/v1/rollouts/{ref}/resume"): "rollouts.manage",
    ("POST", "/v1/rollouts/{ref}/abort"): "rollouts.manage",
    ("POST", "/v1/rollouts/{ref}/promote"): "rollouts.manage",
    # experiments and feature flags
    ("GET", "/v1/experiments"): "experiments.read",
    ("POST", "/v1/experiments"): "experiments.manage",
    ("GET", "/v1/experiments/{name}"): "experiments.read",
    ("GET", "/v1/experiments/{name}/report"): "experiments.read",  # judged, not saved
    ("POST", "/v1/experiments/{name}/report"): "experiments.manage",  # saved
    ("POST", "/v1/experiments/{name}/stop"): "experiments.manage",
    ("GET", "/v1/flags"): "flags.read",
    ("POST", "/v1/flags"): "flags.manage",
    ("GET", "/v1/flags/{model}/{name}"): "flags.read",
    ("DELETE", "/v1/flags/{model}/{name}"): "flags.manage",
    ("POST", "/v1/flags/{model}/{name}/ramp"): "flags.manage",
    ("POST", "/v1/flags/{model}/{name}/target"): "flags.manage",
    ("POST", "/v1/flags/{model}/{name}/kill"): "flags.manage",
    ("GET", "/v1/alerts"): "alerts.read",
    ("GET", "/v1/alerts/{alert_id}"): "alerts.read",
    ("POST", "/v1/alerts/{alert_id}/ack"): "alerts.manage",
    ("POST", "/v1/alerts/test"): "alerts.test",
    ("GET", "/v1/silences"): "alerts.read",
    ("POST", "/v1/silences"): "alerts.manage",
    ("DELETE", "/v1/silences/{silence_id}"): "alerts.manage",
    ("GET", "/metrics"): "metrics.read",
    ("GET", "/openapi.json"): None,
    ("GET", "/v2"): "serving.read",
    ("GET", "/v2/health/live"): None,
    ("GET", "/v2/health/ready"): None,
    ("GET", "/v2/models/{model}"): "serving.read",
    ("GET", "/v2/models/{model}/ready"): "serving.read",
    ("POST", "/v2/models/{model}/infer"): "serving.predict",
    ("GET", "/v2/models/{model}/versions/{version}"): "serving.read",
    ("GET", "/v2/models/{model}/versions/{version}/ready"): "serving.read",
    ("POST", "/v2/models/{model}/versions/{version}/infer"): "serving.predict",
    # readiness and shadow analysis: the report is saved (load_test=true: deployer)
    ("GET", "/v1/monitor/shadow/{model}"): "monitoring.read",  # computed, recorded nowhere
    ("GET", "/v1/readiness"): "readiness.read",
    ("POST", "/v1/rag/{collection}/search"): "rag.search",  # reads only (role viewer)
    ("POST", "/v1/rag/{collection}/context"): "rag.search",
    # the LLM gateway: open to the pipeline so that every refusal, a missing key's 401
    # included, is OpenAI-shaped; each handler checks llm.call itself (tests/gateway)
    ("POST", "/llm/v1/chat/completions"): None,
    ("POST", "/llm/v1/embeddings"): None,
    ("GET", "/llm/v1/models"): None,
    ("GET", "/llm/v1/models/{model}"): None,
    ("POST", "/v1/llm/feedback"): "llm.call",  # feedback events on the caller's own calls
    ("GET", "/v1/llm/quality"): "llm.read",
    ("GET", "/v1/llm/usage"): "llm.read",
    ("GET", "/v1/llm/budgets"): "llm.read",
    ("GET", "/v1/llm/prefixes"): "llm.read",
    ("POST", "/mcp"): "mcp.call",
    ("GET", "/mcp"): "mcp.call",
    ("DELETE", "/mcp"): "mcp.call",
    ("GET", "/v1/mcp/servers"): "mcp.read",
    ("GET", "/v1/mcp/tools"): "mcp.call",
    ("GET", "/v1/llm/routes"): "llm.read",
    ("PUT", "/v1/llm/routes/{alias}"): "llm.manage",
    ("DELETE", "/v1/llm/routes/{alias}"): "llm.manage",
    ("GET", "/v1/llm/routes/{alias}"): "llm.read",
    ("GET", "/v1/llm/routes/{alias}/history"): "llm.read",
    ("POST", "/v1/llm/routes/{alias}/rollback"): "llm.manage",
    ("GET", "/v1/reviews"): "llm.review",
    ("GET", "/v1/reviews/{id}"): "llm.review",
    ("POST", "/v1/reviews/{id}/approve"): "llm.review",
    ("POST", "/v1/reviews/{id}/reject"): "llm.review",
    # dashboard: open to the pipeline (it reads only header keys); each handler checks the
    # HttpOnly cookie's key itself: dashboard.view for a page, the API's action and a CSRF
    # token for a button (tests/dashboard: a viewer gets 403 and nothing changes)
    ("GET", "/ui"): None,
    ("GET", "/ui/login"): None,
    ("POST", "/ui/login"): None,
    ("POST", "/ui/logout"): None,
    ("GET", "/ui/static/{name}"): None,
    ("GET", "/ui/models"): None,
    ("GET", "/ui/models/{model}"): None,
    ("GET", "/ui/routes"): None,
    ("GET", "/ui/rollouts"): None,
    ("GET", "/ui/rollouts/{ref}"): None,
    ("GET", "/ui/monitor"): None,
    ("GET", "/ui/drift"): None,
    ("GET", "/ui/alerts"): None,
    ("GET", "/ui/experiments"): None,
    ("GET", "/ui/experiments/{name}"): None,
    ("GET", "/ui/readiness"): None,
    ("POST", "/ui/routes/{model}/rollback"): None,  # serving.rollback
    ("POST", "/ui/alerts/{alert_id}/ack"): None,  # alerts.manage
    ("GET", "/ui/flags"): None,
    ("GET", "/ui/flags/{model}/{name}"): None,
    ("POST", "/ui/flags"): None,  # flags.manage
    ("POST", "/ui/flags/{model}/{name}/ramp"): None,  # flags.manage
    ("POST", "/ui/flags/{model}/{name}/target"): None,  # flags.manage
    ("POST", "/ui/flags/{model}/{name}/kill"): None,  # flags.manage
    ("POST", "/ui/flags/{model}/{name}/delete"): None,  # flags.manage
    ("POST", "/ui/rollouts/{ref}/pause"): None,  # rollouts.manage
    ("POST", "/ui/rollouts/{ref}/resume"): None,  # rollouts.manage
    ("POST", "/ui/rollouts/{ref}/abort"): None,  # rollouts.manage
}


@pytest.fixture(scope="module")
def server(guarded: dict[str, Any]) -> Iterator[tuple[ThreadedServer, Project]]:
    project = Project.open(guarded["root"], env={})
    running = ThreadedServer(create_app(project))
    running.start()
    try:
        yield running, project
    finally:
        running.stop()
        project.close()


def test_the_table_lists_every_http_route(server: tuple[ThreadedServer, Project]) -> None:
    app = server[0].app
    routes = {(r.method, r.path): r.action for r in app.routes}
    assert set(routes) - set(HTTP) == set(), "add these routes to HTTP, with their action"
    assert set(HTTP) - set(routes) == set(), "these routes are gone: remove them from HTTP"
    for where, action in HTTP.items():
        assert routes[where] == action, where


GATED = sorted((m, p, a) for (m, p), a in HTTP.items() if a is not None)


@pytest.mark.parametrize(("method", "path", "action"), GATED, ids=[f"{m} {p}" for m, p, _ in GATED])
def test_every_gated_route_refuses_no_key_a_revoked_key_and_a_lower_role(
    guarded: dict[str, Any],
    server: tuple[ThreadedServer, Project],
    method: str,
    path: str,
    action: str,
) -> None:
    url = server[0].url + path.replace("{model}", "fraud").replace("{version}", "1")
    nobody = httpx.request(method, url, json={}, timeout=10)
    assert nobody.status_code == 401 and nobody.json()["code"] == "unauthenticated"
    revoked = httpx.request(method, url, json={}, headers={"x-api-key": guarded["revoked"]})
    assert revoked.status_code == 401 and revoked.json()["reason"] == "revoked", revoked.text
    if needed_role(action) != "viewer":
        low = httpx.request(method, url, json={}, headers={"x-api-key": guarded["viewer"]})
        assert low.status_code == 403, (path, low.text)
        assert low.json()["action"] == action
    # The admin gets past the key check (to whatever the handler answers: never 401/403).
    admin = httpx.request(method, url, json={}, headers={"x-api-key": guarded["admin"]})
    assert admin.status_code not in (401, 403), (path, admin.text)
