"""Applied feature definitions, versioned: ``project.features`` (``conveyor features apply``).

``apply`` checks the spec's definitions against their sources (every column a view
reads exists, with the declared type; the TTL and windows are positive) and stores a
new version of each definition whose canonical JSON changed. Earlier versions stay
readable: ``definition("view", "customer_spend", version=1)``. A service's definition
holds the versions of the views it reads, so changing a view versions its services.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import NotFoundError
from conveyor.features.sources import FeatureDefinitionError, view_table

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

    from conveyor.data.versions import DatasetVersion
    from conveyor.features.push import Pushed
    from conveyor.features.settings import FeaturesSpec, ViewSpec
    from conveyor.project import Project

__all__ = ["KINDS", "Applied", "Definition", "FeatureDefinitions", "TrainingJoin"]

Kind = Literal["entity", "view", "on_demand", "service"]
KINDS: tuple[Kind, ...] = ("entity", "view", "on_demand", "service")
#: Source rows a definition is checked against (its transform runs on them).
SAMPLE_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Definition:
    """One applied version of a definition."""

    kind: str
    name: str
    version: int
    digest: str
    definition: dict[str, Any]
    actor: str | None
    applied_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "definition": self.definition,
            "actor": self.actor,
            "applied_at": self.applied_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TrainingJoin:
    """A training frame joined from a feature service, with its lineage for the registry."""

    table: pa.Table
    #: ``{"kind": "feature_service", "name", "version", "views", "features"}``
    input: dict[str, Any]
    #: The data set versions the service's views read.
    datasets: list[DatasetVersion]


@dataclass(frozen=True, slots=True)
class Applied:
    """What one ``apply`` did to one definition: created, changed or unchanged."""

    kind: str
    name: str
    version: int
    status: Literal["created", "changed", "unchanged"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "status": self.status,
        }


class FeatureDefinitions:
    """The applied definitions of a project (its service ``project.features``)."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def for_project(cls, project: Project) -> FeatureDefinitions:
        return cls(project)

    @property
    def spec(self) -> FeaturesSpec:
        from conveyor.features.settings import features_of

        return features_of(self.project.spec)

    # -- apply --------------------------------------------------------------------------

    def check(self, *, actor: str = "features") -> None:
        """Every view's columns and types against a sample of its source (the transform
        applied); FeatureDefinitionError naming the view and the column otherwise."""
        spec = self.spec
        for name, view in spec.views.items():
            self._check_view(spec, name, view, actor)

    def _check_view(self, spec: FeaturesSpec, name: str, view: ViewSpec, actor: str) -> None:
        import pyarrow as pa

        from conveyor.data.validation.outcomes import arrow_type_name

        table = view_table(self.project, name, view, sample=SAMPLE_ROWS, actor=actor)
        columns = {f.name: f.type for f in table.schema}

        def need(column: str, what: str) -> pa.DataType:
            if column not in columns:
                raise FeatureDefinitionError(
                    f"views.{name}: {what} {column!r} is not a column of its source; it has "
                    f"{', '.join(columns)}",
                    view=name,
                    column=column,
                )
            return columns[column]

        for entity in view.entities:
            keys = spec.entities[entity]
            for key in keys.join_keys:
                found = need(key, f"entity {entity!r}'s join key")
                wanted = keys.value_types.get(key)
                if wanted and arrow_type_name(wanted) != str(found):
                    raise FeatureDefinitionError(
                        f"views.{name}: join key {key!r} is {found} in the source; entity "
                        f"{entity!r} declares {wanted}",
                        view=name,
                        column=key,
                    )
        for column, what in ((view.event_time, "event_time"), (view.created_time, "created_time")):
            if column is None:
                continue
            found = need(column, what)
            if not (pa.types.is_timestamp(found) or pa.types.is_date(found)):
                raise FeatureDefinitionError(
                    f"views.{name}: {what} {column!r} is {found}, not a timestamp",
                    view=name,
                    column=column,
                )
        for feature in view.features:
            found = need(feature.name, "feature")
            if arrow_type_name(feature.type) != str(found):
                raise FeatureDefinitionError(
                    f"views.{name}: feature {feature.name!r} is {found} in the source; the "
                    f"definition says {feature.type}",
                    view=name,
                    column=feature.name,
                )
        for aggregate in view.aggregates:
            found = need(aggregate.column, "aggregated column")
            if not (pa.types.is_integer(found) or pa.types.is_floating(found)):
                raise FeatureDefinitionError(
                    f"views.{name}: aggregated column {aggregate.column!r} is {found}, "
                    "not a number",
                    view=name,
                    column=aggregate.column,
                )

    def apply(self, *, actor: str | None) -> list[Applied]:
        """Check the definitions, then store a new version of each one that changed."""
        from conveyor.features.tables import FeatureDefinitionRecord as R

        self.check(actor=actor or "features")
        spec = self.spec
        documents: list[tuple[Kind, str, dict[str, Any]]] = []
        documents += [("entity", n, e.model_dump(mode="json")) for n, e in spec.entities.items()]
        documents += [("view", n, _view_document(v)) for n, v in spec.views.items()]
        documents += [
            ("on_demand", n, d.model_dump(mode="json")) for n, d in spec.on_demand.items()
        ]
        done: list[Applied] = []
        view_versions: dict[str, int] = {}
        with self.project.store.session() as session:
            latest = {(d.kind, d.name): d for d in self._latest(session)}

            def put(kind: Kind, name: str, document: dict[str, Any]) -> Applied:
                digest = _digest(document)
                current = latest.get((kind, name))
                if current is not None and current.digest == digest:
                    return Applied(kind, name, current.version, "unchanged")
                version = 1 if current is None else current.version + 1
                session.add(
                    R(
                        id=uuid.uuid4().hex,
                        kind=kind,
                        name=name,
                        version=version,
                        digest=digest,
                        definition=json.dumps(document, sort_keys=True),
                        actor=actor,
                    )
                )
                return Applied(kind, name, version, "created" if current is None else "changed")

            for kind, name, document in documents:
                applied = put(kind, name, document)
                done.append(applied)
                if kind == "view":
                    view_versions[name] = applied.version
            for name, service in spec.services.items():
                refs = [pair for ref in service.features for pair in spec.resolve(ref)]
                document = {
                    **service.model_dump(mode="json"),
                    "resolved": [f"{owner}:{feature}" for owner, feature in refs],
                    "views": {
                        owner: view_versions[owner] for owner, _ in refs if owner in view_versions
                    },
                }
                done.append(put("service", name, document))
        if any(a.status != "unchanged" for a in done):
            from conveyor.features.events import FEATURES_APPLIED

            self.project.events.record(
                FEATURES_APPLIED,
                subject=self.project.name,
                actor=actor,
                payload={
                    "created": [
                        f"{a.kind}:{a.name}@{a.version}" for a in done if a.status == "created"
                    ],
                    "changed": [
                        f"{a.kind}:{a.name}@{a.version}" for a in done if a.status == "changed"
                    ],
                    "unchanged": sum(a.status == "unchanged" for a in done),
                },
            )
        return done

    # -- retrieval ----------------------------------------------------------------------

    def training_frame(
        self,
        entity: Any,
        service_or_features: str | Sequence[str],
        *,
        entity_time: str = "event_timestamp",
        as_known_at: bool = True,
        actor: str = "features",
    ) -> pa.Table:
        """The entity frame with the features of a service (or of ``view:feature``
        references), point-in-time correct: see :mod:`conveyor.features.retrieval`."""
        from conveyor.features.retrieval import training_frame

        return training_frame(
            self.project,
            entity,
            service_or_features,
            entity_time=entity_time,
            as_known_at=as_known_at,
            actor=actor,
        )

    # -- push ---------------------------------------------------------------------------

    def push(self, view: str, rows: Any, *, actor: str | None = None) -> Pushed:
        """Write fresh rows of ``view`` online and to its offline log, all checked first:
        see :mod:`conveyor.features.push`."""
        from conveyor.features.push import push

        return push(self.project, view, rows, actor=actor)

    def training_join(
        self,
        entity: pa.Table,
        service: str,
        *,
        entity_time: str = "event_timestamp",
        actor: str = "training",
    ) -> TrainingJoin:
        """What the training flow trains on (``models.NAME.feature_service``): ``entity``
        with ``service``'s features as of ``entity_time``, and the lineage the registry
        records (see :mod:`conveyor.features.lineage`). FeaturesNotAppliedError when the
        spec's definitions are not the applied ones; InvalidInputError naming a missing
        ``entity_time`` column."""
        from conveyor.errors import InvalidInputError
        from conveyor.features.lineage import service_lineage

        lineage = service_lineage(self.project, service)
        if entity_time not in entity.column_names:
            raise InvalidInputError(
                f"entity_time {entity_time!r} is not a column of the entity/label rows "
                f"(columns: {', '.join(entity.column_names)}): name the time each row's "
                "features are read as of",
                field="entity_time",
            )
        table = self.training_frame(entity, service, entity_time=entity_time, actor=actor)
        return TrainingJoin(table, lineage.input, lineage.datasets)

    # -- reading ------------------------------------------------------------------------

    def definitions(self, kind: str | None = None) -> list[Definition]:
        """The latest version of every applied definition (of ``kind``)."""
        with self.project.store.read() as session:
            found = self._latest(session)
        return [d for d in found if kind is None or d.kind == kind]

    def definition(self, kind: str, name: str, version: int | None = None) -> Definition:
        """Version ``version`` (default: the latest) of ``kind``/``name``."""
        import sqlalchemy as sa

        from conveyor.features.tables import FeatureDefinitionRecord as R

        if kind not in KINDS:
            raise NotFoundError(f"no kind of definition {kind!r}; one of {', '.join(KINDS)}")
        stmt = sa.select(R).where(R.kind == kind, R.name == name)
        stmt = (
            stmt.where(R.version == version)
            if version is not None
            else stmt.order_by(R.version.desc()).limit(1)
        )
        with self.project.store.read() as session:
            row = session.scalars(stmt).first()
            if row is None:
                what = f"{kind} {name!r}" + (f" version {version}" if version else "")
                raise NotFoundError(
                    f"no applied {what} (conveyor features list; conveyor features apply)",
                    kind=kind,
                    name=name,
                )
            return _definition(row)

    def history(self, kind: str, name: str) -> list[Definition]:
        """Every version of ``kind``/``name``, newest first."""
        import sqlalchemy as sa

        from conveyor.features.tables import FeatureDefinitionRecord as R

        stmt = sa.select(R).where(R.kind == kind, R.name == name).order_by(R.version.desc())
        with self.project.store.read() as session:
            return [_definition(r) for r in session.scalars(stmt)]

    @staticmethod
    def _latest(session: Any) -> list[Definition]:
        import sqlalchemy as sa

        from conveyor.features.tables import FeatureDefinitionRecord as R

        newest = (
            sa.select(R.kind, R.name, sa.func.max(R.version).label("version"))
            .group_by(R.kind, R.name)
            .subquery()
        )
        stmt = (
            sa.select(R)
            .join(
                newest,
                sa.and_(
                    R.kind == newest.c.kind,
                    R.name == newest.c.name,
                    R.version == newest.c.version,
                ),
            )
            .order_by(R.kind, R.name)
        )
        return [_definition(r) for r in session.scalars(stmt)]


def _view_document(view: ViewSpec) -> dict[str, Any]:
    document = view.model_dump(mode="json")
    document["feature_names"] = view.feature_names()
    return document


def _digest(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _definition(row: Any) -> Definition:
    return Definition(
        row.kind,
        row.name,
        row.version,
        row.digest,
        json.loads(row.definition),
        row.actor,
        row.applied_at,
    )
