"""An open project: its spec, its backends and its capabilities' services, opened on first use.

::

    import conveyor

    with conveyor.Project.open() as project:         # finds conveyor.yaml upwards
        run = project.store.runs.start("train", "fraud")
        project.events.emit("fraud.scored", subject="fraud", payload={"run": run.id})
        ref = project.artifacts.put(model_bytes)
        project.registry.get("fraud", "champion")     # a capability's service

``Project`` is the one object every capability, command and server works
through: the seams' backends (``store``, ``artifacts``, ``events``, ``cache``
and those capabilities add, by :meth:`backend`) and the services capabilities
declare (``registry``, ``data``, ``keys``..., by :meth:`service` or as
attributes). Each is built once, on first use, and kept; everything is closed
with the project, services first, then backends in reverse order of opening,
the event log last so it records to the end. Nothing is shared between two
``Project`` objects: each owns its connections.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.backends import Closeable
from conveyor.config import SPEC_FILE, STATE_DIR, ProjectSpec, load_spec, render_template
from conveyor.errors import AlreadyExistsError, ClosedError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.events.log import EventLog
    from conveyor.kv import KeyValueStore
    from conveyor.store.database import MetadataStore

__all__ = ["Project", "init_project"]

T = TypeVar("T")


class Project(Closeable):
    """The handle a program uses: the spec, each seam's backend, each capability's services."""

    def __init__(self, spec: ProjectSpec) -> None:
        self.spec = spec
        self._opened: dict[str, Any] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._services: dict[str, Any] = {}
        self._closed = False
        self._lock = threading.RLock()

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

    @property
    def closed(self) -> bool:
        return self._closed

    # -- seams -----------------------------------------------------------------------

    def backend(self, seam: str, **options: Any) -> Any:
        """The seam's backend, opened on first use with ``options``.

        Asking again with other options is an error: the backend is already
        open with the first ones, and silently ignoring the new ones would hide
        a mistake.
        """
        self._check_open()
        with self._lock:
            if seam in self._opened:
                if options and options != self._options[seam]:
                    raise InvalidInputError(
                        f"the {seam} backend of project {self.name!r} is already open with "
                        f"options {self._options[seam]!r}; it cannot be reopened with "
                        f"{options!r} (open a new Project for that)",
                        field="options",
                        seam=seam,
                    )
                return self._opened[seam]
            from conveyor.capability import seams

            known = seams()
            if seam not in known:
                raise InvalidInputError(
                    f"unknown seam {seam!r}; seams: {', '.join(known)}", field="seam"
                )
            options = {**self._defaults(seam), **options}
            self._opened[seam] = known[seam].open(self.spec.url(seam), **options)
            self._options[seam] = dict(options)
            return self._opened[seam]

    def _defaults(self, seam: str) -> dict[str, Any]:
        """Options the spec sets for a seam's backend (the event log's buffer and spill), and
        a networked cache's: it fails fast (0.1 s, no retry), being only an optimization;
        the URL's ``?socket_timeout=`` still wins."""
        if seam == "cache":
            if self.spec.url(seam).scheme in ("redis", "rediss"):
                return {"socket_timeout": 0.1, "connect_timeout": 0.1, "retries": 0}
            return {}
        if seam != "events":
            return {}
        events = self.spec.events
        spill = self.spec.path(events.spill_dir) if events.spill_dir else None
        return {
            "max_buffer": events.buffer,
            "spill_dir": spill,
            "flush_interval": events.flush_interval_s,
        }

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
    def cache(self) -> KeyValueStore:
        return self.backend("cache")  # type: ignore[no-any-return]

    # -- capabilities' services --------------------------------------------------------

    def service(self, name: str, kind: type[T] | None = None) -> T:
        """The service ``name`` a capability declares, built on first use and kept.

        ``kind``, when given, is checked (and gives the result its type).
        """
        self._check_open()
        with self._lock:
            found = self._services.get(name)
            if found is None:
                from conveyor.capability import capabilities, load

                factory = next(
                    (c.services[name] for c in capabilities() if name in c.services), None
                )
                if factory is None:
                    known = sorted(s for c in capabilities() for s in c.services)
                    raise InvalidInputError(
                        f"no capability provides a service named {name!r} "
                        f"(services: {', '.join(known) or 'none'})",
                        field="service",
                    )
                found = self._services[name] = load(factory)(self)
        if kind is not None and not isinstance(found, kind):
            raise InvalidInputError(
                f"the service {name!r} is a {type(found).__name__}, not a {kind.__name__}",
                field="service",
            )
        return found  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: a capability's service.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.service(name)
        except InvalidInputError as exc:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}: {exc}"
            ) from None

    # -- lifecycle ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"project {self.name!r} is closed")

    def close(self) -> None:
        """Close every service, then every backend (the event log last: it records to the end)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors: list[BaseException] = []
            closers = [s.close for s in reversed(self._services.values()) if hasattr(s, "close")]
            order = sorted(reversed(list(self._opened)), key=lambda s: s == "events")
            closers += [self._opened[seam].close for seam in order]
            for close in closers:
                try:
                    close()
                except Exception as exc:  # close the rest, then report the first failure
                    errors.append(exc)
            self._services.clear()
            self._opened.clear()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"Project({self.name!r}, root={str(self.root)!r}, open={sorted(self._opened)})"


def init_project(
    path: str | os.PathLike[str] = ".",
    *,
    name: str | None = None,
    force: bool = False,
    template: str = "classification",
) -> Path:
    """Create ``conveyor.yaml`` (commented) and ``.conveyor/`` in ``path``; return the spec path.

    ``template`` (``classification`` or ``regression``) picks the quality SLO's metric and the
    task of the commented ``models:`` stub. Refuses to overwrite an existing spec unless
    ``force``.
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
    text = render_template(project_name, template)
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
