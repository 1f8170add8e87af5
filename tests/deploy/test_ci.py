"""conveyor ci init: the pipelines validate against the schemas check-jsonschema vendors, the
GitHub workflow also with GitHub's own parser (npm @actions/workflow-parser), every script
parses in bash, and the stages come from the spec."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import write_project

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.deploy.ci import render_pipeline

PARSER = Path(__file__).parent / "workflow_parser"


def _schema(name: str) -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, Any] = json.loads((vendored / f"{name}.json").read_text())
    return loaded


def _schema_errors(document: Any, name: str) -> list[str]:
    validator = jsonschema.Draft7Validator(_schema(name))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def github_parser(*paths: Path) -> dict[str, list[str]]:
    """GitHub's parser on every file, in one Node.js process: file -> its errors."""
    if not (PARSER / "node_modules" / "@actions" / "workflow-parser").is_dir():
        pytest.fail(
            "GitHub's workflow parser is not installed: scripts/services.sh workflow-parser"
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


def _scripts(node: Any) -> Iterator[str]:
    """Every shell script of a pipeline document (GitHub's run:, GitLab's script: lines)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            elif key in ("script", "before_script") and isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))
            else:
                yield from _scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project", "postgresql://fraud@db.prod:5432/conveyor")


def test_both_pipelines_validate_and_their_scripts_parse(root: Path, tmp_path: Path) -> None:
    spec = load_spec(root, env={})
    github = render_pipeline(spec, "github")
    gitlab = render_pipeline(spec, "gitlab")
    gh_doc, gl_doc = yaml.safe_load(github.text), yaml.safe_load(gitlab.text)
    assert _schema_errors(gh_doc, "github-workflows") == []
    assert _schema_errors(gl_doc, "gitlab-ci") == []
    path = tmp_path / "conveyor.yaml"
    path.write_text(github.text)
    assert github_parser(path) == {str(path): []}
    for document in (gh_doc, gl_doc):
        scripts = list(_scripts(document))
        assert len(scripts) > 8
        for script in scripts:
            # GitHub's expressions are replaced before the shell sees the script
            checked = subprocess.run(
                ["bash", "-n"], input=script.replace("${{", "X").replace("}}", "X"),
                capture_output=True, text=True,
            )  # fmt: skip
            assert checked.returncode == 0, f"{checked.stderr}\n{script}"


def test_the_github_workflow_runs_the_story_in_order(root: Path) -> None:
    pipeline = render_pipeline(load_spec(root, env={}), "github")
    jobs = yaml.safe_load(pipeline.text)["jobs"]
    assert list(jobs) == ["test", "data", "train", "image", "deploy-staging", "deploy-prod"]
    assert pipeline.staging == ["staging"] and pipeline.production == "prod"
    assert jobs["data"]["needs"] == ["test"] and jobs["train"]["needs"] == ["data"]
    assert 'conveyor --env staging data validate "loans"' in jobs["data"]["steps"][-2]["run"]
    train = jobs["train"]["steps"][-1]["run"]
    assert 'conveyor --env staging train "risk" --json' in train
    assert jobs["train"]["outputs"] == {"risk": "${{ steps.train.outputs.REF_RISK }}"}
    assert "conveyor build --tag ${{ github.sha }}" in jobs["image"]["steps"][-1]["run"]
    staging = jobs["deploy-staging"]
    assert staging["needs"] == ["image", "train"] and staging["environment"] == "staging"
    deploy = staging["steps"][-1]["run"]
    assert "conveyor deploy --target kubernetes --env staging" in deploy and "--apply" in deploy
    assert 'conveyor --env staging deploy "${{ needs.train.outputs.risk }}"' in deploy
    assert deploy.rstrip().endswith("conveyor smoke --env staging")
    prod = jobs["deploy-prod"]
    # the approval: the job's environment (required reviewers), after staging
    assert prod["environment"] == "prod" and prod["needs"] == ["deploy-staging", "train"]
    assert prod["if"] == "github.ref == 'refs/heads/main'"
    rollout, rollback = prod["steps"][-2], prod["steps"][-1]
    assert '--from staging --approver "${{ github.actor }}"' in rollout["run"]
    assert 'conveyor --env prod rollout start "$prod_ref"' in rollout["run"]
    assert 'conveyor --env prod rollout status "risk" --wait 2h' in rollout["run"]
    assert (
        "kubectl --namespace prod rollout status deployment/envs-conveyor-server" in rollout["run"]
    )
    assert rollback["if"] == "failure()"
    assert 'rollout abort "$model"' in rollback["run"] and "rollout undo" in rollback["run"]
    assert "$CONVEYOR_NOTIFY_WEBHOOK" in rollback["run"]
    # secrets from the store, never in the file
    assert "secrets.CONVEYOR_API_KEY" in pipeline.text and "cvy_" not in pipeline.text


def test_the_gitlab_pipeline_has_a_manual_approval_and_an_on_failure_rollback(
    root: Path,
) -> None:
    document = yaml.safe_load(render_pipeline(load_spec(root, env={}), "gitlab").text)
    assert document["stages"] == [
        "test", "data", "train", "image", "staging", "approve", "prod",
    ]  # fmt: skip
    approve = document["approve-production"]
    assert approve["rules"][0]["when"] == "manual" and approve["allow_failure"] is False
    prod = document["deploy-prod"]
    assert prod["needs"] == ["approve-production", "train"]
    assert prod["environment"] == {"name": "prod"}
    assert '--approver "$GITLAB_USER_LOGIN"' in prod["script"][1]
    assert prod["artifacts"] == {"when": "always", "paths": [".conveyor-ci/"]}
    rollback = document["rollback-production"]
    assert rollback["rules"][0]["when"] == "on_failure"
    assert rollback["needs"] == ["deploy-prod"]
    assert "train.env" in document["train"]["artifacts"]["reports"]["dotenv"]
    assert "${REF_RISK}" in document["deploy-staging"]["script"][1]


def test_environments_and_models_come_from_the_spec(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "conveyor.yaml").write_text("project: bare\n")
    pipeline = render_pipeline(load_spec(bare, env={}), "github")
    assert pipeline.models == [] and pipeline.staging == ["staging"]
    assert "declares no environments" in pipeline.notes[0]
    document = yaml.safe_load(pipeline.text)
    assert _schema_errors(document, "github-workflows") == []
    assert "nothing to train" in document["jobs"]["train"]["steps"][-1]["run"]

    four = tmp_path / "four"
    four.mkdir()
    (four / "conveyor.yaml").write_text(
        "project: four\nenvironments: {dev: {}, qa: {}, staging: {}, production: {}}\n"
        "deploy: {image: {repository: registry.acme.com/team/four}}\n"
    )
    wide = render_pipeline(load_spec(four, env={}), "github")
    jobs = yaml.safe_load(wide.text)["jobs"]
    assert [j for j in jobs if j.startswith("deploy-")] == [
        "deploy-qa", "deploy-staging", "deploy-production",
    ]  # fmt: skip
    assert jobs["deploy-staging"]["needs"] == ["deploy-qa", "train"]
    assert 'docker login "registry.acme.com"' in jobs["image"]["steps"][-1]["run"]
    paths = [tmp_path / "bare.yaml", tmp_path / "four.yaml"]
    paths[0].write_text(pipeline.text)
    paths[1].write_text(wide.text)
    assert github_parser(*paths) == {str(p): [] for p in paths}


def test_the_parser_and_the_schemas_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    env: {K: '${{ runner.temp }}'}\n    steps:\n      - run: echo ${{ nope.x }}\n"
    )
    errors = github_parser(broken)[str(broken)]
    assert any("Unrecognized named-value: 'runner'" in e for e in errors)
    assert any("Unrecognized named-value: 'nope'" in e for e in errors)
    # a job named after a reserved keyword of .gitlab-ci.yml
    assert _schema_errors({"image": {"stage": "x", "script": ["true"]}}, "gitlab-ci")


def test_the_cli_writes_refuses_to_overwrite_and_names_the_provider(root: Path) -> None:
    written = conveyor("ci", "init", "--provider", "github", "--json", "-C", str(root))
    assert written.returncode == 0, written.stderr
    summary = json.loads(written.stdout)
    path = root / ".github" / "workflows" / "conveyor.yaml"
    assert summary["path"] == str(path) and path.is_file()
    assert summary["jobs"][-1] == "deploy-prod"
    path.write_text(path.read_text() + "# my edit\n")
    again = conveyor("ci", "init", "--provider", "github", "-C", str(root))
    assert again.returncode == 1 and "exists: pass --force" in again.stderr
    assert path.read_text().endswith("# my edit\n")
    forced = conveyor("ci", "init", "--provider", "github", "--force", "-C", str(root))
    assert forced.returncode == 0 and not path.read_text().endswith("# my edit\n")
    gitlab = conveyor("ci", "init", "--provider", "gitlab", "-C", str(root))
    assert gitlab.returncode == 0 and (root / ".gitlab-ci.yml").is_file()
    unknown = conveyor("ci", "init", "--provider", "jenkins", "-C", str(root))
    assert unknown.returncode == 1 and "expected github or gitlab" in unknown.stderr
