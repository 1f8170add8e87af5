"""The ``deploy:`` section of ``conveyor.yaml``: how the project is packaged and deployed.

::

    deploy:
      image:
        repository: registry.example.com/fraud    # default: conveyor/<project>
        tag: null                                  # default: the git commit (short)
        extras: null                               # default: what the spec uses
        bake_models: false                         # true: routed models copied into the image
      kubernetes:
        release: fraud                             # default: the project's name
        namespace: null                            # default: the environment's, else its name
        ingress_host: fraud.example.com
        values: {server: {topologySpread: true}}   # any chart value, checked by its schema

Environments (``environments:``) are the foundation's: replicas, resources, backend URLs
and SLOs per environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "SECTIONS",
    "DeploySpec",
    "ImageSpec",
    "KubernetesSpec",
    "deploy_of",
    "section_or_none",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ImageSpec(BaseModel):
    """The container image ``conveyor build`` writes the recipe of."""

    model_config = _STRICT

    repository: str | None = Field(
        None, description="Image repository (default: conveyor/<project>)."
    )
    tag: str | None = Field(None, description="Image tag (default: the git commit, short).")
    python: str = Field("3.11", pattern=r"^3\.\d+$", description="Python version of the image.")
    base: str | None = Field(
        None,
        description="Base image of both stages (default: python:<python>-slim-bookworm, "
        "pinned by digest when you give one: name@sha256:...).",
    )
    extras: list[str] | None = Field(
        None, description="Conveyor extras to install (default: those the spec uses)."
    )
    bake_models: bool = Field(
        False,
        description="Copy the routed model versions into the image (else pulled from the "
        "artifact store at start, by digest).",
    )


class KubernetesSpec(BaseModel):
    """How the Helm chart is rendered for this project."""

    model_config = _STRICT

    release: str | None = Field(None, description="Helm release name (default: the project).")
    namespace: str | None = Field(
        None, description="Namespace (default: the environment's namespace, else its name)."
    )
    ingress_host: str | None = Field(None, description="Host name the Ingress answers.")
    kube_context: str | None = Field(
        None, description="kubectl context `conveyor deploy --apply` uses (default: current)."
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Chart values merged over those made from the spec (checked against "
        "the chart's values.schema.json).",
    )


class DeploySpec(BaseModel):
    model_config = _STRICT

    image: ImageSpec = Field(default_factory=ImageSpec, description="The container image.")
    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec, description="The Helm chart's rendering."
    )


SECTIONS = {
    "deploy": (
        DeploySpec,
        Field(default_factory=DeploySpec, description="Packaging and deployment."),
    )
}


def section_or_none(spec: ProjectSpec, name: str) -> Any:
    """Another capability's section of the spec, or None when that capability is not
    installed (the image, the chart and the pipeline read what is there)."""
    from conveyor.errors import ConfigError

    try:
        return spec.section(name)
    except ConfigError:
        return None


def deploy_of(spec: ProjectSpec) -> DeploySpec:
    found: DeploySpec = spec.section("deploy")
    return found
