"""``conveyor deploy --target kubernetes --env NAME``: the chart rendered from the spec.

The values come from the spec loaded for the environment (replicas, resources, the spec
itself as a ConfigMap, backend URLs as Secret references, ``deploy.kubernetes.values``),
the chart ``deploy/helm/conveyor`` is rendered by Helm's own engine, and every manifest is
validated against the Kubernetes OpenAPI schemas and the policy checks before anything is
written or applied. ``--apply`` hands the manifests to ``kubectl apply`` (the configured
``deploy.kubernetes.kube_context``, else the current one) and records a
``deploy.applied`` event.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec
    from conveyor.project import Project

__all__ = ["KUBERNETES_VERSIONS", "Kubernetes", "Rendered", "git", "image_reference"]

#: The Kubernetes versions every rendered manifest is validated against.
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0")


def image_reference(spec: ProjectSpec, tag: str | None = None) -> str:
    """``repository:tag`` of the project's image: ``deploy.image`` or ``conveyor/<project>``,
    tagged with ``tag``, the configured tag, else the git commit (never ``latest``)."""
    from conveyor.deploy.settings import deploy_of

    image = deploy_of(spec).image
    repository = image.repository or f"conveyor/{spec.project.lower()}"
    chosen = tag or image.tag or _git_commit(spec.root)
    if not chosen:
        raise ConfigError(
            "no image tag: the project is not in a git repository; set deploy.image.tag or "
            "pass --tag",
            field="deploy.image.tag",
        )
    if chosen == "latest":
        raise InvalidInputError(
            "the image tag 'latest' names no one build: use the commit or a version",
            field="tag",
        )
    return f"{repository}@{chosen}" if chosen.startswith("sha256:") else f"{repository}:{chosen}"


def git(root: Path, *args: str) -> str | None:
    """``git ARGS`` in ``root``: its output, or None outside a repository or without git."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def _git_commit(root: Path) -> str | None:
    return git(root, "rev-parse", "--short=12", "HEAD")


@dataclass
class Rendered:
    """The chart rendered for one environment, and what its checks found."""

    environment: str
    release: str
    namespace: str
    image: str
    manifests: list[dict[str, Any]]
    schema_errors: list[str] = field(default_factory=list)
    policy: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    kubernetes_versions: tuple[str, ...] = KUBERNETES_VERSIONS

    @property
    def valid(self) -> bool:
        return not self.schema_errors and not self.policy

    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(m.get("kind", "?") for m in self.manifests).items()))

    def describe(self) -> list[str]:
        """What was rendered, in lines for a person (the problems are ``problems``)."""
        kinds = ", ".join(f"{n} {k}" for k, n in self.kinds().items())
        verdict = "valid" if self.valid else "INVALID"
        lines = [
            f"{len(self.manifests)} manifests for {self.environment} (release {self.release}, "
            f"namespace {self.namespace}, image {self.image}): {kinds}",
            f"{verdict} against Kubernetes {', '.join(self.kubernetes_versions)} and the "
            "policy checks",
        ]
        if self.written:
            lines.append(f"written to {self.written[0].parent}")
        return lines

    @property
    def problems(self) -> list[str]:
        return [*self.schema_errors, *self.policy]

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "release": self.release,
            "namespace": self.namespace,
            "image": self.image,
            "manifests": len(self.manifests),
            "kinds": self.kinds(),
            "valid": self.valid,
            "validated_against": list(self.kubernetes_versions),
            "schema_errors": self.schema_errors,
            "policy_violations": self.policy,
            "written": [str(p) for p in self.written],
        }


class Kubernetes:
    """Render (and apply) the project's chart for the environment its spec was loaded for."""

    def __init__(self, spec: ProjectSpec, events: Any = None) -> None:
        self.spec = spec
        self.events = events

    @classmethod
    def for_project(cls, project: Project) -> Kubernetes:
        return cls(project.spec, lambda: project.events)

    def render(
        self,
        *,
        tag: str | None = None,
        set_values: Sequence[str] = (),
        output: Path | None = None,
        kubernetes_versions: tuple[str, ...] = KUBERNETES_VERSIONS,
    ) -> Rendered:
        """Render the chart, validate every manifest, and write them under ``output``.

        ``set_values`` are ``key.path=YAML`` overrides (``server.replicas=3``), merged over
        the values made from the spec."""
        from conveyor.config import deep_merged
        from conveyor.deploy import helm

        spec = self.spec
        if spec.environment is None:
            raise InvalidInputError(
                "which environment? pass --env NAME (environments: "
                f"{', '.join(spec.environments) or 'none declared'})",
                field="environment",
            )
        spec.environment_spec()  # declared, or a ConfigError listing those that are
        image = image_reference(spec, tag)
        values = helm.values_for(spec, image=image, environment=spec.environment)
        for item in set_values:
            values = deep_merged(values, _set_value(item))
        release = helm.release_of(spec)
        namespace = helm.namespace_of(spec, spec.environment)
        manifests = helm.render(values, release=release, namespace=namespace)
        rendered = Rendered(
            spec.environment,
            release,
            namespace,
            image,
            manifests,
            schema_errors=helm.validate(manifests, kubernetes_versions),
            policy=helm.policy_violations(manifests),
            kubernetes_versions=kubernetes_versions,
        )
        if output is not None:
            rendered.written = _write(manifests, output)
        return rendered

    def apply(
        self,
        rendered: Rendered,
        *,
        actor: str | None,
        context: str | None = None,
        timeout_s: float = 300,
    ) -> str:
        """``kubectl apply`` the manifests (refused when any check failed); its output.

        kubectl waits for ever on an API server that takes the connection and never
        answers: the apply gives up after ``timeout_s``."""
        import yaml

        from conveyor.deploy.settings import deploy_of

        if not rendered.valid:
            raise InvalidInputError(
                "the rendered manifests did not pass their checks; nothing applied: "
                + "; ".join(rendered.problems[:5]),
                field="manifests",
            )
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ConfigError("kubectl is not installed: install it to --apply", field="kubectl")
        context = context or deploy_of(self.spec).kubernetes.kube_context
        command = [kubectl, "apply", "--namespace", rendered.namespace, "-f", "-"]
        if context:
            command[1:1] = ["--context", context]
        document = yaml.safe_dump_all(rendered.manifests, sort_keys=False)
        try:
            done = subprocess.run(
                command,
                input=document,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"kubectl apply did not finish within {timeout_s:g} s: is the cluster's API "
                "server answering? Nothing was recorded; what kubectl sent may be applied",
                field="kubectl",
            ) from None
        if done.returncode != 0:
            raise ConfigError(
                f"kubectl apply failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[:2000]}",
                field="kubectl",
            )
        events = self.events() if callable(self.events) else self.events
        if events is not None:
            events.record(
                "deploy.applied",
                subject=rendered.release,
                actor=actor,
                payload={
                    "environment": rendered.environment,
                    "release": rendered.release,
                    "namespace": rendered.namespace,
                    "manifests": len(rendered.manifests),
                    "image": rendered.image,
                },
            )
        return done.stdout


def _set_value(item: str) -> dict[str, Any]:
    """``a.b=VALUE`` as ``{"a": {"b": VALUE}}`` (the value read as YAML)."""
    import yaml

    path, sep, raw = item.partition("=")
    if not sep or not path:
        raise InvalidInputError(f"--set {item!r}: expected KEY.PATH=VALUE", field="set")
    node: Any = yaml.safe_load(raw) if raw else ""
    for key in reversed(path.split(".")):
        node = {key: node}
    found: dict[str, Any] = node
    return found


def _write(manifests: list[dict[str, Any]], output: Path) -> list[Path]:
    """One file per manifest (``NN-kind-name.yaml``) and ``all.yaml``; stale ones removed.

    Each file is written whole (:func:`~conveyor.deploy.files.write_whole`), and stale
    files go only once the new set is in place: a command killed mid-way leaves every
    manifest whole, old or new, never a folder emptied or a file cut short."""
    import yaml

    from conveyor.deploy.files import write_whole

    output.mkdir(parents=True, exist_ok=True)
    written = []
    for index, manifest in enumerate(manifests):
        kind = str(manifest.get("kind", "object")).lower()
        name = str((manifest.get("metadata") or {}).get("name", "unnamed"))
        path = output / f"{index:02d}-{kind}-{name}.yaml"
        write_whole(path, yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    everything = output / "all.yaml"
    write_whole(everything, yaml.safe_dump_all(manifests, sort_keys=False))
    keep = {everything, *written}
    for old in output.glob("*.yaml"):
        if old not in keep:
            old.unlink()
    return [everything, *written]
