"""``conveyor build``: the image recipe, its lock, its models and its compose file.

The recipe itself is proven by building it: Debian's buildah builds the Dockerfile exactly as
written (the builder stage's apt-get and hash-checked pip install included) on a local
bookworm base (scripts/services.sh buildah), and podman runs the image read-only as its
non-root user, with its baked model, until it answers predictions and its HEALTHCHECK.
The other tests read what was written: the Dockerfile's stages, the lock against what is
installed, the baked manifest against the bytes, the compose file against the compose-spec
schema and the spec's own environment rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from cli_support import conveyor
from conveyor.config import load_spec
from conveyor.project import Project
from conveyor.testing.ports import worker_port

SPEC = """
project: shop
datasets:
  loans: {}
models:
  risk:
    train: shop_model:fit
    dataset: loans
    features: [income, debt]
    target: default
environments:
  dev: {}
  prod:
    backends:
      store: postgresql://conveyor@db.internal:5432/conveyor
      events: redis://cache.internal:6379/0
"""

MODEL = """
from sklearn.linear_model import LogisticRegression


def fit(X, y, *, seed):
    return LogisticRegression().fit(X, y)
"""

#: The base image scripts/services.sh buildah makes (no registry is reachable here).
TEST_BASE = "localhost/conveyor-test/python:3.11-slim-bookworm"
VFS = ("--storage-driver", "vfs")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project in git: the spec, the module it names, a helper module, and what must stay
    out of the image (tests, data, a package the spec does not name, the state folder)."""
    root = tmp_path / "shop"
    (root / ".conveyor").mkdir(parents=True)
    (root / "conveyor.yaml").write_text(SPEC)
    (root / "shop_model.py").write_text(MODEL)
    (root / "helpers.py").write_text("SCALE = 2\n")
    (root / "test_shop.py").write_text("def test_nothing(): pass\n")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("income,debt,default\n1,2,0\n")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "__init__.py").write_text("")
    (root / ".env").write_text("SECRET=1\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "shop")
    return root


def build(root: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = conveyor("build", "--json", *args, cwd=root, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = " ".join((pending + line).split())
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), rest))
    return out


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def lock_pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in lock.splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, version = line.split(" ")[0].partition("==")
            pins[name.lower()] = version
    return pins


def register_and_route(root: Path) -> str:
    """risk@1, a fitted scikit-learn model, on a fixed route; its artifact digest."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype("int64")
    frame = pd.DataFrame(X, columns=["income", "debt"])
    with Project.open(root) as proj:
        version = proj.registry.register(
            "risk", LogisticRegression().fit(frame, y), signature_from=frame
        )
    done = conveyor("deploy", "risk@1", cwd=root)
    assert done.returncode == 0, done.stderr
    digest: str = version.artifact_digest
    return digest


# -- the Dockerfile ---------------------------------------------------------------------------


def test_the_recipe_is_two_stages_a_non_root_user_a_health_check_and_labels(
    project: Path,
) -> None:
    result = build(project, "--no-hashes")
    text = (project / "Dockerfile").read_text()
    head = _git(project, "rev-parse", "HEAD")
    assert result["revision"] == head
    assert result["image"] == f"conveyor/shop:{head[:12]}"

    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    builder, final = stages(text)
    assert builder[0] == ("FROM", "${BASE_IMAGE} AS builder")
    assert final[0] == ("FROM", "${BASE_IMAGE}")
    builder_runs = " ".join(args for word, args in builder if word == "RUN")
    assert 'ARG BUILD_PACKAGES="build-essential"' in text
    assert "apt-get install -y --no-install-recommends $BUILD_PACKAGES" in builder_runs
    assert "/opt/venv/bin/pip install --no-deps -r requirements.lock" in builder_runs
    assert "/opt/venv/bin/pip check" in builder_runs

    # the final stage: the venv and the project, nothing built there
    final_text = " ".join(f"{word} {args}" for word, args in final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "requirements.lock"):
        assert tool not in final_text
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    copied = [args for word, args in final if word == "COPY" and "--from" not in args]
    assert copied == ["conveyor.yaml shop_model.py helpers.py ./"]
    assert ("USER", "10001:10001") in final
    assert ("VOLUME", '["/app/.conveyor", "/tmp"]') in final
    env = next(args for word, args in final if word == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "CONVEYOR_PROJECT_DIR=/app" in env
    assert "CONVEYOR_SERVING__PORT=8000" in env
    health = next(args for word, args in final if word == "HEALTHCHECK")
    assert "/v2/health/live" in health
    assert health.split(" CMD ")[1].startswith('["python", "-c",')
    assert ("ENTRYPOINT", '["conveyor"]') in final
    assert ("CMD", '["serve", "--host", "0.0.0.0"]') in final

    labels = " ".join(args for word, args in final if word == "LABEL")
    assert f'org.opencontainers.image.revision="{head}"' in labels
    assert f'org.opencontainers.image.version="{head[:12]}"' in labels
    committed = _git(project, "log", "-1", "--format=%cI")
    assert f'org.opencontainers.image.created="{committed}"' in labels
    assert f'dev.conveyor.version="{metadata.version("conveyor")}"' in labels

    # only what the Dockerfile copies reaches the builder
    ignore = (project / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {line[1:] for line in rules if line.startswith("!")}
    assert allowed == {
        "requirements.lock",
        "conveyor.yaml",
        "shop_model.py",
        "helpers.py",
        "docker/wheels/",
    }
    # Conveyor itself: its wheel in the context, named by the lock
    (wheel,) = (project / "docker" / "wheels").glob("conveyor-*.whl")
    assert f"./docker/wheels/{wheel.name}" in (project / "requirements.lock").read_text()


def test_a_different_output_folder_gets_the_project_files_copied(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    result = build(project, "--no-hashes", "--output", str(out), "--tag", "1.4.0")
    assert result["image"] == "conveyor/shop:1.4.0"
    for name in ("Dockerfile", "requirements.lock", "conveyor.yaml", "shop_model.py"):
        assert (out / name).is_file()
    assert not (out / "test_shop.py").exists()
    assert not (out / "data").exists()
    assert not (project / "Dockerfile").exists()


# -- the lock --------------------------------------------------------------------------------


def test_the_lock_pins_only_the_extras_the_spec_uses(project: Path) -> None:
    dev = build(project, "--no-hashes")
    assert set(dev["extras"]) == {"serve"}  # no tool servers: no MCP SDK
    pins = lock_pins((project / "requirements.lock").read_text())
    # every pin is the version installed here
    for name, version in pins.items():
        assert metadata.version(name) == version, name
    for needed in ("uvicorn", "starlette", "scikit-learn", "pyarrow", "sqlalchemy"):
        assert needed in pins
    for driver in (
        "psycopg",
        "psycopg-binary",
        "redis",
        "hiredis",
        "nats-py",
        "s3fs",
        "torch",
        "mcp",
    ):
        assert driver not in pins

    # --env prod: its store is PostgreSQL and its event log Redis
    prod = build(project, "--no-hashes", "--env", "prod")
    assert prod["extras"]["postgres"] == "backends.store: postgresql://"
    assert prod["extras"]["redis"] == "backends.events: redis://"
    pins = lock_pins((project / "requirements.lock").read_text())
    for driver in ("psycopg", "psycopg-binary", "redis", "hiredis"):
        assert pins[driver] == metadata.version(driver)
    assert "nats-py" not in pins
    assert any("routes were not read" in note for note in prod["notes"])

    # a CONVEYOR_* variable overrides the spec as everywhere else
    nats = build(project, "--no-hashes", env={"CONVEYOR_EVENTS": "nats://bus:4222"})
    assert nats["extras"]["nats"] == "backends.events: nats://"
    assert "nats-py" in lock_pins((project / "requirements.lock").read_text())


def test_hashes_come_from_every_file_of_the_release_on_pips_index(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PEP 503 index made here: the lock takes each release's files' hashes from it (and
    ignores other releases), and without a hash for every requirement it keeps none."""
    from conveyor.deploy.image import lock_for

    plain = lock_for(["serve"], python="3.11", hashes=False)
    index = tmp_path / "index"
    expected = {}
    for pin in plain.pins:
        page = index / pin.key
        page.mkdir(parents=True)
        mine = [hashlib.sha256(f"{pin.key}-{n}".encode()).hexdigest() for n in (1, 2)]
        other = hashlib.sha256(f"{pin.key}-old".encode()).hexdigest()
        norm = pin.name.replace("-", "_")
        links = [
            f'<a href="../f/{norm}-{pin.version}-py3-none-any.whl#sha256={mine[0]}">'
            f"{norm}-{pin.version}-py3-none-any.whl</a>",
            f'<a href="../f/{norm}-{pin.version}.tar.gz#sha256={mine[1]}">'
            f"{norm}-{pin.version}.tar.gz</a>",
            f'<a href="../f/{norm}-0.0.1-py3-none-any.whl#sha256={other}">'
            f"{norm}-0.0.1-py3-none-any.whl</a>",
        ]
        (page / "index.html").write_text("<html><body>" + "\n".join(links) + "</body></html>")
        expected[pin.key] = tuple(sorted(mine))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # only this index
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    hashed = lock_for(["serve"], python="3.11")
    assert hashed.hashed
    assert hashed.sources == [index.as_uri()]
    assert {pin.key: pin.hashes for pin in hashed.pins} == expected
    rendered = hashed.render()
    assert "--hash=sha256:" + expected["uvicorn"][0] in rendered

    shutil.rmtree(index / "uvicorn")
    partial = lock_for(["serve"], python="3.11")
    assert not partial.hashed
    assert "--hash" not in partial.render()
    assert any("uvicorn" in note for note in partial.notes)


# -- never clobbering -------------------------------------------------------------------------


def test_a_dockerfile_it_did_not_write_or_one_edited_is_replaced_only_with_force(
    project: Path,
) -> None:
    mine = 'FROM debian:bookworm\nCMD ["true"]\n'
    (project / "Dockerfile").write_text(mine)
    refused = conveyor("build", "--no-hashes", cwd=project)
    assert refused.returncode == 1
    assert "Dockerfile" in refused.stderr
    assert "--force" in refused.stderr
    assert (project / "Dockerfile").read_text() == mine
    assert not (project / "requirements.lock").exists()  # nothing was written

    build(project, "--no-hashes", "--force")
    written = (project / "Dockerfile").read_text()
    assert written.startswith("# Generated by `conveyor build`")
    build(project, "--no-hashes")  # its own, unedited: rewritten freely

    (project / "Dockerfile").write_text(written + "RUN echo mine\n")
    again = conveyor("build", "--no-hashes", cwd=project)
    assert again.returncode == 1
    assert "edited since" in again.stderr
    assert (project / "Dockerfile").read_text().endswith("RUN echo mine\n")


# -- baked models ------------------------------------------------------------------------------


def test_bake_copies_the_routed_versions_with_a_manifest_and_refuses_tampered_ones(
    project: Path,
) -> None:
    nothing = conveyor("build", "--no-hashes", "--bake", cwd=project)
    assert nothing.returncode == 1
    assert "nothing to bake" in nothing.stderr

    digest = register_and_route(project)
    result = build(project, "--no-hashes", "--bake")
    (entry,) = result["models"]
    assert (entry["model"], entry["version"], entry["digest"]) == ("risk", 1, digest)
    models = project / "docker" / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["models"] == [entry]
    baked = models / entry["path"]
    assert "sha256:" + hashlib.sha256(baked.read_bytes()).hexdigest() == digest
    # the linear model's formula, which the server answers from, is baked beside it
    formula = models / entry["compiled"]["path"]
    assert (
        "sha256:" + hashlib.sha256(formula.read_bytes()).hexdigest()
        == (entry["compiled"]["digest"])
    )

    text = (project / "Dockerfile").read_text()
    final = stages(text)[1]
    assert ("COPY", "docker/models/ /opt/conveyor/models/") in final
    assert "CONVEYOR_ARTIFACTS=file:///opt/conveyor/models" in text
    assert ("ENTRYPOINT", '["/bin/sh", "/opt/conveyor/entrypoint.sh"]') in final
    assert "verify /opt/conveyor/models" in (project / "docker" / "entrypoint.sh").read_text()
    assert "docker/models/" in (project / ".dockerignore").read_text()

    # the baked folder is the image's artifact store: the registry loads the model from it
    env = {"CONVEYOR_ARTIFACTS": models.as_uri()}
    with Project.open(project, env=env) as proj:
        loaded = proj.registry.load("risk@1")
        frame = pd.DataFrame({"income": [1.0, -1.0], "debt": [0.0, 0.0]})
        assert list(loaded.predict(frame)) == [1, 0]

    # the entrypoint's check at start
    check = [sys.executable, "-m", "conveyor.deploy.image", "verify", str(models)]
    ok = subprocess.run(check, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "1 baked model(s) match their sha256" in ok.stderr
    kept = formula.read_bytes()
    formula.write_bytes(kept + b"altered")
    altered = subprocess.run(check, capture_output=True, text=True, check=False)
    assert altered.returncode == 1 and "baked model risk@1" in altered.stderr
    formula.write_bytes(kept)
    original = baked.read_bytes()
    baked.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    altered = subprocess.run(check, capture_output=True, text=True, check=False)
    assert altered.returncode == 1
    assert "baked model risk@1" in altered.stderr
    assert "altered" in altered.stderr

    # an artifact altered in the store is refused at build
    with Project.open(project) as proj:
        stored = Path(proj.artifacts.key(digest))
    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    refused = conveyor("build", "--no-hashes", "--bake", cwd=project)
    assert refused.returncode == 1
    assert "cannot bake risk@1" in refused.stderr
    assert "was altered or damaged" in refused.stderr


# -- docker compose ----------------------------------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    from importlib import resources

    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


def test_compose_is_valid_and_wires_the_server_to_healthy_services(project: Path) -> None:
    import jsonschema

    build(project, "--no-hashes", "--compose")
    document = yaml.safe_load((project / "docker-compose.yaml").read_text())
    jsonschema.Draft202012Validator(_compose_schema()).validate(document)

    services = document["services"]
    assert set(services) == {"server", "postgres", "redis", "nats", "prometheus"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        if name != "server":
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), image
    server = services["server"]
    assert server["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert server["image"].startswith("conveyor/shop:")
    assert server["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("postgres", "redis", "nats")
    }
    assert services["prometheus"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert server["read_only"] is True
    assert "/v2/health/live" in server["healthcheck"]["test"][-1]
    assert "--jetstream" in services["nats"]["command"]
    # every named volume a service mounts is declared, and the state one is the image's
    declared = set(document["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith("."):
                assert source in declared
    assert "state:/app/.conveyor" in server["volumes"]

    # the variables, read by the spec's own rules, point every seam at those services
    env = {
        k: v.replace("${POSTGRES_PASSWORD:-conveyor}", "pw")
        for k, v in server["environment"].items()
    }
    spec = load_spec(project, env=env)
    assert spec.url("store").render(hide_password=False) == (
        "postgresql://conveyor:pw@postgres:5432/conveyor"
    )
    assert spec.url("events").render() == "nats://nats:4222"
    for seam in ("cache", "ratelimit", "online"):
        assert spec.url(seam).host == "redis"
    assert spec.url("artifacts").render() == "file:///var/lib/conveyor/artifacts"

    # Prometheus scrapes /metrics with the viewer key compose mounts
    prometheus = yaml.safe_load((project / "docker" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["server:8000"]
    assert job["metrics_path"] == "/metrics"
    secret = services["prometheus"]["secrets"][0]
    assert job["authorization"]["credentials_file"] == secret["target"]
    assert document["secrets"]["metrics_key"]["file"] == "./docker/secrets/prometheus.key"
    assert (project / "docker" / "secrets" / "prometheus.key").is_file()
    assert (
        "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (services["prometheus"]["volumes"])
    )


# -- the image, built and run ------------------------------------------------------------------


def _get(url: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])}... exited {done.returncode}:\n{done.stderr}")
    return done


@pytest.fixture
def engine() -> Iterator[list[str]]:
    """Names of images to remove afterwards; fails (never skips) without buildah."""
    for tool in ("buildah", "podman", "runc"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/services.sh buildah"
    base = _run("buildah", *VFS, "inspect", "--type", "image", TEST_BASE, check=False)
    assert base.returncode == 0, f"no {TEST_BASE}: run scripts/services.sh buildah"
    made: list[str] = []
    yield made
    for name in made:
        _run("podman", *VFS, "rm", "-f", name, check=False)
    for name in made:
        _run("buildah", *VFS, "rmi", "-f", name, check=False)


@pytest.mark.slow
def test_the_image_builds_and_serves_its_baked_model_read_only_as_its_user(
    project: Path, engine: list[str]
) -> None:
    register_and_route(project)
    result = build(project, "--bake")  # pinned and hashed from pip's indexes
    assert result["hashes"] is True
    lock = (project / "requirements.lock").read_text()
    assert "--hash=sha256:" in lock

    image = f"localhost/conveyor-test/shop:{result['image'].rsplit(':', 1)[1]}"
    engine.append(image)
    # the Dockerfile as written: apt-get in the builder, pip --require-hashes, pip check
    built = _run(
        "buildah",
        *VFS,
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--format",
        "docker",
        "--build-arg",
        f"BASE_IMAGE={TEST_BASE}",
        "-t",
        image,
        str(project),
    )
    assert "No broken requirements found." in built.stdout

    inspected = json.loads(_run("podman", *VFS, "image", "inspect", image).stdout)[0]
    assert inspected["User"] == "10001:10001"
    assert inspected["Labels"]["org.opencontainers.image.revision"] == result["revision"]
    assert "/v2/health/live" in " ".join(inspected["Healthcheck"]["Test"])
    # the project's store (registry and routes) is the state volume; the model is baked
    subprocess.run(["chown", "-R", "10001:10001", str(project / ".conveyor")], check=True)
    port = worker_port()
    name = f"conveyor-test-{port}"
    engine.insert(0, name)
    _run(
        "podman", *VFS, "--runtime", "runc", "run", "-d", "--name", name, "--network", "host",
        "--read-only", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
        "-v", f"{project / '.conveyor'}:/app/.conveyor",
        "-e", f"CONVEYOR_SERVING__PORT={port}", "-e", "CONVEYOR_SERVING__AUTH=disabled",
        image, "serve", "--host", "127.0.0.1",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    ready: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            ready = _get(f"{base}/v2/health/ready")
        except OSError:
            ready = (0, None)
        if ready[0] == 200:
            break
        time.sleep(0.5)
    logs = _run("podman", *VFS, "logs", name, check=False)
    assert ready[0] == 200, logs.stdout + logs.stderr
    assert "1 baked model(s) match their sha256" in logs.stderr  # the entrypoint's check
    assert _get(f"{base}/v2/health/live") == (200, {"live": True})
    status, answer = _get(
        f"{base}/v1/models/risk/predict",
        json.dumps({"records": [{"income": 2.0, "debt": 0.0}]}).encode(),
    )
    assert status == 200, answer
    assert answer["version"] == 1

    health = _run("podman", *VFS, "--runtime", "runc", "healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    who = _run("podman", *VFS, "--runtime", "runc", "exec", name, "id", "-u")
    assert who.stdout.strip() == "10001"
    tools = _run(
        "podman", *VFS, "--runtime", "runc", "exec", name, "sh", "-c",
        "command -v conveyor gcc cc make", check=False,
    )  # fmt: skip
    assert tools.stdout.split() == ["/opt/venv/bin/conveyor"]  # the builder's tools stayed there
    write = _run("podman", *VFS, "--runtime", "runc", "exec", name, "touch", "/app/x", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
