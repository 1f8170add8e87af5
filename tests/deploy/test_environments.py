"""Environments in the spec: what each changes, how one is chosen, and what is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import write_project

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.errors import ConfigError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path, "postgresql://127.0.0.1:5432/test")


def test_an_environment_merges_its_backends_slos_and_settings_over_the_spec(root: Path) -> None:
    base = load_spec(root, env={})
    assert base.environment is None
    assert base.url("store").location.endswith("dev.db")
    assert base.section("serving").port != 8123

    staging = load_spec(root, env={}, environment="staging")
    assert staging.environment == "staging"
    assert staging.url("store").location.endswith("staging.db")
    assert staging.url("artifacts").path.endswith("artifacts-staging")
    assert staging.slos.latency_p95_ms == 500
    assert staging.slos.quality is not None and staging.slos.quality.floor == 0.7  # kept
    assert staging.section("serving").port == 8123
    assert staging.environment_spec().replicas == 2
    assert staging.next_environment("staging") == "prod"
    assert staging.next_environment("prod") is None

    prod = load_spec(root, env={}, environment="prod")
    assert prod.url("store").scheme == "postgresql"
    assert prod.environment_spec().resources.memory == "4Gi"
    assert prod.environment_spec().namespace is None


def test_the_environment_comes_from_conveyor_env_and_variables_still_win(root: Path) -> None:
    chosen = load_spec(root, env={"CONVEYOR_ENV": "staging"})
    assert chosen.environment == "staging"
    assert chosen.section("serving").port == 8123
    overridden = load_spec(root, env={"CONVEYOR_ENV": "staging", "CONVEYOR_SERVING__PORT": "9001"})
    assert overridden.section("serving").port == 9001  # the variable over the environment


def test_an_unknown_environment_is_refused_with_the_declared_ones(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'qa'.*dev, staging, prod"):
        load_spec(root, env={}, environment="qa")
    result = conveyor("models", "list", "--env", "qa", "-C", str(root))
    assert result.returncode == 1
    assert "unknown environment 'qa'" in result.stderr + result.stdout


def test_bad_environment_declarations_are_refused(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text("project: x\nenvironments:\n  Prod_1: {}\n")
    with pytest.raises(ConfigError, match="environment name 'Prod_1'"):
        load_spec(tmp_path, env={})
    (tmp_path / "conveyor.yaml").write_text(
        "project: x\nenvironments:\n  prod: {settings: {project: other}}\n"
    )
    with pytest.raises(ConfigError, match="cannot change this field"):
        load_spec(tmp_path, env={}, environment="prod")
    (tmp_path / "conveyor.yaml").write_text(
        "project: x\nenvironments:\n  prod: {backends: {nosuch: 'sqlite:///x.db'}}\n"
    )
    with pytest.raises(ConfigError, match="nosuch"):
        load_spec(tmp_path, env={}, environment="prod")
    (tmp_path / "conveyor.yaml").write_text(
        "project: x\nenvironments:\n  prod: {url: staging.example.com}\n"
    )
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_spec(tmp_path, env={})


def test_env_selects_the_environment_for_any_command_wherever_it_is_written(root: Path) -> None:
    """One registry per environment: a version registered in staging is not in dev."""
    from sklearn.dummy import DummyClassifier

    from conveyor.project import Project

    model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    with Project(load_spec(root, env={}, environment="staging")) as staging:
        staging.registry.register("probe", model)
    listed = conveyor("--env", "staging", "models", "list", "--json", "-C", str(root))
    assert listed.returncode == 0, listed.stderr
    assert [v["ref"] for v in json.loads(listed.stdout)["items"]] == ["probe@1"]
    after = conveyor("models", "list", "--json", "--env", "staging", "-C", str(root))
    assert [v["ref"] for v in json.loads(after.stdout)["items"]] == ["probe@1"]
    dev = conveyor("models", "list", "--json", "-C", str(root))
    assert json.loads(dev.stdout)["items"] == []
    # and the installed command, through its real entry point
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "models", "list", "--env=staging", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [v["ref"] for v in json.loads(proc.stdout)["items"]] == ["probe@1"]


def test_a_variable_naming_an_environments_field_reaches_that_environment(root: Path) -> None:
    """CI hands an environment's store URL in as CONVEYOR_ENVIRONMENTS__STAGING__BACKENDS__
    STORE (a secret): loaded for staging, that URL is the store."""
    env = {"CONVEYOR_ENVIRONMENTS__STAGING__BACKENDS__STORE": "sqlite:///.conveyor/secret.db"}
    staging = load_spec(root, env=env, environment="staging")
    assert staging.url("store").location.endswith("secret.db")
    assert staging.environments["staging"].backends["store"].endswith("secret.db")
    # a plain variable still wins over the environment
    both = {**env, "CONVEYOR_STORE": "sqlite:///.conveyor/plain.db"}
    assert (
        load_spec(root, env=both, environment="staging").url("store").location.endswith("plain.db")
    )
