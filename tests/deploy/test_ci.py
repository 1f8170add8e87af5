"""conveyor ci init: the pipelines validate against the schemas check-jsonschema vendors, the
GitHub workflows also with GitHub's own parser (npm @actions/workflow-parser, one Node.js
process for every file), every script parses in bash, and the jobs come from the spec: its
environments in order, an approval before production, production through a rollout, a
rollback and a notification when it fails."""

from __future__ import annotations

import copy
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import write_project

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.deploy.ci import CiPipeline, render_pipeline

PARSER = Path(__file__).parent / "workflow_parser"

FOUR = """\
project: four
environments:
  dev: {}
  qa: {}
  staging: {approval: true}
  production: {approval: true}
datasets: {loans: {}}
models:
  risk: {train: "m:fit", dataset: loans, target: y, features: [a]}
  fraud-v2: {train: "m:fit", dataset: loans, target: y, features: [a]}
rollouts: {defaults: {interval: 5m, steps: [5, 50, 100]}}
deploy: {image: {repository: registry.acme.com/team/four}}
"""


def _schema(name: str) -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, Any] = json.loads((vendored / f"{name}.json").read_text())
    return loaded


def schema_errors(document: Any, provider: str) -> list[str]:
    """The errors check-jsonschema's vendored schema finds (formats checked as it does)."""
    name = "github-workflows" if provider == "github" else "gitlab-ci"
    validator = jsonschema.Draft7Validator(
        _schema(name), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def github_parser(*paths: Path) -> dict[str, list[str]]:
    """GitHub's parser on every file, in one Node.js process: file -> its errors."""
    if not (PARSER / "node_modules" / "@actions" / "workflow-parser").is_dir():
        pytest.fail(
            "GitHub's workflow parser is not installed: run scripts/services.sh workflow-parser "
            "(npm ci in tests/deploy/workflow_parser)"
        )
    done = subprocess.run(
        ["node", "--import", "./register.mjs", "check.mjs", *map(str, paths)],
        cwd=PARSER,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


def scripts(node: Any) -> Iterator[str]:
    """Every shell script of a pipeline document (GitHub's run:, GitLab's script: lines)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            elif key in ("script", "before_script") and isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))
            else:
                yield from scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from scripts(item)


def steps_named(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s.get("name", s.get("uses", "")): s for s in job["steps"]}


def comment_above(text: str, line: str) -> str:
    """The comment lines right above ``line``, joined."""
    above = text.split(f"\n{line}\n")[0].splitlines()
    block: list[str] = []
    while above and above[-1].lstrip().startswith("# "):
        block.insert(0, above.pop().lstrip()[2:])
    return " ".join(block)


@dataclass
class Made:
    pipeline: CiPipeline
    document: dict[str, Any]
    path: Path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    """Both providers' pipelines of three specs (dev/staging/prod with a model; four
    environments, two models, a rollout plan; nothing declared), written to files."""
    base = tmp_path_factory.mktemp("ci")
    roots = {
        "envs": write_project(base / "envs", "postgresql://fraud@db.prod:5432/conveyor"),
        "four": base / "four",
        "bare": base / "bare",
    }
    for name, text in (("four", FOUR), ("bare", "project: bare\n")):
        roots[name].mkdir()
        (roots[name] / "conveyor.yaml").write_text(text)
    found = {}
    for name, root in roots.items():
        spec = load_spec(root, env={})
        for provider in ("github", "gitlab"):
            pipeline = render_pipeline(spec, provider)
            path = base / f"{name}-{provider}.yaml"
            path.write_text(pipeline.text)
            found[f"{name}-{provider}"] = Made(pipeline, yaml.safe_load(pipeline.text), path)
    return found


@pytest.fixture(scope="module")
def parsed(made: dict[str, Made], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """GitHub's parser, once, on every generated workflow and on broken ones."""
    base = tmp_path_factory.mktemp("broken")
    broken = {
        # a job needing a job that is not there
        "unknown-need": "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: 'true'\n  b:\n    runs-on: ubuntu-latest\n"
        "    needs: [a, nope]\n    steps:\n      - run: 'true'\n",
        # the runner context where a job's env is evaluated (only a step's has it)
        "runner-in-job-env": "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    env: {K: '${{ runner.temp }}'}\n    steps:\n      - run: echo ${{ nope.x }}\n",
    }
    # our own workflow without its train job: every job that needs it is now wrong
    cut = copy.deepcopy(made["envs-github"].document)
    del cut["jobs"]["train"]
    broken["without-train"] = yaml.safe_dump(cut, sort_keys=False)
    paths = {name: base / f"{name}.yaml" for name in broken}
    for name, text in broken.items():
        paths[name].write_text(text)
    ours = {k: m.path for k, m in made.items() if k.endswith("-github")}
    errors = github_parser(*ours.values(), *paths.values())
    return {name: errors[str(path)] for name, path in {**ours, **paths}.items()}


def test_every_pipeline_validates_and_its_scripts_parse(
    made: dict[str, Made], parsed: dict[str, Any]
) -> None:
    for name, found in made.items():
        provider = found.pipeline.provider
        assert schema_errors(found.document, provider) == [], name
        if provider == "github":
            assert parsed[name] == [], name
        for script in scripts(found.document):
            # GitHub's expressions are replaced before the shell sees the script
            checked = subprocess.run(
                ["bash", "-n"], input=script.replace("${{", "X").replace("}}", "X"),
                capture_output=True, text=True,
            )  # fmt: skip
            assert checked.returncode == 0, f"{name}: {checked.stderr}\n{script}"


def test_the_parser_and_the_schemas_catch_a_broken_pipeline(
    made: dict[str, Made], parsed: dict[str, Any]
) -> None:
    assert parsed["unknown-need"] == [
        "unknown-need.yaml (Line: 9, Col: 16): Job 'b' depends on unknown job 'nope'."
    ]
    errors = parsed["runner-in-job-env"]
    assert any("Unrecognized named-value: 'runner'" in e for e in errors)
    assert any("Unrecognized named-value: 'nope'" in e for e in errors)
    assert any("depends on unknown job 'train'" in e for e in parsed["without-train"])
    # a GitLab job named after a reserved keyword; a GitHub job without runs-on
    gitlab = copy.deepcopy(made["envs-gitlab"].document)
    gitlab["image"] = gitlab.pop("build-image")
    assert schema_errors(gitlab, "gitlab")
    github = copy.deepcopy(made["envs-github"].document)
    del github["jobs"]["test"]["runs-on"]
    assert schema_errors(github, "github")


def test_the_github_workflow_runs_the_story_in_order(made: dict[str, Made]) -> None:
    pipeline, document = made["envs-github"].pipeline, made["envs-github"].document
    jobs = document["jobs"]
    assert list(jobs) == ["test", "data", "train", "image", "deploy-staging", "deploy-prod"]
    assert pipeline.staging == ["staging"] and pipeline.production == "prod"
    assert set(document["on"]) == {"push", "pull_request", "workflow_dispatch"}
    assert jobs["data"]["needs"] == ["test"] and jobs["train"]["needs"] == ["data"]
    assert jobs["image"]["needs"] == ["train"]
    validate = steps_named(jobs["data"])["Validate loans"]["run"]
    assert validate == 'conveyor --env staging data validate "loans"\n'
    train = steps_named(jobs["train"])["Train"]["run"]
    assert 'conveyor --env staging train "risk" --json' in train
    assert jobs["train"]["outputs"] == {"REF_RISK": "${{ steps.train.outputs.REF_RISK }}"}
    build = steps_named(jobs["image"])["Build and push"]["run"]
    assert 'conveyor build --tag "$IMAGE_TAG"' in build
    assert 'docker push "conveyor/envs:$IMAGE_TAG"' in build
    assert document["env"] == {"IMAGE_TAG": "${{ github.sha }}"}

    staging = jobs["deploy-staging"]
    assert staging["needs"] == ["image", "train"] and staging["environment"] == "staging"
    assert staging["if"] == "github.ref == 'refs/heads/main'"
    step = steps_named(staging)["Deploy and smoke staging"]
    assert step["env"]["REF_RISK"] == "${{ needs.train.outputs.REF_RISK }}"
    deploy = step["run"]
    assert 'conveyor deploy --target kubernetes --env staging --tag "$IMAGE_TAG" --apply' in deploy
    assert 'conveyor --env staging deploy "$ref"' in deploy
    assert deploy.rstrip().endswith("conveyor smoke --env staging")

    # the approval: the production job's environment, its reviewers documented above it,
    # the reviewer read back from the run's approvals and recorded as the approver
    prod = jobs["deploy-prod"]
    assert prod["environment"] == "prod" and prod["needs"] == ["deploy-staging"]
    assert prod["if"] == "github.ref == 'refs/heads/main'"
    assert "Required reviewers" in comment_above(pipeline.text, "  deploy-prod:")
    steps = steps_named(prod)
    assert list(steps)[-4:] == [
        "Approver", "Kubeconfig", "Promote and roll out in prod", "Roll back and notify",
    ]  # fmt: skip
    assert "actions/runs/$GITHUB_RUN_ID/approvals" in steps["Approver"]["run"]
    assert prod["permissions"] == {"contents": "read", "actions": "read"}
    rollout = steps["Promote and roll out in prod"]
    assert rollout["env"]["REF_RISK"] == "${{ needs.deploy-staging.outputs.REF_RISK }}"
    assert rollout["env"]["CONVEYOR_APPROVER"] == "${{ steps.approval.outputs.login }}"
    run = rollout["run"]
    assert 'conveyor promote "$REF_RISK" --from staging --approver "$CONVEYOR_APPROVER"' in run
    assert 'conveyor --env prod rollout start "$ref"' in run
    # no rollouts: section, so no controller in the cluster: the job drives the rollout
    assert 'conveyor --env prod rollout run --rollout "risk" --until-done' in run
    assert 'conveyor --env prod rollout status "risk" --wait 1m' in run
    assert "kubectl --namespace prod rollout status deployment/envs-conveyor-server" in run
    assert run.rstrip().endswith("conveyor smoke --env prod")
    assert any("no rollouts: section" in n for n in pipeline.notes)

    rollback = steps["Roll back and notify"]
    assert rollback["if"] == "failure()"
    assert "Runs when a step above failed" in comment_above(
        pipeline.text, "    - name: Roll back and notify"
    )
    assert 'conveyor --env prod rollout abort "$model"' in rollback["run"]
    assert 'conveyor --env prod rollback "$model"' in rollback["run"]
    assert (
        "kubectl --namespace prod rollout undo deployment/envs-conveyor-server" in rollback["run"]
    )
    assert prod["env"]["CONVEYOR_NOTIFY_WEBHOOK"] == "${{ secrets.CONVEYOR_NOTIFY_WEBHOOK }}"


def test_secrets_come_from_the_store_never_the_file(made: dict[str, Made]) -> None:
    github, gitlab = made["envs-github"], made["envs-gitlab"]
    for found in (github, gitlab):
        # the spec's production store URL is not copied: its password would be beside it
        assert "db.prod" not in found.pipeline.text and "postgresql://" not in found.pipeline.text
    prod = github.document["jobs"]["deploy-prod"]["env"]
    # a promotion reads the environment it leaves and the one it enters
    for env in ("STAGING", "PROD"):
        for seam in ("STORE", "ARTIFACTS", "EVENTS"):
            name = f"CONVEYOR_ENVIRONMENTS__{env}__BACKENDS__{seam}"
            assert prod[name] == f"${{{{ secrets.{name} }}}}"
            assert name in github.pipeline.secrets and name in gitlab.pipeline.secrets
    for job in github.document["jobs"].values():
        for value in job.get("env", {}).values():
            assert value.startswith("${{ secrets."), value
    assert {"CONVEYOR_API_KEY", "KUBECONFIG_DATA", "REGISTRY_USER", "REGISTRY_PASSWORD"} <= set(
        github.pipeline.secrets
    )


def test_the_gitlab_pipeline_has_a_manual_approval_and_an_on_failure_rollback(
    made: dict[str, Made],
) -> None:
    document = made["envs-gitlab"].document
    assert document["stages"] == [
        "test", "data", "train", "image", "staging", "approve-prod", "prod",
    ]  # fmt: skip
    assert document["build-image"]["needs"] == ["build-context"]
    assert 'conveyor build --tag "$IMAGE_TAG"' in document["build-context"]["script"][0]
    assert document["deploy-staging"]["needs"] == ["build-image", "train"]
    assert document["train"]["artifacts"] == {"reports": {"dotenv": "refs.env"}}
    approve = document["approve-prod"]
    assert approve["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}]
    assert approve["allow_failure"] is False
    assert approve["environment"] == {"name": "prod", "action": "prepare"}
    # whoever runs the manual job is the approver, handed on as a dotenv variable
    assert "CONVEYOR_APPROVER=$GITLAB_USER_LOGIN" in approve["script"][0]
    assert approve["artifacts"] == {"reports": {"dotenv": "approval.env"}}
    assert "Protected environments" in comment_above(
        made["envs-gitlab"].pipeline.text, "approve-prod:"
    )
    prod = document["deploy-prod"]
    assert prod["needs"] == ["deploy-staging", "approve-prod"]
    assert prod["environment"] == {"name": "prod"}
    assert '--from staging --approver "$CONVEYOR_APPROVER"' in prod["script"][1]
    assert 'conveyor --env prod rollout start "$ref"' in prod["script"][1]
    assert prod["artifacts"] == {"when": "always", "paths": [".conveyor-ci/"]}
    rollback = document["rollback-prod"]
    assert rollback["rules"][0]["when"] == "on_failure"
    assert rollback["needs"] == ["deploy-prod"]
    # prod's variables, but no deployment recorded (nor the environment stopped)
    assert rollback["environment"] == {"name": "prod", "action": "access"}
    assert (
        "rollout abort" in rollback["script"][1]
        and "CONVEYOR_NOTIFY_WEBHOOK" in (rollback["script"][1])
    )


def test_environments_come_from_the_spec_in_order(made: dict[str, Made]) -> None:
    github, gitlab = made["four-github"], made["four-gitlab"]
    jobs = github.document["jobs"]
    assert [j for j in jobs if j.startswith("deploy-")] == [
        "deploy-qa", "deploy-staging", "deploy-production",
    ]  # fmt: skip
    assert github.pipeline.staging == ["qa", "staging"]
    assert github.pipeline.approvals == ["staging", "production"]
    # trained in qa, promoted to staging (approved there: approval: true), then production
    assert jobs["data"]["environment"] == jobs["train"]["environment"] == "qa"
    assert jobs["deploy-qa"]["needs"] == ["image", "train"]
    assert jobs["deploy-staging"]["needs"] == ["deploy-qa"]
    assert jobs["deploy-production"]["needs"] == ["deploy-staging"]
    staging = steps_named(jobs["deploy-staging"])
    assert "Approver" in steps_named(jobs["deploy-staging"])
    deploy = staging["Deploy and smoke staging"]
    assert deploy["env"]["REF_FRAUD_V2"] == "${{ needs.deploy-qa.outputs.REF_FRAUD_V2 }}"
    assert (
        'conveyor promote "$REF_FRAUD_V2" --from qa --approver "$CONVEYOR_APPROVER"'
        in deploy["run"]
    )
    assert "Approver" not in steps_named(jobs["deploy-qa"])
    prod = steps_named(jobs["deploy-production"])["Promote and roll out in production"]["run"]
    assert 'conveyor promote "$REF_RISK" --from staging' in prod
    # rollouts: declared, so the cluster's controller moves it: the job follows it, as long
    # as its plan may take (3 steps of 5 minutes, twice, and 10 minutes)
    assert 'conveyor --env production rollout status "risk" --wait 40m' in prod
    assert "rollout run" not in prod
    assert jobs["deploy-production"]["timeout-minutes"] == 30 + 2 * 40
    build = steps_named(jobs["image"])["Build and push"]["run"]
    assert 'docker login "registry.acme.com"' in build

    document = gitlab.document
    assert document["stages"] == [
        "test", "data", "train", "image", "qa", "approve-staging", "staging",
        "approve-production", "production",
    ]  # fmt: skip
    # a job with needs runs as soon as they are done: each deployment needs the one before
    assert document["deploy-qa"]["needs"] == ["build-image", "train"]
    assert document["deploy-staging"]["needs"] == ["deploy-qa", "approve-staging"]
    assert document["deploy-production"]["needs"] == ["deploy-staging", "approve-production"]
    assert '--from qa --approver "$CONVEYOR_APPROVER"' in document["deploy-staging"]["script"][1]
    assert (
        'buildah push "registry.acme.com/team/four:$IMAGE_TAG"'
        in (document["build-image"]["script"])
    )


def test_a_spec_without_environments_or_models_still_gives_a_pipeline(
    made: dict[str, Made],
) -> None:
    for provider in ("github", "gitlab"):
        found = made[f"bare-{provider}"]
        assert found.pipeline.models == [] and found.pipeline.staging == ["staging"]
        assert found.pipeline.production == "prod"
        assert "declares no environments" in found.pipeline.notes[0]
    jobs = made["bare-github"].document["jobs"]
    assert "nothing to train" in steps_named(jobs["train"])["Train"]["run"]
    assert "outputs" not in jobs["train"] and "outputs" not in jobs["deploy-staging"]
    assert "promote" not in steps_named(jobs["deploy-prod"])["Promote and roll out in prod"]["run"]
    assert [n for n in jobs if n.startswith("deploy-")] == ["deploy-staging", "deploy-prod"]


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Hook.received.append((self.headers["content-type"], body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_rollback_step_notifies_the_webhook(made: dict[str, Made], tmp_path: Path) -> None:
    """The rollback script as bash runs it: nothing was changed yet (the job failed before
    the chart was applied), so nothing is undone, and the webhook gets the JSON message."""
    step = steps_named(made["envs-github"].document["jobs"]["deploy-prod"])["Roll back and notify"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            env={
                "PATH": os.environ["PATH"],
                "CONVEYOR_CI_STATE": str(tmp_path / "state"),
                "CONVEYOR_NOTIFY_WEBHOOK": f"http://127.0.0.1:{server.server_port}/hook",
                "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_REPOSITORY": "acme/envs",
                "GITHUB_RUN_ID": "42",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    [(kind, body)] = _Hook.received
    assert kind == "application/json"
    assert json.loads(body) == {
        "text": "prod: the deployment failed and what it changed was rolled back: "
        "https://github.com/acme/envs/actions/runs/42"
    }


def test_the_cli_writes_refuses_to_overwrite_and_names_the_provider(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    root = write_project(repository / "ml", "postgresql://fraud@db.prod:5432/conveyor")
    written = conveyor("ci", "init", "--provider", "github", "--json", "-C", str(root))
    assert written.returncode == 0, written.stderr
    summary = json.loads(written.stdout)
    # at the repository's root, where GitHub reads workflows, running in the project's folder
    path = repository / ".github" / "workflows" / "conveyor.yaml"
    assert summary["path"] == str(path) and path.is_file()
    assert summary["jobs"][-1] == "deploy-prod" and summary["approvals"] == ["prod"]
    assert "CONVEYOR_ENVIRONMENTS__PROD__BACKENDS__STORE" in summary["secrets"]
    assert yaml.safe_load(path.read_text())["defaults"] == {"run": {"working-directory": "ml"}}

    path.write_text(path.read_text() + "# my edit\n")
    again = conveyor("ci", "init", "--provider", "github", "-C", str(root))
    assert again.returncode == 1 and "exists: pass --force" in again.stderr
    assert path.read_text().endswith("# my edit\n")
    as_json = conveyor("ci", "init", "--json", "-C", str(root))
    assert as_json.returncode == 1 and "exists" in json.loads(as_json.stdout)["error"]["message"]
    forced = conveyor("ci", "init", "--provider", "github", "--force", "-C", str(root))
    assert forced.returncode == 0 and not path.read_text().endswith("# my edit\n")
    assert f"wrote {path}: jobs test -> data -> train -> image" in forced.stdout
    assert "secrets to set in the CI's store: CONVEYOR_API_KEY" in forced.stdout

    gitlab = conveyor("ci", "init", "--provider", "gitlab", "-C", str(root))
    assert gitlab.returncode == 0 and (repository / ".gitlab-ci.yml").is_file()
    chosen = conveyor(
        "ci", "init", "--provider", "gitlab", "--output", "ci/pipeline.yml", "--branch", "trunk",
        "--test-command", "make test", "-C", str(root), cwd=tmp_path,
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    document = yaml.safe_load((tmp_path / "ci" / "pipeline.yml").read_text())
    assert document["test"]["script"] == ["make test"]
    unknown = conveyor("ci", "init", "--provider", "jenkins", "-C", str(root))
    assert unknown.returncode == 1 and "expected github or gitlab" in unknown.stderr
