"""CI/CD pipelines for a Conveyor project: ``conveyor ci init --provider github|gitlab``.

The pipeline is made from the spec: its data sets (checked), its models (trained through
their gates), its environments (in promotion order: the first is the laptop's, every later
one but the last is a staging one, the last is production). On every change:

1. **test**: lint and the project's tests (``--test-command``, default ``pytest``);
2. **data**: ``conveyor data validate`` of every data set (exit 3 fails the pipeline);
3. **train**: ``conveyor --env STAGING train MODEL`` for every model: a candidate that fails
   its gates stops the pipeline (exit 3); the version trained is passed on;
4. **image**: ``conveyor build --tag COMMIT`` and the image built and pushed with that tag;

then, on the main branch only:

5. **STAGING**: the chart applied (``conveyor deploy --target kubernetes --env STAGING
   --apply``), the new version routed there, ``conveyor smoke --env STAGING``;
6. **approval**: GitHub: the production job's ``environment:`` (give it required reviewers
   in the repository's settings); GitLab: a manual job;
7. **PROD**: the version promoted (``conveyor promote --from STAGING --approver WHO``), the
   chart applied, and a rollout (``conveyor --env PROD rollout start``) followed until it
   ends (``rollout status --wait``);
8. **rollback**: when the production job fails (health, smoke, the rollout's analysis), the
   rollout is aborted (the stable version takes every request again) and a notification is
   posted to ``CONVEYOR_NOTIFY_WEBHOOK``.

Secrets come from the CI's store, never the file: ``CONVEYOR_API_KEY``, ``KUBECONFIG_DATA``
(a kubeconfig), the registry's credentials and any ``CONVEYOR_*`` URL with a password,
scoped per environment (GitHub environments' secrets, GitLab variables scoped to an
environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import AlreadyExistsError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "DEFAULT_INSTALL",
    "DEFAULT_PATHS",
    "PROVIDERS",
    "CiPipeline",
    "render_pipeline",
    "write_pipeline",
]

Provider = Literal["github", "gitlab"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitlab")
DEFAULT_PATHS: dict[str, str] = {
    "github": ".github/workflows/conveyor.yaml",
    "gitlab": ".gitlab-ci.yml",
}
#: How a job installs the project: Conveyor with what deploying needs (override it with the
#: project's own requirements: ``--install-command "pip install -r requirements.txt"``).
DEFAULT_INSTALL = "pip install 'conveyor[serve,deploy]'"
_HEADER = (
    "# Written by `conveyor ci init --provider {provider}` from conveyor.yaml ({project}).\n"
    "# Environments: {environments}; production: {prod} (a rollout, rolled back on failure).\n"
    "# Secrets, per environment: CONVEYOR_API_KEY, KUBECONFIG_DATA, REGISTRY_USER,\n"
    "# REGISTRY_PASSWORD, CONVEYOR_NOTIFY_WEBHOOK, and any CONVEYOR_* URL with a password.\n"
)


@dataclass
class CiPipeline:
    """A pipeline made from a spec: its text, and what it holds."""

    provider: Provider
    text: str
    jobs: list[str]
    staging: list[str]
    production: str
    models: list[str]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "path": str(self.path) if self.path else None,
            "jobs": self.jobs,
            "staging": self.staging,
            "production": self.production,
            "models": self.models,
            "notes": self.notes,
        }


def _stages(spec: ProjectSpec) -> tuple[list[str], str, list[str]]:
    """The staging environments, the production one, and notes."""
    names = list(spec.environments)
    if len(names) >= 3:
        return names[1:-1], names[-1], []
    if len(names) == 2:
        return [names[0]], names[1], []
    note = (
        "the spec declares no environments (or one): the pipeline uses staging and prod; "
        "declare them under environments: (docs/deploy.md)"
    )
    return ["staging"], "prod", [note]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "model"


def _image(spec: ProjectSpec) -> str:
    from conveyor.deploy.settings import deploy_of

    return deploy_of(spec).image.repository or f"conveyor/{spec.project.lower()}"


def _train_script(staging: str, models: list[str], output: str) -> str:
    """Train every model in staging; write ``REF_<model>=model@N`` lines to ``output``."""
    lines = ["set -euo pipefail"]
    for model in models:
        lines.append(
            f'ref=$(conveyor --env {staging} train "{model}" --json | python -c '
            "'import json, sys; print(json.load(sys.stdin)[\"version\"])')"
        )
        lines.append(f'echo "REF_{_slug(model).upper()}=$ref" >> "{output}"')
    if not models:
        lines.append('echo "no models in conveyor.yaml: nothing to train"')
    return "\n".join(lines) + "\n"


def _kubeconfig() -> str:
    return 'echo "$KUBECONFIG_DATA" > "$RUNNER_TEMP/kubeconfig"\n'


def _staging_script(env: str, models: list[str], ref: Any) -> str:
    lines = [
        "set -euo pipefail",
        f"conveyor deploy --target kubernetes --env {env} --tag {ref('sha')} --apply",
    ]
    for model in models:
        lines.append(f'conveyor --env {env} deploy "{ref("model", model)}"')
    lines.append(f"conveyor smoke --env {env}")
    return "\n".join(lines) + "\n"


_STATUS = "python -c 'import json, sys; print(json.load(sys.stdin)[\"status\"])'"


def _prod_script(
    staging: str, prod: str, models: list[str], ref: Any, approver: str, place: _Place
) -> str:
    """Apply the chart and wait for the server's pods; promote each model from staging and
    roll it out (the first version of a model is routed whole: nothing to compare it with);
    smoke. What was changed is noted under ``$CONVEYOR_CI_STATE`` for the rollback."""
    lines = [
        "set -euo pipefail",
        'mkdir -p "$CONVEYOR_CI_STATE"',
        f"conveyor deploy --target kubernetes --env {prod} --tag {ref('sha')} --apply",
        'touch "$CONVEYOR_CI_STATE/chart-applied"',
        f"kubectl --namespace {place.namespace} rollout status "
        f"deployment/{place.deployment} --timeout=10m",
        'touch "$CONVEYOR_CI_STATE/server-healthy"',
    ]
    for model in models:
        lines += [
            f'prod_ref=$(conveyor promote "{ref("model", model)}" --from {staging} '
            f'--approver "{approver}" --json | python -c '
            "'import json, sys; d = json.load(sys.stdin); "
            'print(d["model"] + "@" + str(d["to"]["version"]))\')',
            f'if conveyor --env {prod} route show "{model}" > /dev/null 2>&1; then',
            f'  conveyor --env {prod} rollout start "$prod_ref" --steps 5,25,50,100 --interval 10m',
            f'  echo "{model}" >> "$CONVEYOR_CI_STATE/rollouts"',
            f'  conveyor --env {prod} rollout status "{model}" --wait 2h',
            "else",
            f'  conveyor --env {prod} deploy "$prod_ref"  # its first version',
            "fi",
        ]
    lines.append(f"conveyor smoke --env {prod}")
    return "\n".join(lines) + "\n"


def _rollback_script(prod: str, where: str, place: _Place) -> str:
    """Undo what the failed production job changed: abort a rollout still running, roll
    back a route a rollout promoted before the smoke test failed, undo the server's
    Deployment when its new pods never became ready; then notify."""
    reason = f'--reason "pipeline failed: {where}"'
    return (
        "set -uo pipefail\n"
        'if [ -f "$CONVEYOR_CI_STATE/rollouts" ]; then\n'
        "  while read -r model; do\n"
        f'    status=$(conveyor --env {prod} rollout status "$model" --json | {_STATUS})\n'
        '    case "$status" in\n'
        f'      running|paused) conveyor --env {prod} rollout abort "$model" {reason} ;;\n'
        f'      promoted) conveyor --env {prod} rollback "$model" {reason} ;;\n'
        '      *) echo "$model: rollout $status: the stable version serves" ;;\n'
        "    esac\n"
        '  done < "$CONVEYOR_CI_STATE/rollouts"\n'
        "fi\n"
        'if [ -f "$CONVEYOR_CI_STATE/chart-applied" ] && '
        '[ ! -f "$CONVEYOR_CI_STATE/server-healthy" ]; then\n'
        f"  kubectl --namespace {place.namespace} rollout undo deployment/{place.deployment}\n"
        "fi\n"
        'if [ -n "${CONVEYOR_NOTIFY_WEBHOOK:-}" ]; then\n'
        "  curl -fsS -X POST -H 'content-type: application/json' --data "
        f'"{{\\"text\\": \\"{prod}: the deployment failed and was rolled back ({where})\\"}}" '
        '"$CONVEYOR_NOTIFY_WEBHOOK"\n'
        "fi\n"
    )


@dataclass(frozen=True)
class _Place:
    """Where production's server runs: the chart's namespace and Deployment."""

    namespace: str
    deployment: str


def _place(spec: ProjectSpec, prod: str) -> _Place:
    from conveyor.deploy.settings import deploy_of

    settings = deploy_of(spec).kubernetes
    declared = spec.environments.get(prod)
    namespace = settings.namespace or (declared.namespace if declared else None) or prod
    release = settings.release or spec.project.lower()
    return _Place(namespace, f"{release}-conveyor-server")


def _plan(spec: ProjectSpec) -> tuple[list[str], str, list[str], list[str], str, _Place]:
    """Staging environments, production, models, data sets, image, production's place."""
    staging, prod, _ = _stages(spec)
    return (
        staging,
        prod,
        sorted(_models(spec)),
        sorted(_datasets(spec)),
        _image(spec),
        _place(spec, prod),
    )


def _registry(image: str) -> str:
    """The registry host of ``image`` (Docker Hub when its first part names no host)."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


# -- GitHub Actions ------------------------------------------------------------------------


def _github(spec: ProjectSpec, test_command: str, python: str, install: str) -> dict[str, Any]:
    staging, prod, models, datasets, image, place = _plan(spec)
    setup = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": python}},
        {"name": "Install", "run": install + "\n"},
    ]
    # the runner context is a step's, not a job's: set where the steps run
    kube_env = {
        "KUBECONFIG": "${{ runner.temp }}/kubeconfig",
        "CONVEYOR_CI_STATE": "${{ runner.temp }}/conveyor-ci",
    }
    secrets = {
        "CONVEYOR_API_KEY": "${{ secrets.CONVEYOR_API_KEY }}",
        "KUBECONFIG_DATA": "${{ secrets.KUBECONFIG_DATA }}",
    }

    def ref(kind: str, model: str = "") -> str:
        if kind == "sha":
            return "${{ github.sha }}"
        return f"${{{{ needs.train.outputs.{_slug(model)} }}}}"

    jobs: dict[str, Any] = {
        "test": {
            "name": "Lint and tests",
            "runs-on": "ubuntu-latest",
            "steps": [*setup, {"name": "Tests", "run": test_command + "\n"}],
        },
        "data": {
            "name": "Data checks",
            "needs": ["test"],
            "runs-on": "ubuntu-latest",
            "environment": staging[0],
            "env": secrets,
            "steps": [
                *setup,
                *(
                    {
                        "name": f"Validate {name}",
                        "run": f'conveyor --env {staging[0]} data validate "{name}"\n',
                    }
                    for name in datasets
                ),
                {"name": "Doctor", "run": f"conveyor --env {staging[0]} doctor\n"},
            ],
        },
        "train": {
            "name": "Train through the gates",
            "needs": ["data"],
            "runs-on": "ubuntu-latest",
            "environment": staging[0],
            "env": secrets,
            "steps": [
                *setup,
                {
                    "id": "train",
                    "name": "Train",
                    "run": _train_script(staging[0], models, "$GITHUB_OUTPUT"),
                },
            ],
        },
        "image": {
            "name": "Image",
            "needs": ["train"],
            "runs-on": "ubuntu-latest",
            "env": {
                "REGISTRY_USER": "${{ secrets.REGISTRY_USER }}",
                "REGISTRY_PASSWORD": "${{ secrets.REGISTRY_PASSWORD }}",
            },
            "steps": [
                *setup,
                {
                    "name": "Build and push",
                    "run": (
                        "set -euo pipefail\n"
                        "conveyor build --tag ${{ github.sha }} --force\n"
                        f'echo "$REGISTRY_PASSWORD" | docker login "{_registry(image)}" '
                        '-u "$REGISTRY_USER" --password-stdin\n'
                        f"docker build -t {image}:${{{{ github.sha }}}} .\n"
                        f"docker push {image}:${{{{ github.sha }}}}\n"
                    ),
                },
            ],
        },
    }
    if models:  # each model's trained version, for the jobs that deploy it
        jobs["train"]["outputs"] = {
            _slug(m): f"${{{{ steps.train.outputs.REF_{_slug(m).upper()} }}}}" for m in models
        }
    previous = "image"
    for env in staging:
        job = f"deploy-{env}"
        jobs[job] = {
            "name": f"Deploy to {env} and smoke",
            "needs": [previous, "train"],
            "if": "github.ref == 'refs/heads/main'",
            "runs-on": "ubuntu-latest",
            "environment": env,
            "env": secrets,
            "steps": [
                *setup,
                {"name": "Kubeconfig", "env": kube_env, "run": _kubeconfig()},
                {
                    "name": f"Deploy and smoke {env}",
                    "env": kube_env,
                    "run": _staging_script(env, models, ref),
                },
            ],
        }
        previous = job
    jobs[f"deploy-{prod}"] = {
        "name": f"Deploy to {prod} (approval: the environment's required reviewers)",
        "needs": [previous, "train"],
        "if": "github.ref == 'refs/heads/main'",
        "runs-on": "ubuntu-latest",
        # the approval: give the environment required reviewers (Settings > Environments);
        # the job waits until one approves
        "environment": prod,
        "env": {**secrets, "CONVEYOR_NOTIFY_WEBHOOK": "${{ secrets.CONVEYOR_NOTIFY_WEBHOOK }}"},
        "steps": [
            *setup,
            {"name": "Kubeconfig", "env": kube_env, "run": _kubeconfig()},
            {
                "id": "rollout",
                "env": kube_env,
                "name": f"Promote and roll out in {prod}",
                "run": _prod_script(staging[-1], prod, models, ref, "${{ github.actor }}", place),
            },
            {
                "name": "Roll back and notify",
                "if": "failure()",
                "env": kube_env,
                "run": _rollback_script(
                    prod, "${{ github.workflow }} #${{ github.run_id }}", place
                ),
            },
        ],
    }
    return {
        "name": f"conveyor: {spec.project}",
        "on": {
            "push": {"branches": ["main"]},
            "pull_request": {},
            "workflow_dispatch": {},
        },
        "permissions": {"contents": "read"},
        "concurrency": {"group": "conveyor-${{ github.ref }}", "cancel-in-progress": False},
        "jobs": jobs,
    }


# -- GitLab CI -----------------------------------------------------------------------------


def _gitlab(spec: ProjectSpec, test_command: str, python: str, install: str) -> dict[str, Any]:
    staging, prod, models, datasets, image, place = _plan(spec)
    main_only = [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]

    def ref(kind: str, model: str = "") -> str:
        return "$CI_COMMIT_SHA" if kind == "sha" else f"${{REF_{_slug(model).upper()}}}"

    def script(text: str) -> list[str]:
        return [text]

    document: dict[str, Any] = {
        "stages": ["test", "data", "train", "image", *staging, "approve", prod],
        "default": {"image": f"python:{python}-slim-bookworm", "before_script": [install]},
        "variables": {
            "KUBECONFIG": "$CI_PROJECT_DIR/.kubeconfig",
            "CONVEYOR_CI_STATE": "$CI_PROJECT_DIR/.conveyor-ci",
        },
        "test": {"stage": "test", "script": script(test_command)},
        "data": {
            "stage": "data",
            "environment": {"name": staging[0], "action": "prepare"},
            "script": [
                *(f'conveyor --env {staging[0]} data validate "{n}"' for n in datasets),
                f"conveyor --env {staging[0]} doctor",
            ],
        },
        "train": {
            "stage": "train",
            "environment": {"name": staging[0], "action": "prepare"},
            "script": script(_train_script(staging[0], models, "train.env")),
            "artifacts": {"reports": {"dotenv": "train.env"}},
        },
        # not "image": a reserved keyword of .gitlab-ci.yml
        "build-image": {
            "stage": "image",
            "image": "quay.io/buildah/stable:v1.37",
            "before_script": [],
            "script": [
                f"dnf install -y python3-pip && {install}",
                "conveyor build --tag $CI_COMMIT_SHA --force",
                f'buildah login -u "$REGISTRY_USER" -p "$REGISTRY_PASSWORD" "{_registry(image)}"',
                f"buildah bud -t {image}:$CI_COMMIT_SHA .",
                f"buildah push {image}:$CI_COMMIT_SHA",
            ],
        },
    }
    kube = 'echo "$KUBECONFIG_DATA" > "$KUBECONFIG"'
    for env in staging:
        document[f"deploy-{env}"] = {
            "stage": env,
            "environment": {"name": env},
            "rules": main_only,
            "needs": ["build-image", "train"],
            "script": [kube, _staging_script(env, models, ref)],
        }
    document["approve-production"] = {
        "stage": "approve",
        "rules": [{**main_only[0], "when": "manual"}],
        "allow_failure": False,
        "environment": {"name": prod, "action": "prepare"},
        "script": ['echo "approved by $GITLAB_USER_LOGIN"'],
    }
    document[f"deploy-{prod}"] = {
        "stage": prod,
        "environment": {"name": prod},
        "rules": main_only,
        "needs": ["approve-production", "train"],
        "script": [
            kube,
            _prod_script(staging[-1], prod, models, ref, "$GITLAB_USER_LOGIN", place),
        ],
        # what the job changed, for the rollback job
        "artifacts": {"when": "always", "paths": [".conveyor-ci/"]},
    }
    document["rollback-production"] = {
        "stage": prod,
        "environment": {"name": prod, "action": "stop"},
        "rules": [{**main_only[0], "when": "on_failure"}],
        "needs": [f"deploy-{prod}"],
        "script": [kube, _rollback_script(prod, "$CI_PIPELINE_URL", place)],
    }
    return document


def _models(spec: ProjectSpec) -> dict[str, Any]:
    models = getattr(spec, "models", None)
    return dict(models or {})


def _datasets(spec: ProjectSpec) -> dict[str, Any]:
    datasets = getattr(spec, "datasets", None)
    return dict(datasets or {})


def render_pipeline(
    spec: ProjectSpec,
    provider: str,
    *,
    test_command: str = "pytest",
    install_command: str = DEFAULT_INSTALL,
    python: str | None = None,
) -> CiPipeline:
    """The pipeline of ``spec`` for ``provider`` (``github`` or ``gitlab``)."""
    import yaml

    if provider not in PROVIDERS:
        raise InvalidInputError(
            f"--provider {provider!r}: expected {' or '.join(PROVIDERS)}", field="provider"
        )
    from conveyor.deploy.settings import deploy_of

    python = python or deploy_of(spec).image.python
    staging, prod, notes = _stages(spec)
    build = _github if provider == "github" else _gitlab
    document = build(spec, test_command, python, install_command)
    header = _HEADER.format(
        provider=provider,
        project=spec.project,
        environments=" -> ".join([*staging, prod]),
        prod=prod,
    )
    body = yaml.dump(
        document, Dumper=_literal_dumper(), sort_keys=False, width=100, allow_unicode=True
    )
    jobs = [k for k in document["jobs"]] if provider == "github" else _gitlab_jobs(document)
    return CiPipeline(
        "github" if provider == "github" else "gitlab",
        header + body,
        jobs,
        staging,
        prod,
        sorted(_models(spec)),
        notes,
    )


def _gitlab_jobs(document: dict[str, Any]) -> list[str]:
    reserved = {"stages", "default", "variables", "include", "workflow"}
    return [k for k in document if k not in reserved]


def write_pipeline(pipeline: CiPipeline, path: Path, *, force: bool = False) -> Path:
    """Write the pipeline at ``path``; an existing different file needs ``force``."""
    if path.exists() and not force and path.read_text() != pipeline.text:
        raise AlreadyExistsError(
            f"{path} exists: pass --force to replace it (or --output another path)",
            path=str(path),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pipeline.text)
    pipeline.path = path
    return path


def _literal_dumper() -> Any:
    """A YAML dumper writing multi-line strings as literal blocks (scripts stay readable)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # every step written out: no anchors to follow

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper
