"""conveyor deploy --target kubernetes --env NAME: rendered from the spec, validated, written;
--apply through kubectl, refused before kubectl when a check failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import write_project

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.deploy.helm import server_deployment
from conveyor.deploy.kubernetes import Kubernetes, Rendered
from conveyor.errors import ConfigError, InvalidInputError

PASSWORD = "s3cret-never-rendered"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The three-environment project, in a git repository (the image is tagged by commit)."""
    write_project(tmp_path, f"postgresql://fraud:{PASSWORD}@db.prod:5432/conveyor")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], cwd=tmp_path, check=True)
    return tmp_path


def _commit(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()


def test_prod_renders_valid_manifests_from_its_environment(root: Path) -> None:
    out = root / "rendered"
    result = conveyor(
        "deploy", "--target", "kubernetes", "--env", "prod", "--output", str(out), "--json",
        "-C", str(root),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["valid"] and summary["schema_errors"] == summary["policy_violations"] == []
    assert summary["validated_against"] == ["1.29.0", "1.31.0"]
    assert summary["environment"] == "prod" and summary["namespace"] == "prod"
    assert summary["image"] == f"conveyor/envs:{_commit(root)}"
    assert summary["kinds"]["Deployment"] >= 1 and summary["kinds"]["PodDisruptionBudget"] >= 1
    manifests = list(yaml.safe_load_all((out / "all.yaml").read_text()))
    assert len(manifests) == summary["manifests"] == len(list(out.glob("[0-9]*.yaml")))
    server = next(
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-server")
    )
    assert server["spec"]["replicas"] == 4  # prod's replicas
    # the name CI pipelines wait on (kubectl rollout status deployment/NAME) is the chart's
    assert server["metadata"]["name"] == server_deployment(summary["release"])
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert container["image"] == summary["image"]
    assert PASSWORD not in (out / "all.yaml").read_text()  # a Secret reference instead


def test_values_and_tags_are_checked_before_anything_is_written(root: Path) -> None:
    args = ("deploy", "--target", "kubernetes", "--env", "staging", "-C", str(root))
    broken = conveyor(*args, "--set", "server.replicas=-1")
    assert broken.returncode == 1
    assert "server.replicas: -1 is less than the minimum of 1" in broken.stderr
    assert not (root / ".conveyor" / "deploy" / "staging").exists()
    malformed = conveyor(*args, "--set", "server.replicas")
    assert malformed.returncode == 1 and "expected KEY.PATH=VALUE" in malformed.stderr
    latest = conveyor(*args, "--tag", "latest")
    assert latest.returncode == 1 and "'latest' names no one build" in latest.stderr
    tagged = conveyor(*args, "--tag", "v1.4.2", "--set", "server.replicas=3", "--json")
    assert tagged.returncode == 0, tagged.stderr
    assert json.loads(tagged.stdout)["image"] == "conveyor/envs:v1.4.2"
    written = (root / ".conveyor" / "deploy" / "staging" / "all.yaml").read_text()
    assert "replicas: 3" in written


def test_an_environment_must_be_named_and_known(root: Path) -> None:
    none = conveyor("deploy", "--target", "kubernetes", "-C", str(root))
    assert none.returncode == 1 and "pass --env NAME" in none.stderr
    assert "dev, staging, prod" in none.stderr
    unknown = conveyor("deploy", "--target", "kubernetes", "--env", "qa", "-C", str(root))
    assert unknown.returncode == 1 and "unknown environment 'qa'" in unknown.stderr
    model = conveyor("deploy", "risk@1", "--target", "kubernetes", "--env", "prod", "-C", str(root))
    assert model.returncode == 1 and "deploys the whole project" in model.stderr
    target = conveyor("deploy", "--target", "nomad", "-C", str(root))
    assert target.returncode == 1 and "expected server or kubernetes" in target.stderr


def test_without_git_the_tag_must_be_given(tmp_path: Path) -> None:
    write_project(tmp_path, "sqlite:///.conveyor/prod.db")
    spec = load_spec(tmp_path, env={}, environment="staging")
    with pytest.raises(ConfigError, match=r"not in a git repository; set deploy\.image\.tag"):
        Kubernetes(spec).render()
    assert Kubernetes(spec).render(tag="2026.12.05").image == "conveyor/envs:2026.12.05"


def test_apply_is_refused_before_kubectl_when_a_check_failed(root: Path) -> None:
    spec = load_spec(root, env={}, environment="prod")
    rendered = Kubernetes(spec).render()
    assert rendered.valid
    doctored = Rendered(
        rendered.environment,
        rendered.release,
        rendered.namespace,
        rendered.image,
        rendered.manifests,
        policy=["Deployment envs-conveyor-server: container server uses the tag latest"],
    )
    with pytest.raises(InvalidInputError, match="nothing applied: Deployment envs"):
        Kubernetes(spec).apply(doctored, actor="test")


def test_apply_without_kubectl_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(root, env={}, environment="prod")
    rendered = Kubernetes(spec).render()
    monkeypatch.setenv("PATH", str(root))  # a folder with no kubectl in it
    with pytest.raises(ConfigError, match="kubectl is not installed"):
        Kubernetes(spec).apply(rendered, actor="test")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_apply_hands_the_manifests_to_kubectl_and_reports_its_refusal(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No cluster runs here: kubectl is pointed at a closed port and its refusal comes back
    whole, and no deploy.applied event is written."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "nowhere", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "nowhere",
            }
        )
    )
    result = conveyor(
        "deploy", "--target", "kubernetes", "--env", "staging", "--apply", "-C", str(root),
        env={"KUBECONFIG": str(kubeconfig), "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert result.returncode == 1
    assert "kubectl apply failed" in result.stderr
    assert "127.0.0.1:9" in result.stderr
    from conveyor.project import Project

    with Project(load_spec(root, env={}, environment="staging")) as staging:
        assert staging.events.query(kind="deploy.applied").items == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_apply_to_a_cluster_that_never_answers_gives_up_with_a_clear_error(
    root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API server that takes the connection and never answers (hung): kubectl would wait
    for ever; the apply stops at its timeout, names it, and records nothing."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"https://127.0.0.1:{listener.getsockname()[1]}"},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "hung", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "hung",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    spec = load_spec(root, env={}, environment="staging")
    rendered = Kubernetes(spec).render()
    try:
        with pytest.raises(ConfigError, match="kubectl apply did not finish within 3 s"):
            Kubernetes(spec).apply(rendered, actor="test", timeout_s=3)
    finally:
        stop.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()


def test_a_release_named_after_conveyor_keeps_the_charts_server_name(tmp_path: Path) -> None:
    """The chart drops its own name from a release that already holds it (conveyor-demo ->
    conveyor-demo-server); what CI waits on follows it."""
    write_project(tmp_path, "sqlite:///.conveyor/prod.db")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("deploy: {kubernetes: {release: conveyor-demo}}\n")
    rendered = Kubernetes(load_spec(tmp_path, env={}, environment="staging")).render(tag="t1")
    names = [m["metadata"]["name"] for m in rendered.manifests if m["kind"] == "Deployment"]
    assert server_deployment("conveyor-demo") == "conveyor-demo-server" in names
    assert server_deployment("envs") == "envs-conveyor-server"


def test_a_new_render_replaces_the_old_files_whole(root: Path) -> None:
    out = root / "rendered"
    out.mkdir()
    (out / "07-configmap-gone.yaml").write_text("kind: ConfigMap\n")  # a render's leftover
    (out / "README.md").write_text("notes\n")  # not a manifest: left alone
    spec = load_spec(root, env={}, environment="prod")
    rendered = Kubernetes(spec).render(tag="t1", output=out)
    files = sorted(p.name for p in out.iterdir())
    assert "07-configmap-gone.yaml" not in files and "README.md" in files
    assert not [name for name in files if name.endswith(".partial")]
    assert sorted(p.name for p in rendered.written) == sorted(f for f in files if f != "README.md")
    for path in rendered.written:  # every file whole: parses back to what was rendered
        assert list(yaml.safe_load_all(path.read_text()))
    assert len(list(yaml.safe_load_all((out / "all.yaml").read_text()))) == len(rendered.manifests)
