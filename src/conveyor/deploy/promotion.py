"""Promotion of a model version from one environment to the next.

Each environment has its own store and artifact store (``environments.NAME.backends``), so
its own registry. ``conveyor promote fraud@4 --from staging`` copies version 4 from
staging's registry into the next environment's (prod, in the spec's order)::

    promote_version(root, "fraud@4", from_env="staging", approver="ana", actor="key:ci")

- refused unless the version's gates passed **there**: its newest gate report in the source
  environment (none, or a failed one, is a :class:`~conveyor.errors.GateFailedError` naming
  the failed checks);
- refused when the target environment declares ``approval: true`` and no approver is named;
- refused when the target is not the next environment (no skipping staging);
- the artifact's bytes are read back and their sha256 checked before they are written;
- the new version keeps the flavor, signature, metrics, params and code lineage; its tags and
  lineage (``inputs``) record where it came from, the gate report and the approver; the gate
  report is copied into the target's store under the new number, so its gated aliases
  (``champion``) admit it there;
- idempotent: promoting the same version again returns the version already promoted; a
  run stopped between the copy and its gate report (``kill -9``) is finished by the next
  (the report copied, the event written).

Every promotion is a ``deploy.promoted`` audit event in the target environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, GateFailedError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.config import ProjectSpec
    from conveyor.project import Project
    from conveyor.registry.versions import ModelVersion

__all__ = ["PROMOTED_FROM", "EnvironmentPromotion", "promote_version"]

log = logging.getLogger(__name__)

#: The tag a promoted version carries: ``ENV:MODEL@N`` of the version it was copied from.
PROMOTED_FROM = "conveyor.promoted_from"


@dataclass(frozen=True, slots=True)
class EnvironmentPromotion:
    """A version copied into the next environment (or found already there)."""

    source: ModelVersion
    target: ModelVersion
    from_env: str
    to_env: str
    approver: str | None
    gate_report: str
    already: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.source.model,
            "from": {"environment": self.from_env, "version": self.source.number},
            "to": {"environment": self.to_env, "version": self.target.number},
            "sha256": self.source.artifact_digest,
            "approver": self.approver,
            "gate_report": self.gate_report,
            "already_promoted": self.already,
        }


def promote_version(
    root: str | os.PathLike[str] | None,
    ref: str,
    *,
    from_env: str,
    to_env: str | None = None,
    approver: str | None = None,
    actor: str | None = None,
    env: Mapping[str, str] | None = None,
    authorize: Any = None,
) -> EnvironmentPromotion:
    """Copy ``ref`` (``MODEL@N`` or ``MODEL@ALIAS``) from ``from_env`` into the next one.

    ``authorize(target_project)``, when given, is called before anything is written and
    returns the actor to record (the CLI checks the caller's key against the target).
    """
    from conveyor.config import load_spec
    from conveyor.project import Project

    env = dict(os.environ if env is None else env)
    env.pop("CONVEYOR_ENV", None)  # each side is loaded for its own environment
    source_spec = load_spec(root, env, environment=from_env)
    following = source_spec.next_environment(from_env)
    if to_env is None:
        if following is None:
            raise InvalidInputError(
                f"{from_env!r} is the last environment ({', '.join(source_spec.environments)}):"
                " there is nothing to promote it to",
                field="from_env",
            )
        to_env = following
    elif to_env != following:
        source_spec.environment_spec(to_env)  # unknown: the declared ones listed
        order = " -> ".join(source_spec.environments)
        raise InvalidInputError(
            f"a version goes from {from_env!r} to the next environment "
            f"({following or 'none'}), not to {to_env!r}: promotion order is {order}",
            field="to_env",
        )
    target_spec = load_spec(root, env, environment=to_env)
    with Project(target_spec) as target:
        # the caller's key first: a refusal tells nothing about the versions
        who = authorize(target) if authorize is not None else actor
        return _promote(source_spec, target, ref, from_env, to_env, approver, who)


def _promote(
    source_spec: ProjectSpec,
    target: Project,
    ref: str,
    from_env: str,
    to_env: str,
    approver: str | None,
    who: str | None,
) -> EnvironmentPromotion:
    from conveyor.project import Project

    target_spec = target.spec
    if target_spec.url("store") == source_spec.url("store"):
        raise ConfigError(
            f"{from_env!r} and {to_env!r} use the same store ({target_spec.url('store')}): "
            "give each environment its own backends.store (and artifacts) to promote "
            "between them",
            field="environments",
        )
    wanted = target_spec.environment_spec(to_env)
    if wanted.approval and not (approver or "").strip():
        raise InvalidInputError(
            f"promotions into {to_env!r} need an approver (environments.{to_env}.approval): "
            "name them with --approver",
            field="approver",
        )
    with Project(source_spec) as source:
        version = source.registry.resolve(ref)
        report = _passed_gates(source, version, from_env)
        origin = f"{from_env}:{version.ref}"
        existing = _already_promoted(target, version, origin)
        if existing is not None and target.registry.gate_report(existing) is not None:
            return EnvironmentPromotion(
                version, existing, from_env, to_env, approver, report.id, already=True
            )
        if existing is None:
            payload = source.registry.artifacts.get(version.artifact_digest)  # sha256 checked
            # its recorded formula too (derived from these same bytes): copied, not recomputed
            formula = _formula(source, version)
            copied = _copy(target, version, payload, formula, origin, report, approver, who)
        else:  # an earlier run stopped after the copy: its report and event are still due
            copied = existing
        _copy_report(target, report, copied)
        target.events.record(
            "deploy.promoted",
            subject=version.model,
            subject_version=str(copied.number),
            actor=who,
            payload={
                "model": version.model,
                "version": version.number,
                "from_env": from_env,
                "to_env": to_env,
                "to_version": copied.number,
                "sha256": version.artifact_digest,
                "approver": approver,
                "gate_report": report.id,
            },
        )
        return EnvironmentPromotion(
            version, copied, from_env, to_env, approver, report.id, already=existing is not None
        )


def _passed_gates(project: Project, version: ModelVersion, environment: str) -> Report:
    from conveyor.registry.promotion import failed_checks, latest_gate_report

    report = latest_gate_report(project.store, version.model, version.number)
    if report is None:
        raise GateFailedError(
            f"{version.ref} has no gate report in {environment!r}, so it cannot leave it: "
            f"run its gates there first (conveyor --env {environment} models gates "
            f"{version.ref})",
            model=version.model,
            version=version.number,
            environment=environment,
        )
    if not report.passed:
        raise GateFailedError(
            f"{version.ref} failed its gates in {environment!r} (report {report.id}): "
            f"{failed_checks(report)}; it is not promoted",
            report=report,
            model=version.model,
            version=version.number,
            environment=environment,
            failed=[c.name for c in report.failures],
        )
    return report


def _already_promoted(project: Project, version: ModelVersion, origin: str) -> Any:
    page = project.registry.search(name=version.model, tag=f"{PROMOTED_FROM}={origin}", limit=1)
    for found in page.items:
        if found.artifact_digest != version.artifact_digest:
            raise InvalidInputError(
                f"{found.ref} records {origin} as its origin but holds another artifact "
                f"({found.artifact_digest[:12]} != {version.artifact_digest[:12]})",
                field="ref",
            )
        return found
    return None


def _formula(source: Project, version: ModelVersion) -> bytes | None:
    """The bytes of ``version``'s recorded formula, sha256 checked (a tampered one is
    refused as a tampered model is); None when it has none, or when the source's store
    lacks it (derived data: the copy then has none, and ``conveyor models compile``
    records it there)."""
    if version.compiled is None:
        return None
    digest: str = version.compiled["digest"]
    try:
        data: bytes = source.registry.artifacts.get(digest)
    except NotFoundError:
        log.warning(
            "%s: its formula %s is not in the source's artifact store; the copy has none",
            version.ref,
            digest,
        )
        return None
    return data


def _copy(
    project: Project,
    version: ModelVersion,
    payload: bytes,
    formula: bytes | None,
    origin: str,
    report: Report,
    approver: str | None,
    actor: str | None,
) -> ModelVersion:
    from conveyor.registry.batch import copy_version

    tags = {
        **version.tags,
        PROMOTED_FROM: origin,
        "conveyor.gate_report": report.id,
        **({"conveyor.approver": approver} if approver else {}),
    }
    lineage = [
        *version.inputs,
        {
            "kind": "promotion",
            "name": origin,
            "from": origin,
            "version_id": version.id,
            "gate_report": report.id,
            "approver": approver,
            # ids in the source environment's store, kept for the record
            "dataset_version_ids": version.dataset_version_ids,
            "run_id": version.run_id,
        },
    ]
    return copy_version(
        project.registry, version, payload, formula, tags=tags, inputs=lineage, actor=actor
    )


def _copy_report(project: Project, report: Report, copied: ModelVersion) -> None:
    from conveyor.checks.persist import save_report
    from conveyor.checks.result import Report as ReportType

    save_report(
        project.store,
        ReportType.of(
            report.subject,
            report.checks,
            kind=report.kind,
            subject_version=str(copied.number),
        ),
    )
