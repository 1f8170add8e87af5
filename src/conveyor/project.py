"""An open project: its spec, and its backends opened on first use.

::

    import conveyor

    with conveyor.Project.open() as project:         # finds conveyor.yaml upwards
        run = project.store.runs.start("train", "fraud")
        project.events.emit("run.started", subject="fraud", payload={"run": run.id})
        ref = project.artifacts.put(model_bytes)

A backend is opened when first used and every opened backend is closed
with the project, in reverse order. Nothing is shared between two
``Project`` objects: each owns its connections.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.backends import SEAMS, Closeable
from conveyor.config import SPEC_FILE, STATE_DIR, ProjectSpec, load_spec, render_template
from conveyor.errors import AlreadyExistsError, ClosedError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.data.layer import DataLayer
    from conveyor.events.log import EventLog
    from conveyor.kv import KeyValueStore
    from conveyor.registry import Registry
    from conveyor.store.database import MetadataStore

__all__ = ["Project", "init_project"]


class Project(Closeable):
    """The handle a program uses: ``store``, ``artifacts``, ``events``, ``online``, ``cache``."""

    def __init__(self, spec: ProjectSpec) -> None:
        self.spec = spec
        self._opened: dict[str, Any] = {}
        self._closed = False
        self._data: DataLayer | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None
    ) -> Project:
        """Load the spec of the project at or above ``path`` (default: the current directory)."""
        return cls(load_spec(path, env=env))

    @property
    def name(self) -> str:
        return self.spec.project

    @property
    def root(self) -> Path:
        return self.spec.root

    def backend(self, seam: str, **options: Any) -> Any:
        """The seam's backend, opened on first use with ``options``."""
        if self._closed:
            raise ClosedError(f"project {self.name!r} is closed")
        if seam not in SEAMS:
            raise InvalidInputError(
                f"unknown seam {seam!r}; seams: {', '.join(SEAMS)}", field="seam"
            )
        if seam not in self._opened:
            self._opened[seam] = SEAMS[seam].open(self.spec.url(seam), **options)
        return self._opened[seam]

    @property
    def store(self) -> MetadataStore:
        return self.backend("store")  # type: ignore[no-any-return]

    @property
    def artifacts(self) -> ArtifactStore:
        return self.backend("artifacts")  # type: ignore[no-any-return]

    @property
    def events(self) -> EventLog:
        return self.backend("events")  # type: ignore[no-any-return]

    @property
    def online(self) -> KeyValueStore:
        return self.backend("online")  # type: ignore[no-any-return]

    @property
    def cache(self) -> KeyValueStore:
        return self.backend("cache")  # type: ignore[no-any-return]

    @property
    def data(self) -> DataLayer:
        """The data layer: ingest, versions, quarantine, forget (``conveyor data ...``)."""
        if self._data is None:
            from conveyor.data.crypto import Keyring
            from conveyor.data.layer import DataLayer

            self._data = DataLayer(
                self.spec, self.store, self.artifacts, self.events, Keyring.from_spec(self.spec)
            )
        return self._data

    @property
    def registry(self) -> Registry:
        """The model registry: versions, aliases, lineage (``conveyor models ...``)."""
        from conveyor.registry import Registry

        return Registry(self.store, self.artifacts, self.events)

    def close(self) -> None:
        """Close every opened backend (the event log last, so it records to the end)."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        order = sorted(self._opened, key=lambda s: s == "events")
        for seam in order:
            try:
                self._opened[seam].close()
            except Exception as exc:  # close the rest, then report the first failure
                errors.append(exc)
        self._opened.clear()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"Project({self.name!r}, root={str(self.root)!r}, open={sorted(self._opened)})"


def init_project(
    path: str | os.PathLike[str] = ".", *, name: str | None = None, force: bool = False
) -> Path:
    """Create ``conveyor.yaml`` (commented) and ``.conveyor/`` in ``path``; return the spec path.

    Refuses to overwrite an existing spec unless ``force``.
    """
    root = Path(path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / SPEC_FILE
    if spec_path.exists() and not force:
        raise AlreadyExistsError(
            f"{spec_path} already exists; pass force=True (`conveyor init --force`) to overwrite",
            path=str(spec_path),
        )
    project_name = name or _slug(root.name)
    text = render_template(project_name)
    state = root / STATE_DIR
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("# local state of Conveyor's embedded backends\n*\n")
    tmp = spec_path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(spec_path)
    load_spec(root, env={})  # the template must load: fail here, not at first use
    return spec_path


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-._")
    return slug or "conveyor-project"
