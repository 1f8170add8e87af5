"""The model registry: register, find, load, list and search model versions.

::

    registry = Registry(store, artifacts, events)
    v = registry.register("fraud", model, signature_from=X_train, metrics={"auc": 0.91})
    registry.set_alias("fraud", "champion", v.number, actor="ana", reason="beats v3")
    loaded = registry.load(registry.resolve("fraud@champion"))
    loaded.predict(X_new)            # signature enforced

Versions are numbered per model under optimistic concurrency (the
``registered_models`` row's version column), so two processes registering
at once get n and n+1, never the same number. A version never changes once
written; its artifact is content-addressed and its sha256 is checked on
every load. Alias moves live in :mod:`conveyor.registry.aliases`.
"""

from __future__ import annotations

import builtins
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    InvalidInputError,
    NotFoundError,
)
from conveyor.registry.aliases import AliasesMixin
from conveyor.registry.promotion import DEFAULT_GATED_ALIASES, PromotionMixin
from conveyor.registry.reads import Reads
from conveyor.registry.versions import LoadedModel, ModelVersion, version_number
from conveyor.store.paging import Page

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.events.log import EventLog
    from conveyor.project import Project
    from conveyor.registry.tables import ModelVersionRecord
    from conveyor.store.database import MetadataStore

__all__ = ["Registry"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,199}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"model name {name!r}: use 1 to 200 letters, digits, '_', '-', '.' or '/', "
            "starting with a letter or digit",
            field="name",
        )
    return name


class Registry(AliasesMixin, PromotionMixin):
    """Registered models, their immutable versions, and aliases pointing at them.

    ``gated_aliases`` (default ``{"champion"}``) only move to versions whose
    gates passed, or by a forced move with a reason.
    """

    def __init__(
        self,
        store: MetadataStore,
        artifacts: ArtifactStore | Callable[[], ArtifactStore],
        events: EventLog | None = None,
        *,
        gated_aliases: Iterable[str] = DEFAULT_GATED_ALIASES,
    ) -> None:
        self.store = store
        self.gated_aliases = frozenset(gated_aliases)
        # A callable opens the artifact store on first use: reading versions, aliases and
        # routes (conveyor rollback) never touches it.
        self._artifacts = artifacts
        self.events = events
        self._code: dict[str, tuple[str | None, bool | None]] = {}
        self._environment: dict[str, Any] | None = None
        self._reads = Reads(store)

    @property
    def artifacts(self) -> ArtifactStore:
        found = self._artifacts
        if not hasattr(found, "put"):  # the opener, not the store
            found = self._artifacts = found()
        return found  # type: ignore[return-value]

    @classmethod
    def for_project(cls, project: Project) -> Registry:
        """The registry over a project's store, artifacts and event log (``project.registry``)."""
        return cls(project.store, lambda: project.artifacts, project.events)

    # -- registering -----------------------------------------------------------

    def register(
        self,
        name: str,
        model: Any,
        *,
        signature_from: Any = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        run_id: str | None = None,
        parent: ModelVersion | str | None = None,
        dataset_versions: Sequence[Any] = (),
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        actor: str | None = None,
        inputs: Sequence[Mapping[str, Any]] = (),
    ) -> ModelVersion:
        """Store ``model`` as the next version of ``name`` and return it.

        ``signature_from`` is the training frame the input signature is
        inferred from; ``parent`` is the version this one was derived from
        (a ModelVersion, its id, or ``"name@N"``); ``dataset_versions`` are
        the training data's versions (DatasetVersion objects or ids); ``inputs``
        the rest of its lineage (``[{"kind": "feature_service", "name": ...}]``).
        """
        from conveyor.registry.batch import RegisterItem, prepare_item, store_prepared

        item = RegisterItem(
            name,
            model,
            signature_from=signature_from,
            params=params,
            metrics=metrics,
            run_id=run_id,
            parent=parent,
            dataset_versions=dataset_versions,
            tags=tags,
            description=description,
            actor=actor,
            inputs=inputs,
        )
        return store_prepared(self, [prepare_item(self, item)])[0]

    def _parent_id(self, parent: ModelVersion | str | None) -> str | None:
        if parent is None:
            return None
        if isinstance(parent, ModelVersion):
            return parent.id
        return self.resolve(parent).id

    def _git(self) -> tuple[str | None, bool | None]:
        """The commit and dirty flag of the repository around the working directory.

        Read once per working directory and registry: asking git on every
        registration would cost more than the registration itself.
        """
        cwd = os.getcwd()
        if cwd not in self._code:
            self._code[cwd] = _read_git(cwd)
        return self._code[cwd]

    def _env(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "machine": platform.machine(),
                "executable": sys.executable,
            }
        return dict(self._environment)

    # -- finding ----------------------------------------------------------------

    def get(self, name: str, number_or_alias: int | str = "latest") -> ModelVersion:
        """Version ``number`` of ``name``, the holder of an alias, or the latest."""
        from conveyor.registry import reads

        key = number_or_alias
        number = version_number(key)
        if number is not None:
            row = self._reads.first(reads.by_number(), {"name": name, "number": number})
            what = f"{name}@{key}"
        elif key == "latest":
            row = self._reads.first(reads.latest(), {"name": name})
            what = f"any version of model {name!r}"
        elif isinstance(key, int) or key.isdigit():  # a number no registry holds
            row, what = None, f"{name}@{key}"
        elif isinstance(key, str):
            row = self._reads.first(reads.by_alias(), {"name": name, "alias": key})
            what = f"alias {key!r} of model {name!r}"
        else:
            raise InvalidInputError(
                f"expected a version number or an alias, got {key!r}", field="version"
            )
        if row is None:
            raise self._missing(name, key, what)
        return reads.version_from_row(row)

    def _missing(self, name: str, key: int | str, what: str) -> NotFoundError:
        """NotFound for ``what``: a model with no version at all says so, with the closest
        registered name; every message points at ``conveyor models list``."""
        import difflib

        names = [m["name"] for m in self.models()]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"model {name!r} has no version{hint} (conveyor models list)"
            if key != "latest":
                message = f"there is no {what}: {message}"
        elif key == "latest":
            message = f"model {name!r} has no version (conveyor models list)"
        else:
            message = f"there is no {what} (conveyor models list {name})"
        return NotFoundError(message, model=name, version=str(key))

    def by_id(self, version_id: str) -> ModelVersion:
        from conveyor.registry import reads

        row = self._reads.first(reads.by_id(), {"id": version_id})
        if row is None:
            raise NotFoundError(f"no model version with id {version_id!r}", id=version_id)
        return reads.version_from_row(row)

    def resolve(self, ref: str | ModelVersion) -> ModelVersion:
        """``name@3``, ``name@champion``, ``name`` / ``name@latest``, or a version id."""
        if isinstance(ref, ModelVersion):
            return ref
        if not isinstance(ref, str) or not ref:
            raise InvalidInputError(f"expected a model reference, got {ref!r}", field="ref")
        name, at, key = ref.partition("@")
        if at and not key:
            raise InvalidInputError(
                f"{ref!r} names no version after '@': write {name}@N, {name}@ALIAS or {name}",
                field="ref",
            )
        if not key and _ID.match(name):
            try:
                return self.by_id(name)
            except NotFoundError:
                pass
        return self.get(name, key or "latest")

    def load(self, version: ModelVersion | str) -> LoadedModel:
        """The model of ``version``, verified against its sha256, ready to predict.

        Raises ArtifactIntegrityError when the stored bytes were altered, and
        warns (LibraryVersionWarning) for each library whose installed
        version differs from the one the model was saved with.
        """
        from conveyor.registry.flavors import Conformed, Flavor, check_libraries, get_flavor
        from conveyor.registry.signature import Signature

        found = self.resolve(version)
        flavor: Flavor = get_flavor(found.flavor)
        data = self.artifacts.get(found.artifact_digest)
        mismatches = check_libraries(found.libraries, f"model {found.ref}")
        model = flavor.load(data)
        signature = Signature.from_dict(found.signature) if found.signature else None
        if signature is not None and signature.outputs:
            # Predictions come out as recorded at registration (an optimized copy as its
            # parent): same dtype, same per-row shape.
            flavor = Conformed(flavor, signature.outputs)
        return LoadedModel(found, model, flavor, signature, tuple(mismatches))

    def record_formula(
        self, version: ModelVersion | str, *, actor: str | None = None
    ) -> ModelVersion:
        """Record the formula of a version registered without one (before formulas were
        recorded at registration), as registration would have: read off its model
        (loaded, its sha256 checked), checked against the model's predictions, stored as
        an artifact. A version that has one is returned as it is. InvalidInputError
        (field ``version``) when the model has no formula to record; an audit event
        ``model.compiled`` otherwise. Only derived data changes: the model, its
        signature and its number do not.
        """
        import sqlalchemy as sa

        from conveyor.registry.events import MODEL_COMPILED
        from conveyor.registry.flavors import get_flavor
        from conveyor.registry.formula import compile_model, store
        from conveyor.registry.tables import ModelVersionRecord as V

        found = self.resolve(version)
        if found.compiled is not None:
            return found
        data = compile_model(get_flavor(found.flavor), self.load(found).model, found.signature)
        if data is None:
            raise InvalidInputError(
                f"{found.ref} has no formula to record: only a scikit-learn linear model "
                "(alone or after StandardScalers) registered with a signature of numeric "
                "columns has one, and it must answer as the model does; it is served by its "
                "own predict",
                field="version",
                model=found.model,
                version=found.number,
            )
        compiled = store(self.artifacts, data)
        # Unconditional: two concurrent calls record the same bytes (the same digest).
        with self.store.session() as session:
            session.execute(sa.update(V).where(V.id == found.id).values(compiled=compiled))
        if self.events is not None:
            self.events.record(
                MODEL_COMPILED,
                subject=found.model,
                subject_version=str(found.number),
                actor=actor,
                payload={
                    "version_id": found.id,
                    "digest": compiled["digest"],
                    "size": compiled["size"],
                },
            )
        return self.by_id(found.id)

    # -- listing ----------------------------------------------------------------

    def list(
        self, name: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page[ModelVersion]:
        """Versions (of ``name``), newest first, a keyset page at a time."""
        return self.search(name=name, limit=limit, cursor=cursor)

    def search(
        self,
        name_contains: str | None = None,
        tag: str | None = None,
        *,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions whose model name contains ``name_contains`` (any case) and with ``tag``.

        ``tag`` is ``key`` (the tag is set) or ``key=value``. Newest first.
        """

        from conveyor.registry.reads import select_versions, version_from_row
        from conveyor.registry.tables import ModelVersionRecord as V
        from conveyor.store.database import keyset, page_of

        stmt = select_versions()
        if name is not None:
            stmt = stmt.where(V.model == name)
        if name_contains:
            stmt = stmt.where(V.model.icontains(name_contains, autoescape=True))
        if tag:
            key, has_value, value = tag.partition("=")
            if not key:
                raise InvalidInputError(
                    f"tag filter {tag!r}: expected key or key=value", field="tag"
                )
            text = V.tags[key].as_string()
            stmt = stmt.where(text == value if has_value else text.is_not(None))
        stmt = keyset(
            stmt, V.created_at, V.id, limit=limit, cursor=cursor, listing="model versions"
        )
        versions = [version_from_row(r) for r in self._reads.all(stmt)]
        return page_of(versions, limit, lambda v: (v.created_at, v.id))

    def models(self) -> builtins.list[dict[str, Any]]:
        """Every registered model: name, description, latest version number, times."""
        import sqlalchemy as sa

        from conveyor.registry.tables import RegisteredModelRecord as M

        with self.store.read() as session:
            return [
                {
                    "name": m.name,
                    "description": m.description,
                    "latest_version": m.latest_version,
                    "created_at": m.created_at.isoformat(),
                    "updated_at": m.updated_at.isoformat(),
                }
                for m in session.scalars(sa.select(M).order_by(M.name))
            ]

    def _version_row(self, session: Session, name: str, version: Any) -> ModelVersionRecord:
        """The row of ``version`` (number, ref, id or ModelVersion) of model ``name``."""
        import sqlalchemy as sa

        from conveyor.registry.tables import ModelVersionRecord as V

        number = version_number(version)
        if isinstance(version, ModelVersion):
            row = session.get(V, version.id)
        elif number is not None:
            row = session.scalars(sa.select(V).where(V.model == name, V.number == number)).first()
        elif isinstance(version, str) and _ID.match(version):
            row = session.get(V, version)
        elif isinstance(version, str) and "@" in version:
            row = session.get(V, self.resolve(version).id)
        else:
            raise InvalidInputError(
                f"expected a version number, 'name@N' or a version id, got {version!r}",
                field="version",
            )
        if row is None:
            raise NotFoundError(f"model {name!r} has no version {version!r}", model=name)
        if row.model != name:
            raise InvalidInputError(
                f"version {row.model}@{row.number} belongs to model {row.model!r}, not {name!r}",
                field="version",
            )
        return row


def _dataset_id(version: Any) -> str:
    found = getattr(version, "id", version)
    if not isinstance(found, str) or not found:
        raise InvalidInputError(
            f"dataset_versions takes DatasetVersion objects or ids, got {version!r}",
            field="dataset_versions",
        )
    return found


def _read_git(cwd: str) -> tuple[str | None, bool | None]:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):  # no git installed, or a stuck one
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty
