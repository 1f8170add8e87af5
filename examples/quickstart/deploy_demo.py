"""The quickstart's deployment step: from the laptop (dev) to staging, then a cluster's files.

1. golden requests recorded from the champion's hold-out (``conveyor smoke record``);
2. the champion promoted from dev into staging's own registry (``conveyor promote``): its
   gates passed in dev, its artifact's sha256 checked, its gate report copied;
3. staging serves it (its own store, a server of its own) and passes its smoke test
   (``conveyor smoke --env staging``): health, metadata, the golden answers, latency;
4. the image recipe (``conveyor build``): Dockerfile, locked requirements, compose file;
5. the Helm chart rendered for staging by Helm's engine and validated against two
   Kubernetes versions (``conveyor deploy --target kubernetes --env staging``);
6. a GitHub Actions pipeline for all of it (``conveyor ci init --provider github``).

Every command runs as the installed ``conveyor`` does, in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

import conveyor

#: staging has its own store, event log and artifacts: a registry of its own.
DEPLOY_SPEC = """
environments:
  dev: {}
  staging:
    backends:
      store: sqlite:///.conveyor/staging/conveyor.db
      events: sqlite:///.conveyor/staging/events.db
      artifacts: file://.conveyor/staging/artifacts
      online: sqlite:///.conveyor/staging/online.db
    replicas: 2
    resources: {cpu: "1", memory: 2Gi}
  prod:
    backends:
      store: postgresql://conveyor@prod-db:5432/conveyor
      artifacts: s3://fraud-models/
    replicas: 4
    resources: {cpu: "2", memory: 4Gi}
    approval: true

deploy:
  image: {repository: registry.example.com/fraud-detection}
  kubernetes: {ingress_host: fraud.example.com}
"""


def run_deploy(root: Path, console: Console, *, step: str, model: str) -> dict[str, Any]:
    """Promote the champion to staging, smoke it, and render the image and the chart."""
    from conveyor.config import load_spec
    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    found: dict[str, Any] = {}
    recorded = _conveyor(root, "smoke", "record", f"{model}@champion", "--rows", "20", "--json")
    console.print(
        f"[green]{step}[/] deployment: {recorded['rows']} golden requests recorded from "
        f"{recorded['model']}@{recorded['version']}'s hold-out (smoke/golden.json)"
    )
    promoted = _conveyor(root, "promote", f"{model}@champion", "--from", "dev", "--json")
    staging_version = promoted["to"]["version"]
    console.print(
        f"   promoted {model}@{promoted['from']['version']} (dev) to {model}@{staging_version} "
        f"(staging): gates passed in dev, {promoted['sha256'][:19]} checked, gate "
        f"report {promoted['gate_report'][:8]} copied"
    )
    found["promoted"] = promoted
    _conveyor(root, "--env", "staging", "deploy", f"{model}@{staging_version}", "--json")
    with conveyor.Project(load_spec(root, environment="staging")) as staging:
        # staging serves with keys, as every environment does: the smoke test has its own
        token, _ = ApiKeys(staging.store, staging.events).create("smoke", "predictor")
        with ThreadedServer(create_app(staging)) as server:
            smoke = _conveyor(
                root,
                "smoke", "--env", "staging", "--url", server.url, "--json",
                check=False,
                env={"CONVEYOR_API_KEY": token},
            )  # fmt: skip
    verdict = "passed" if smoke["passed"] else "FAILED"
    checks = ", ".join(f"{c['name']} {'ok' if c['passed'] else 'failed'}" for c in smoke["checks"])
    console.print(f"   conveyor smoke --env staging: {verdict} ({checks})")
    for check in smoke["checks"]:
        if not check["passed"]:
            console.print(f"     {check['name']}: {check['detail']}")
    found["smoke"] = smoke

    # the demo project is not a git repository: the image is tagged by hand
    # (--no-hashes: the demo does not ask the package index for every file's hash)
    built = _conveyor(
        root, "build", "--output", str(root / ".conveyor" / "build"), "--tag", "quickstart",
        "--compose", "--no-hashes", "--json",
    )  # fmt: skip
    console.print(f"   conveyor build: {_describe_build(built)}")
    found["build"] = built

    rendered = _conveyor(
        root,
        "deploy",
        "--target",
        "kubernetes",
        "--env",
        "staging",
        "--tag",
        "quickstart",
        "--json",
    )
    kinds = ", ".join(f"{n} {k}" for k, n in rendered["kinds"].items())
    console.print(
        f"   conveyor deploy --target kubernetes --env staging: {rendered['manifests']} "
        f"manifests ({kinds}), image {rendered['image']}, "
        + (
            f"valid against Kubernetes {' and '.join(rendered['validated_against'])} and the "
            "policy checks"
            if rendered["valid"]
            else "INVALID: " + "; ".join(rendered["schema_errors"] + rendered["policy_violations"])
        )
    )
    found["chart"] = rendered

    pipeline = _conveyor(
        root, "ci", "init", "--provider", "github",
        "--output", str(root / ".conveyor" / "ci" / "conveyor.yaml"), "--force", "--json",
    )  # fmt: skip
    console.print(f"   conveyor ci init --provider github: {_describe_ci(pipeline)}")
    found["ci"] = pipeline
    return found


def _describe_build(built: dict[str, Any]) -> str:
    names = ", ".join(Path(f).name for f in built["written"] if "/docker/" not in f)
    return (
        f"{names} for {built['image']}; extras {', '.join(built['extras'])}, {built['pinned']} pins"
    )


def _describe_ci(pipeline: dict[str, Any]) -> str:
    return f"{Path(str(pipeline['path'])).name}, jobs " + " -> ".join(pipeline["jobs"])


def _conveyor(root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> Any:
    """``conveyor ARGS -C root`` in its own process (with ``env`` added); its JSON answer."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "-C", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"conveyor {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout)
