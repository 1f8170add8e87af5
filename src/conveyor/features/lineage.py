"""What a model trained on a feature service was built from, for the registry's lineage.

::

    used = service_lineage(project, "fraud")
    used.input          # {"kind": "feature_service", "name": "fraud", "version": 2,
                        #  "views": {"customer_spend": {"version": 1, "datasets": ["tx@4"],
                        #            "path": None}}, "features": [...]}
    used.datasets       # the DatasetVersion objects behind the views (tx@4)

Training on a service needs its applied definitions to be the spec's: a model must
name a version of the service that ``conveyor features show`` can display, so a
service (or one of its views) changed in ``conveyor.yaml`` since the last
``conveyor features apply`` is refused, naming what changed.

The data set versions are each source's latest when the lineage is taken, just
before the frame is built from the same latest versions; an ingest landing in
between (milliseconds) would be recorded one version behind what was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from conveyor.data.versions import DatasetVersion
    from conveyor.project import Project

__all__ = ["FeaturesNotAppliedError", "ServiceLineage", "service_lineage"]


class FeaturesNotAppliedError(ConflictError):
    """The spec's feature definitions differ from the applied ones: run ``features apply``."""

    code = "features_not_applied"


@dataclass(frozen=True, slots=True)
class ServiceLineage:
    """A feature service's applied version, its views' versions and their data sets."""

    input: dict[str, Any]
    datasets: list[DatasetVersion]

    @property
    def features(self) -> list[str]:
        """The service's feature names, in its order."""
        return list(self.input["features"])


def service_lineage(project: Project, service: str) -> ServiceLineage:
    """The lineage of ``service`` as applied; NotFoundError for an unknown service,
    FeaturesNotAppliedError when the spec's definitions are not the applied ones."""
    from conveyor.features.definitions import _digest, _view_document
    from conveyor.features.retrieval import requested_features
    from conveyor.features.settings import features_of
    from conveyor.features.sources import _datasets_named

    spec = features_of(project.spec)
    pairs = requested_features(spec, service)  # NotFoundError naming it
    definitions = project.features
    try:
        applied = definitions.definition("service", service)
    except NotFoundError:
        raise FeaturesNotAppliedError(
            f"feature service {service!r} was never applied: run `conveyor features apply`",
            service=service,
        ) from None
    views: dict[str, Any] = {}
    datasets: list[DatasetVersion] = []
    repo = project.data.versions
    for owner in dict.fromkeys(o for o, _ in pairs if o in spec.views):
        view = spec.views[owner]
        current = definitions.definition("view", owner)
        if (
            current.digest != _digest(_view_document(view))
            or applied.definition.get("views", {}).get(owner) != current.version
        ):
            raise FeaturesNotAppliedError(
                f"feature view {owner!r} changed in conveyor.yaml since it was applied: run "
                "`conveyor features apply` before training on it",
                service=service,
                view=owner,
            )
        named = (
            [view.source.dataset]
            if view.source.dataset is not None
            else _datasets_named(project, view.source.sql)
            if view.source.sql is not None
            else []
        )
        refs = []
        for name in named:
            latest = repo.latest(name)
            if latest is not None:
                datasets.append(latest)
                refs.append(latest.ref)
        views[owner] = {"version": current.version, "datasets": refs, "path": view.source.path}
    document = spec.services[service].model_dump(mode="json")
    stored = {k: v for k, v in applied.definition.items() if k not in ("resolved", "views")}
    if stored != document:
        raise FeaturesNotAppliedError(
            f"feature service {service!r} changed in conveyor.yaml since it was applied: run "
            "`conveyor features apply` before training on it",
            service=service,
        )
    return ServiceLineage(
        {
            "kind": "feature_service",
            "name": service,
            "version": applied.version,
            "views": views,
            "features": [feature for _, feature in pairs],
        },
        datasets,
    )
