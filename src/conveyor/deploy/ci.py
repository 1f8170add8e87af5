"""CI/CD pipelines for a Conveyor project: ``conveyor ci init --provider github|gitlab``.

The pipeline is made from the spec: its data sets (checked), its models (trained through
their gates), its environments (in promotion order: the first is the laptop's, every later
one but the last is a staging one, the last is production). On every change (a push, a
pull or merge request):

1. **test**: lint and the project's tests (``--test-command``, default ``pytest``);
2. **data**: ``conveyor --env STAGING data validate DATASET`` of every data set (exit 3
   fails the pipeline), and ``conveyor doctor``;
3. **train**: ``conveyor --env STAGING train MODEL`` for every model: a candidate that fails
   its gates stops the pipeline (exit 3); the version trained is passed on;
4. **image**: ``conveyor build --tag COMMIT`` and the image built and pushed with that tag
   (docker on GitHub's runners, buildah on GitLab's);

then, on the default branch only:

5. **STAGING**: the chart applied (``conveyor deploy --target kubernetes --env STAGING
   --apply``) and the server's Deployment waited for, the new version routed there,
   ``conveyor smoke --env STAGING``; a second staging environment gets the version by
   ``conveyor promote`` from the one before;
6. **approval**: GitHub: the production job's ``environment:`` (give it required reviewers
   in the repository's settings; the reviewer is read back from the run's approvals and
   recorded as the promotion's ``--approver``); GitLab: a manual job (whoever runs it is
   the approver). Every staging environment the spec marks ``approval: true`` gets one too;
7. **PROD**: the chart applied, the version promoted (``conveyor promote --from STAGING
   --approver WHO``) and rolled out (``conveyor --env PROD rollout start MODEL@N``),
   followed until it ends (``rollout status MODEL --wait``: exit 3 when the analysis rolled
   it back), by the cluster's controller when the spec declares ``rollouts:``, else by the
   job itself (``rollout run --rollout MODEL --until-done``); ``conveyor smoke --env PROD``;
8. **rollback**: when the production job fails (the server never ready, the rollout's
   analysis, the smoke test), a rollout still running is aborted, one this run promoted is
   rolled back (``conveyor --env PROD rollback MODEL``), an unready Deployment is undone,
   and a message is posted to ``$CONVEYOR_NOTIFY_WEBHOOK``.

Secrets come from the CI's store, never the file (:attr:`CiPipeline.secrets` names them):
``CONVEYOR_API_KEY`` and ``KUBECONFIG_DATA`` per environment, ``REGISTRY_USER`` and
``REGISTRY_PASSWORD``, ``CONVEYOR_NOTIFY_WEBHOOK``, and each environment's backend URLs as
``CONVEYOR_ENVIRONMENTS__ENV__BACKENDS__SEAM`` (the spec's own override of that field: a
promotion reads the environment it leaves and the one it enters, each with its own URLs).
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
    "repository_root",
    "write_pipeline",
]

Provider = Literal["github", "gitlab"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitlab")
#: Where each provider reads its pipeline, relative to the repository's root.
DEFAULT_PATHS: dict[str, str] = {
    "github": ".github/workflows/conveyor.yaml",
    "gitlab": ".gitlab-ci.yml",
}
#: How a job installs the project: Conveyor with what deploying needs (override it with the
#: project's own requirements: ``--install-command "pip install -r requirements.txt"``).
DEFAULT_INSTALL = "pip install 'conveyor[serve,deploy]'"
#: kubectl on GitLab's jobs (GitHub's runners have it).
KUBECTL_VERSION = "v1.31.4"
#: The longest a GitHub job may run (minutes): a rollout followed longer is cut there.
_GITHUB_JOB_LIMIT = 360


@dataclass
class CiPipeline:
    """A pipeline made from a spec: its text, and what it holds."""

    provider: Provider
    text: str
    jobs: list[str]
    staging: list[str]
    production: str
    models: list[str]
    secrets: list[str]
    approvals: list[str]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "path": str(self.path) if self.path else None,
            "jobs": self.jobs,
            "staging": self.staging,
            "production": self.production,
            "approvals": self.approvals,
            "models": self.models,
            "secrets": self.secrets,
            "notes": self.notes,
        }


# -- what the spec asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """Where an environment's server runs: the chart's namespace and Deployment."""

    namespace: str
    deployment: str


@dataclass
class _Plan:
    project: str
    staging: list[str]
    prod: str
    models: list[str]
    datasets: list[str]
    image: str
    places: dict[str, _Place]
    #: environments a person approves before the pipeline deploys there (production always)
    gated: list[str]
    #: environments whose promotions must name an approver (``approval: true``)
    strict: set[str]
    seams: list[str]
    #: the cluster runs a rollout controller (the spec declares ``rollouts:``)
    controller: bool
    #: how long each model's production rollout is followed, minutes
    waits: dict[str, int]
    #: the project's folder inside the repository (None: its root)
    workdir: str | None
    notes: list[str]

    def previous(self, env: str) -> str | None:
        """The environment ``env`` is promoted from in the pipeline (None: trained there)."""
        order = [*self.staging, self.prod]
        index = order.index(env)
        return order[index - 1] if index else None


def _plan(spec: ProjectSpec, workdir: str | None) -> _Plan:
    from conveyor.deploy.settings import deploy_of

    declared = list(spec.environments)
    notes: list[str] = []
    if len(declared) >= 3:
        staging, prod = declared[1:-1], declared[-1]
    elif len(declared) == 2:
        staging, prod = [declared[0]], declared[1]
    else:
        staging, prod = ["staging"], "prod"
        notes.append(
            "the spec declares no environments (or one): the pipeline uses staging and prod; "
            "declare them under environments: (docs/deploy.md)"
        )

    def approval(env: str) -> bool:
        found = spec.environments.get(env)
        return True if found is None else found.approval  # an undeclared prod: asked

    strict = {e for e in [*staging, prod] if approval(e)}
    gated = [e for e in staging[1:] if e in strict] + [prod]
    if approval(staging[0]):
        notes.append(
            f"environments.{staging[0]}.approval: the pipeline trains in {staging[0]} rather "
            "than promoting into it, so no approval is asked there"
        )
    settings = deploy_of(spec)
    if settings.image.repository is None:
        notes.append(
            f"deploy.image.repository is not set: the image is pushed to docker.io/conveyor/"
            f"{spec.project.lower()}; set it to your registry"
        )
    models = sorted(_section(spec, "models"))
    controller = _declares_rollouts(spec, prod)
    if models and not controller:
        notes.append(
            "the spec declares no rollouts: section, so the chart runs no rollout controller: "
            f"the {prod} job drives each rollout itself (conveyor rollout run --until-done); "
            "declare rollouts: to hand them to the cluster"
        )
    waits = {m: _wait_minutes(spec, m) for m in models}
    if sum(waits.values()) + 30 > _GITHUB_JOB_LIMIT:
        notes.append(
            f"the rollouts take up to {sum(waits.values())} min, longer than a GitHub job may "
            f"run ({_GITHUB_JOB_LIMIT} min): shorten rollouts.defaults (steps, interval)"
        )
    hyphenated = [e for e in [*staging, prod] if "-" in e]
    if hyphenated:
        notes.append(
            f"environment names with '-' ({', '.join(hyphenated)}): CI variables cannot be "
            "named after them, so their backend URLs are read from secrets named with '_' "
            "on GitHub and must be set another way on GitLab"
        )
    return _Plan(
        project=spec.project,
        staging=staging,
        prod=prod,
        models=models,
        datasets=sorted(_section(spec, "datasets")),
        image=settings.image.repository or f"conveyor/{spec.project.lower()}",
        places={e: _place(spec, e) for e in [*staging, prod]},
        gated=gated,
        strict=strict,
        seams=_seams(spec),
        controller=controller,
        waits=waits,
        workdir=workdir,
        notes=notes,
    )


def _section(spec: ProjectSpec, name: str) -> dict[str, Any]:
    from conveyor.deploy.settings import section_or_none

    return dict(section_or_none(spec, name) or {})


def _declares_rollouts(spec: ProjectSpec, prod: str) -> bool:
    """Whether production's chart runs a rollout controller (as the chart decides it)."""
    if "rollouts" in spec.model_dump(exclude_defaults=True, include={"rollouts"}):
        return True
    declared = spec.environments.get(prod)
    return declared is not None and "rollouts" in declared.settings


def _wait_minutes(spec: ProjectSpec, model: str) -> int:
    """How long to follow ``model``'s rollout: twice its steps' intervals, and 10 minutes."""
    from conveyor.rollouts.settings import interval_of, plan_for

    plan = plan_for(spec, model)
    minutes = 2 * len(plan.steps) * interval_of(plan).total_seconds() / 60 + 10
    return max(30, int(minutes + 0.999))


def _place(spec: ProjectSpec, env: str) -> _Place:
    from conveyor.deploy.helm import namespace_of, release_of, server_deployment

    return _Place(namespace_of(spec, env), server_deployment(release_of(spec)))


def _seams(spec: ProjectSpec) -> list[str]:
    """The seams whose URLs the spec sets (at the top or in an environment): the URLs a
    job may need from the secret store."""
    found = set(spec.backends.model_fields_set)
    for declared in spec.environments.values():
        found |= set(declared.backends)
    return sorted(found | {"store", "artifacts"})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() or "MODEL"


def _ref(model: str) -> str:
    """The variable a job reads ``model``'s version from (``REF_FRAUD=fraud@4``)."""
    return f"REF_{_slug(model)}"


def _url_variable(env: str, seam: str) -> str:
    return f"CONVEYOR_ENVIRONMENTS__{env.upper()}__BACKENDS__{seam.upper()}"


def _registry(image: str) -> str:
    """The registry host of ``image`` (Docker Hub when its first part names no host)."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def repository_root(folder: Path) -> Path | None:
    """The git repository ``folder`` is in (its top folder), or None."""
    for candidate in (folder.resolve(), *folder.resolve().parents):
        if (candidate / ".git").exists():
            return candidate
    return None


# -- the scripts, the same on both providers ---------------------------------------------------
#
# They read what differs from variables the jobs set: IMAGE_TAG (the commit), REF_<MODEL>
# (a model's version in the environment the job reads it from), CONVEYOR_APPROVER,
# CONVEYOR_CI_STATE (what the production job changed, for the rollback); and they write the
# versions they leave in an environment as REF_<MODEL>=model@N lines to ``output``.

_JSON = "python -c 'import json, sys; d = json.load(sys.stdin); print({})'"
_VERSION = _JSON.format('d["version"]')
_PROMOTED = _JSON.format('d["model"] + "@" + str(d["to"]["version"])')
_STATUS = _JSON.format('d["status"]')


def _train_script(plan: _Plan, output: str) -> str:
    """Train every model in the first staging environment, through its gates."""
    env = plan.staging[0]
    lines = ["set -euo pipefail"]
    for model in plan.models:
        lines += [
            f'ref=$(conveyor --env {env} train "{model}" --json | {_VERSION})',
            f'echo "{_ref(model)}=$ref" >> {output}',
        ]
    if not plan.models:
        lines.append('echo "no models in conveyor.yaml: nothing to train"')
    return "\n".join(lines) + "\n"


def _chart(env: str, place: _Place) -> list[str]:
    """Apply the chart and wait until the server's new pods are ready."""
    return [
        f'conveyor deploy --target kubernetes --env {env} --tag "$IMAGE_TAG" --apply',
        f"kubectl --namespace {place.namespace} rollout status "
        f"deployment/{place.deployment} --timeout=10m",
    ]


def _promote(model: str, source: str, approver: bool) -> str:
    named = ' --approver "$CONVEYOR_APPROVER"' if approver else ""
    return f'ref=$(conveyor promote "${_ref(model)}" --from {source}{named} --json | {_PROMOTED})'


def _staging_script(plan: _Plan, env: str, output: str) -> str:
    """Deploy ``env``: the chart, each model's version (trained there, or promoted from the
    environment before), the smoke test."""
    source = plan.previous(env)
    lines = ["set -euo pipefail", *_chart(env, plan.places[env])]
    for model in plan.models:
        if source is None:
            lines.append(f'ref="${_ref(model)}"')
        else:
            lines.append(_promote(model, source, env in plan.gated))
        lines += [
            f'conveyor --env {env} deploy "$ref"',
            f'echo "{_ref(model)}=$ref" >> {output}',
        ]
    lines.append(f"conveyor smoke --env {env}")
    return "\n".join(lines) + "\n"


def _prod_script(plan: _Plan) -> str:
    """Apply the chart and wait for the server; promote each model from the last staging
    environment and roll it out (the first version of a model is routed whole: there is
    nothing to compare it with); smoke. What was changed is noted under
    ``$CONVEYOR_CI_STATE`` for the rollback."""
    prod, chart = plan.prod, _chart(plan.prod, plan.places[plan.prod])
    lines = [
        "set -euo pipefail",
        'mkdir -p "$CONVEYOR_CI_STATE"',
        chart[0],
        'touch "$CONVEYOR_CI_STATE/chart-applied"',
        chart[1],
        'touch "$CONVEYOR_CI_STATE/server-healthy"',
    ]
    for model in plan.models:
        wait = f"{plan.waits[model]}m"
        if plan.controller:  # the cluster's controller moves it; follow it
            follow = [f'  conveyor --env {prod} rollout status "{model}" --wait {wait}']
        else:  # no controller in the cluster: this job is the controller until it ends
            follow = [
                f"  timeout {wait} conveyor --env {prod} rollout run "
                f'--rollout "{model}" --until-done',
                f'  conveyor --env {prod} rollout status "{model}" --wait 1m',
            ]
        lines += [
            _promote(model, plan.staging[-1], True),
            f'if conveyor --env {prod} route show "{model}" > /dev/null 2>&1; then',
            f'  conveyor --env {prod} rollout start "$ref"',
            f'  echo "{model}" >> "$CONVEYOR_CI_STATE/rollouts"',
            *follow,
            "else",
            f'  conveyor --env {prod} deploy "$ref"  # its first version',
            "fi",
        ]
    lines.append(f"conveyor smoke --env {prod}")
    return "\n".join(lines) + "\n"


def _rollback_script(plan: _Plan, run_url: str) -> str:
    """Undo what the failed production job changed: abort a rollout still running, roll
    back a route a rollout promoted before the smoke test failed, undo the server's
    Deployment when its new pods never became ready; then notify."""
    prod, place = plan.prod, plan.places[plan.prod]
    reason = f'--reason "pipeline failed: {run_url}"'
    message = (
        f"python -c 'import json, sys; print(json.dumps({{\"text\": sys.argv[1]}}))' "
        f'"{prod}: the deployment failed and what it changed was rolled back: {run_url}"'
    )
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
        f"  {message} |\n"
        "    curl -fsS -X POST -H 'content-type: application/json' --data @- "
        '"$CONVEYOR_NOTIFY_WEBHOOK"\n'
        "fi\n"
    )


_KUBECONFIG = '(umask 077 && echo "$KUBECONFIG_DATA" > "$KUBECONFIG")'


# -- GitHub Actions ------------------------------------------------------------------------


def _approver_script(env: str, strict: bool) -> str:
    """Read who approved the job's deployment into ``env`` (the run's approvals) into the
    step's output ``login``."""
    query = (
        '[.[] | select(.state == "approved" and any(.environments[]?; .name == "'
        + env
        + '")) | .user.login] | .[0] // empty'
    )
    missing = (
        f'  echo "::error::no reviewer approved this deployment to {env} '
        f"(environments.{env}.approval in conveyor.yaml): give the GitHub environment "
        f'{env} required reviewers (Settings > Environments > {env})"\n'
        "  exit 1\n"
        if strict
        else f'  echo "::notice::{env} has no required reviewers: the approver recorded is '
        'the actor"\n'
        '  approver="$GITHUB_ACTOR"\n'
    )
    return (
        "set -euo pipefail\n"
        'approver=$(gh api "repos/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID/approvals" '
        f"--jq '{query}')\n"
        'if [ -z "$approver" ]; then\n' + missing + "fi\n"
        'echo "login=$approver" >> "$GITHUB_OUTPUT"\n'
    )


def _github(
    plan: _Plan, test_command: str, python: str, install: str, branch: str
) -> dict[str, Any]:
    def secret(name: str) -> str:
        return f"${{{{ secrets.{name} }}}}"

    def urls(*envs: str) -> dict[str, str]:
        """Backend URLs of ``envs`` from secrets (a name holds only letters, digits, _)."""
        return {
            _url_variable(e, s): secret(_url_variable(e, s).replace("-", "_"))
            for e in envs
            for s in plan.seams
        }

    def refs(job: str) -> dict[str, str]:
        return {_ref(m): f"${{{{ needs.{job}.outputs.{_ref(m)} }}}}" for m in plan.models}

    setup: list[dict[str, Any]] = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": python}},
        {"name": "Install", "run": install + "\n"},
    ]
    # the runner context is a step's, not a job's: set where the steps run
    kube = {
        "KUBECONFIG": "${{ runner.temp }}/kubeconfig",
        "CONVEYOR_CI_STATE": "${{ runner.temp }}/conveyor-ci",
    }
    key = {"CONVEYOR_API_KEY": secret("CONVEYOR_API_KEY")}
    deployer = {**key, "KUBECONFIG_DATA": secret("KUBECONFIG_DATA")}
    main_only = f"github.ref == 'refs/heads/{branch}'"
    first = plan.staging[0]

    def approval_step(env: str) -> dict[str, Any]:
        return {
            "id": "approval",
            "name": "Approver",
            "env": {"GH_TOKEN": "${{ github.token }}"},
            "run": _approver_script(env, env in plan.strict),
        }

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
            "environment": first,
            "env": {**key, **urls(first)},
            "steps": [
                *setup,
                *(
                    {
                        "name": f"Validate {name}",
                        "run": f'conveyor --env {first} data validate "{name}"\n',
                    }
                    for name in plan.datasets
                ),
                {"name": "Doctor", "run": f"conveyor --env {first} doctor\n"},
            ],
        },
        "train": {
            "name": "Train through the gates",
            "needs": ["data"],
            "runs-on": "ubuntu-latest",
            "environment": first,
            "env": {**key, **urls(first)},
            "steps": [
                *setup,
                {"id": "train", "name": "Train", "run": _train_script(plan, '"$GITHUB_OUTPUT"')},
            ],
        },
        "image": {
            "name": "Image",
            "needs": ["train"],
            "runs-on": "ubuntu-latest",
            "env": {
                "REGISTRY_USER": secret("REGISTRY_USER"),
                "REGISTRY_PASSWORD": secret("REGISTRY_PASSWORD"),
            },
            "steps": [
                *setup,
                {
                    "name": "Build and push",
                    "env": {"CONTEXT": "${{ runner.temp }}/image"},
                    "run": (
                        "set -euo pipefail\n"
                        'conveyor build --tag "$IMAGE_TAG" --output "$CONTEXT"\n'
                        f'echo "$REGISTRY_PASSWORD" | docker login "{_registry(plan.image)}" '
                        '-u "$REGISTRY_USER" --password-stdin\n'
                        f'docker build -t "{plan.image}:$IMAGE_TAG" "$CONTEXT"\n'
                        f'docker push "{plan.image}:$IMAGE_TAG"\n'
                    ),
                },
            ],
        },
    }
    if plan.models:  # each model's trained version, for the jobs that deploy it
        jobs["train"]["outputs"] = {
            _ref(m): f"${{{{ steps.train.outputs.{_ref(m)} }}}}" for m in plan.models
        }
    previous, reads = "image", "train"
    for env in plan.staging:
        job = f"deploy-{env}"
        source = plan.previous(env)
        steps: list[dict[str, Any]] = [*setup]
        step_env = {**kube, **refs(reads)}
        if env in plan.gated:
            steps.append(approval_step(env))
            step_env["CONVEYOR_APPROVER"] = "${{ steps.approval.outputs.login }}"
        steps += [
            {"name": "Kubeconfig", "env": kube, "run": _KUBECONFIG + "\n"},
            {
                "id": "deploy",
                "name": f"Deploy and smoke {env}",
                "env": step_env,
                "run": _staging_script(plan, env, '"$GITHUB_OUTPUT"'),
            },
        ]
        jobs[job] = {
            "name": f"Deploy to {env} and smoke",
            "needs": [previous, "train"] if source is None else [previous],
            "if": main_only,
            "runs-on": "ubuntu-latest",
            "environment": env,
            "concurrency": _one_at_a_time(env),
            "env": {**deployer, **urls(*([source] if source else []), env)},
            "steps": steps,
        }
        if env in plan.gated:
            jobs[job]["permissions"] = {"contents": "read", "actions": "read"}
        if plan.models:
            jobs[job]["outputs"] = {
                _ref(m): f"${{{{ steps.deploy.outputs.{_ref(m)} }}}}" for m in plan.models
            }
        previous = reads = job
    prod = plan.prod
    jobs[f"deploy-{prod}"] = {
        "name": f"Deploy to {prod} (approved by the environment's required reviewers)",
        "needs": [previous],
        "if": main_only,
        "runs-on": "ubuntu-latest",
        "environment": prod,
        "concurrency": _one_at_a_time(prod),
        # the approver is read from the run's approvals
        "permissions": {"contents": "read", "actions": "read"},
        "timeout-minutes": min(_GITHUB_JOB_LIMIT, 30 + sum(plan.waits.values())),
        "env": {
            **deployer,
            **urls(plan.staging[-1], prod),
            "CONVEYOR_NOTIFY_WEBHOOK": secret("CONVEYOR_NOTIFY_WEBHOOK"),
        },
        "steps": [
            *setup,
            approval_step(prod),
            {"name": "Kubeconfig", "env": kube, "run": _KUBECONFIG + "\n"},
            {
                "id": "rollout",
                "name": f"Promote and roll out in {prod}",
                "env": {
                    **kube,
                    **refs(previous),
                    "CONVEYOR_APPROVER": "${{ steps.approval.outputs.login }}",
                },
                "run": _prod_script(plan),
            },
            {
                "name": "Roll back and notify",
                "if": "failure()",
                "env": kube,
                "run": _rollback_script(
                    plan, "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"
                ),
            },
        ],
    }
    document: dict[str, Any] = {
        "name": f"conveyor: {plan.project}",
        "on": {
            "push": {"branches": [branch]},
            "pull_request": {},
            "workflow_dispatch": {},
        },
        "permissions": {"contents": "read"},
        "env": {"IMAGE_TAG": "${{ github.sha }}"},
    }
    if plan.workdir:
        document["defaults"] = {"run": {"working-directory": plan.workdir}}
    document["jobs"] = jobs
    return document


def _one_at_a_time(env: str) -> dict[str, Any]:
    """One deployment to ``env`` at a time: a newer one waits for the one running (and
    GitHub cancels one still pending when a newer one comes: the newer commit wins)."""
    return {"group": f"conveyor-deploy-{env}", "cancel-in-progress": False}


def _github_comments(plan: _Plan) -> dict[str, str]:
    """Comments written above jobs and steps of the workflow (the dumper writes none)."""
    found = {
        f"  deploy-{plan.prod}:": (
            f"The approval before production: this job deploys to the GitHub environment "
            f"'{plan.prod}'. Give that environment required reviewers (Settings > "
            "Environments > " + plan.prod + " > Required reviewers): the job waits until "
            "one approves, and that reviewer is recorded as the promotion's --approver. "
            "Its secrets: CONVEYOR_API_KEY, KUBECONFIG_DATA, CONVEYOR_NOTIFY_WEBHOOK."
        ),
        "    - name: Roll back and notify": (
            "Runs when a step above failed: the server never ready, the rollout rolled back "
            "by its analysis, the smoke test. Aborts the rollout, rolls back the route, "
            "undoes the Deployment, and posts to CONVEYOR_NOTIFY_WEBHOOK."
        ),
        "  data:": (
            f"data and train read {plan.staging[0]}'s secrets (its GitHub environment): give "
            "it no required reviewers, or every change waits for one."
        ),
    }
    for env in plan.gated[:-1]:
        found[f"  deploy-{env}:"] = (
            f"environments.{env}.approval: this job waits for the required reviewers of the "
            f"GitHub environment '{env}'; the reviewer is recorded as --approver."
        )
    return found


# -- GitLab CI -----------------------------------------------------------------------------


def _gitlab(plan: _Plan, test_command: str, python: str, install: str) -> dict[str, Any]:
    main = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
    output = '"$CI_PROJECT_DIR/refs.env"'
    refs = {"reports": {"dotenv": "refs.env"}}
    enter = [f'cd "$CI_PROJECT_DIR/{plan.workdir}"'] if plan.workdir else []
    tools = [
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends curl "
        "ca-certificates > /dev/null",
        'curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/'
        'linux/amd64/kubectl" && chmod +x /usr/local/bin/kubectl',
    ]
    deployer = [*tools, *enter, install]
    stages = ["test", "data", "train", "image"]
    for env in plan.staging:
        stages += [f"approve-{env}"] if env in plan.gated else []
        stages.append(env)
    stages += [f"approve-{plan.prod}", plan.prod]
    document: dict[str, Any] = {
        # merge request pipelines, and branch pipelines when no merge request is open
        "workflow": {
            "rules": [
                {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
                {"if": "$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS", "when": "never"},
                {"if": "$CI_COMMIT_BRANCH"},
            ]
        },
        "stages": stages,
        "default": {
            "image": f"python:{python}-slim-bookworm",
            "before_script": [*enter, install],
        },
        "variables": {
            "IMAGE_TAG": "$CI_COMMIT_SHA",
            "KUBECONFIG": "$CI_PROJECT_DIR/.kubeconfig",
            "CONVEYOR_CI_STATE": "$CI_PROJECT_DIR/.conveyor-ci",
            "KUBECTL_VERSION": KUBECTL_VERSION,
        },
        "test": {"stage": "test", "script": [test_command]},
        "data": {
            "stage": "data",
            "environment": {"name": plan.staging[0], "action": "prepare"},
            "script": [
                *(f'conveyor --env {plan.staging[0]} data validate "{n}"' for n in plan.datasets),
                f"conveyor --env {plan.staging[0]} doctor",
            ],
        },
        "train": {
            "stage": "train",
            "environment": {"name": plan.staging[0], "action": "prepare"},
            "script": [_train_script(plan, output)],
            "artifacts": {"reports": {"dotenv": "refs.env"}},
        },
        # the build context is written where Conveyor runs with the image's Python (its
        # pins are that Python's), then built and pushed by buildah
        "build-context": {
            "stage": "image",
            "needs": ["train"],
            "script": ['conveyor build --tag "$IMAGE_TAG" --output "$CI_PROJECT_DIR/.image"'],
            "artifacts": {"paths": [".image/"], "expire_in": "1 day"},
        },
        # not "image": a reserved keyword of .gitlab-ci.yml
        "build-image": {
            "stage": "image",
            "needs": ["build-context"],
            "image": "quay.io/buildah/stable:v1.37",
            "variables": {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"},
            "before_script": [],
            "script": [
                'echo "$REGISTRY_PASSWORD" | buildah login -u "$REGISTRY_USER" --password-stdin '
                f'"{_registry(plan.image)}"',
                f'buildah bud -t "{plan.image}:$IMAGE_TAG" "$CI_PROJECT_DIR/.image"',
                f'buildah push "{plan.image}:$IMAGE_TAG"',
            ],
        },
    }

    def approve(env: str) -> dict[str, Any]:
        return {
            "stage": f"approve-{env}",
            "rules": [{"if": main, "when": "manual"}],
            "allow_failure": False,
            "environment": {"name": env, "action": "prepare"},
            "before_script": [],
            # in a manual job GITLAB_USER_LOGIN is whoever ran it: the approver
            "script": [
                'echo "CONVEYOR_APPROVER=$GITLAB_USER_LOGIN" > "$CI_PROJECT_DIR/approval.env"'
            ],
            "artifacts": {"reports": {"dotenv": "approval.env"}},
        }

    previous = None
    for env in plan.staging:
        needs = ["build-image", "train"] if previous is None else [previous]
        if env in plan.gated:
            document[f"approve-{env}"] = approve(env)
            needs.append(f"approve-{env}")
        document[f"deploy-{env}"] = {
            "stage": env,
            "environment": {"name": env},
            "rules": [{"if": main}],
            "needs": needs,
            "before_script": deployer,
            "script": [_KUBECONFIG, _staging_script(plan, env, output)],
            "artifacts": refs,
        }
        previous = f"deploy-{env}"
    prod = plan.prod
    document[f"approve-{prod}"] = approve(prod)
    document[f"deploy-{prod}"] = {
        "stage": prod,
        "environment": {"name": prod},
        "rules": [{"if": main}],
        "needs": [previous, f"approve-{prod}"],
        "timeout": f"{30 + sum(plan.waits.values())}m",
        "before_script": deployer,
        "script": [_KUBECONFIG, _prod_script(plan)],
        # what the job changed, for the rollback job
        "artifacts": {"when": "always", "paths": [".conveyor-ci/"]},
    }
    document[f"rollback-{prod}"] = {
        "stage": prod,
        # access: prod's variables, and no deployment recorded for the failed commit
        "environment": {"name": prod, "action": "access"},
        "rules": [{"if": main, "when": "on_failure"}],
        "needs": [f"deploy-{prod}"],
        "before_script": deployer,
        "script": [_KUBECONFIG, _rollback_script(plan, "$CI_PIPELINE_URL")],
    }
    return document


def _gitlab_comments(plan: _Plan) -> dict[str, str]:
    found = {
        f"approve-{plan.prod}:": (
            f"The approval before production: a manual job. Protect the environment "
            f"'{plan.prod}' (Settings > CI/CD > Protected environments) so that only its "
            "approvers may run it; whoever runs it is recorded as the promotion's --approver."
        ),
        f"rollback-{plan.prod}:": (
            f"Runs when deploy-{plan.prod} failed: the server never ready, the rollout rolled "
            "back by its analysis, the smoke test. Aborts the rollout, rolls back the route, "
            "undoes the Deployment, and posts to CONVEYOR_NOTIFY_WEBHOOK."
        ),
    }
    for env in plan.gated[:-1]:
        found[f"approve-{env}:"] = (
            f"environments.{env}.approval: a manual job before {env} (protect the environment "
            "so that only its approvers may run it)."
        )
    return found


def _gitlab_secrets(plan: _Plan) -> list[str]:
    return [
        "CONVEYOR_API_KEY",
        "KUBECONFIG_DATA",
        "REGISTRY_USER",
        "REGISTRY_PASSWORD",
        "CONVEYOR_NOTIFY_WEBHOOK",
        # a variable's name holds letters, digits and _ only: see the note on '-'
        *(
            _url_variable(e, s)
            for e in [*plan.staging, plan.prod]
            if "-" not in e
            for s in plan.seams
        ),
    ]


# -- the file ------------------------------------------------------------------------------

_HEADER = """\
# Written by `conveyor ci init --provider {provider}` from conveyor.yaml (project {project}).
# On every change: tests, data checks, training through the gates, the image (tag: the
# commit). On {branch}: {staging} deployed and smoke-tested; an approval; {prod}
# through a rollout, rolled back (and CONVEYOR_NOTIFY_WEBHOOK told) when it fails.
#
# Secrets, from the CI's secret store (none is written here):
#   CONVEYOR_API_KEY, KUBECONFIG_DATA   per environment ({where})
#   REGISTRY_USER, REGISTRY_PASSWORD    the image registry ({registry})
#   CONVEYOR_NOTIFY_WEBHOOK             where a failed deployment is reported
#   CONVEYOR_ENVIRONMENTS__<ENV>__BACKENDS__<SEAM>   each environment's backend URLs
#     (seams: {seams}), as {scope}: a promotion reads two environments
"""


def render_pipeline(
    spec: ProjectSpec,
    provider: str,
    *,
    test_command: str = "pytest",
    install_command: str = DEFAULT_INSTALL,
    python: str | None = None,
    workdir: str | None = None,
    branch: str = "main",
) -> CiPipeline:
    """The pipeline of ``spec`` for ``provider`` (``github`` or ``gitlab``). ``workdir``: the
    project's folder relative to the repository's root, when it is not the root; ``branch``:
    the one GitHub deploys from (GitLab deploys from the project's default branch)."""
    import yaml

    from conveyor.deploy.settings import deploy_of

    if provider not in PROVIDERS:
        raise InvalidInputError(
            f"--provider {provider!r}: expected {' or '.join(PROVIDERS)}", field="provider"
        )
    plan = _plan(spec, workdir if workdir not in (None, "", ".") else None)
    python = python or deploy_of(spec).image.python
    if provider == "github":
        document = _github(plan, test_command, python, install_command, branch)
        comments, jobs = _github_comments(plan), list(document["jobs"])
        secrets = sorted(
            {n for s in _strings(document) for n in re.findall(r"secrets\.([A-Za-z0-9_]+)", s)}
        )
        where = "GitHub environment secrets"
        scope = "repository secrets"
    else:
        document = _gitlab(plan, test_command, python, install_command)
        comments, jobs = _gitlab_comments(plan), _gitlab_jobs(document)
        secrets = _gitlab_secrets(plan)
        where = "variables scoped to it"
        scope = "unscoped CI/CD variables"
    header = _HEADER.format(
        provider=provider,
        project=spec.project,
        branch=f"the branch {branch}" if provider == "github" else "the default branch",
        staging=", ".join(plan.staging),
        prod=plan.prod,
        where=where,
        registry=_registry(plan.image),
        seams=", ".join(plan.seams),
        scope=scope,
    )
    body = yaml.dump(
        document, Dumper=_literal_dumper(), sort_keys=False, width=1000, allow_unicode=True
    )
    return CiPipeline(
        provider="github" if provider == "github" else "gitlab",
        text=header + _commented(body, comments),
        jobs=jobs,
        staging=plan.staging,
        production=plan.prod,
        models=plan.models,
        secrets=secrets,
        approvals=plan.gated,
        notes=plan.notes,
    )


def _strings(node: Any) -> Any:
    """Every string in a document (values and keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _gitlab_jobs(document: dict[str, Any]) -> list[str]:
    reserved = {"stages", "default", "variables", "include", "workflow"}
    return [k for k in document if k not in reserved]


def _commented(body: str, comments: dict[str, str]) -> str:
    """``body`` with each comment above the first line starting with its key."""
    import textwrap

    out: list[str] = []
    for line in body.splitlines(keepends=True):
        for start, comment in comments.items():
            if line.startswith(start) and (line == start + "\n" or line[len(start)] == " "):
                indent = " " * (len(line) - len(line.lstrip()))
                out += [f"{indent}# {text}\n" for text in textwrap.wrap(comment, 90)]
                comments = {k: v for k, v in comments.items() if k != start}
                break
        out.append(line)
    return "".join(out)


def write_pipeline(pipeline: CiPipeline, path: Path, *, force: bool = False) -> Path:
    """Write the pipeline at ``path``; an existing different file needs ``force``."""
    if path.exists() and not force and path.read_text() != pipeline.text:
        raise AlreadyExistsError(
            f"{path} exists: pass --force to replace it (or --output another path)",
            path=str(path),
        )
    from conveyor.deploy.files import write_whole

    write_whole(path, pipeline.text)
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
