"""``conveyor build``: the build context of the project's container image.

::

    conveyor build                     # Dockerfile, requirements.lock, .dockerignore
    conveyor build --bake --compose    # the routed models inside; docker-compose.yaml

What is written (into the project folder, or ``--output DIR`` with the project's files
copied beside):

- ``Dockerfile``: a builder stage (build tools and pip) that installs ``requirements.lock``
  into the virtualenv ``/opt/venv``, hash-checked, and a final stage from the same base with
  only that virtualenv, the spec and the project's code, run as uid 10001, compatible with a
  read-only root filesystem (the writable places are the volumes ``/app/.conveyor``, where
  the project keeps its state, spill and caches, and ``/tmp``), an OCI ``HEALTHCHECK`` on
  ``/v2/health/live``, OCI labels (version, git revision, source, creation time), and
  ``conveyor serve --host 0.0.0.0`` as its command;
- ``requirements.lock``: the dependency closure of ``conveyor[EXTRAS]`` for only the extras
  the spec uses (:func:`extras_for`), each pinned ``==`` to the version installed where the
  command runs (so the image runs what was tested here), with the sha256 of every file of
  that release on the package indexes pip is configured with (``--require-hashes``: a file
  that differs from what the index published is refused), and Conveyor itself as a wheel in
  the context (``docker/wheels/``) when it is installed from source;
- ``.dockerignore``: an allow-list, so nothing but what the Dockerfile copies (no ``.git``,
  ``.conveyor/``, data or secrets) is sent to the builder;
- with ``bake``: the artifacts of the versions on the live routes under ``docker/models/``
  (the artifact store's content-addressed layout) with ``manifest.json`` of their sha256,
  verified when copied, again before the build is declared done, and at the container's
  start (``docker/entrypoint.sh``); the image's artifact store is that folder.

Without ``bake`` no model is in the image: the server reads each routed version's artifact
from the artifact store by its digest and the store checks the bytes against that sha256
on every read (:meth:`conveyor.registry.Registry.load`), so an altered artifact is refused
and readiness stays 503; the image needs no step of its own for it.

Every text file written starts with a stamp holding the checksum of what follows: a file
conveyor build wrote and nobody edited is rewritten freely; one that was edited, or that
it did not write (a hand-made Dockerfile), is replaced only with ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.deploy.files import write_whole
from conveyor.deploy.settings import section_or_none
from conveyor.errors import (
    AlreadyExistsError,
    ArtifactIntegrityError,
    ConfigError,
    ConveyorError,
    InvalidInputError,
)

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec
    from conveyor.project import Project
    from conveyor.registry.versions import ModelVersion

__all__ = [
    "APP_DIR",
    "BAKED_DIR",
    "IMAGE_GID",
    "IMAGE_UID",
    "LOCK_FILE",
    "BuildResult",
    "Lock",
    "Pin",
    "build_context",
    "extras_for",
    "lock_for",
    "main",
    "render_dockerfile",
    "verify_baked",
]

#: The user (and group) the server runs as: fixed, so volumes and the chart's
#: ``runAsUser`` agree with the image.
IMAGE_UID = 10001
IMAGE_GID = 10001
#: The project inside the image (``CONVEYOR_PROJECT_DIR``); its state folder is a volume.
APP_DIR = "/app"
STATE_VOLUME = f"{APP_DIR}/.conveyor"
VENV_DIR = "/opt/venv"
#: Where ``--bake`` puts the routed versions' artifacts in the image (the artifact store).
BAKED_DIR = "/opt/conveyor/models"
ENTRYPOINT_IN_IMAGE = "/opt/conveyor/entrypoint.sh"
LOCK_FILE = "requirements.lock"
#: serving.port: the server listens there and the HEALTHCHECK asks there (run with
#: ``-e CONVEYOR_SERVING__PORT=N`` to move both).
PORT_ENV = "CONVEYOR_SERVING__PORT"
#: The folder of the context holding what conveyor build adds (wheels, models, scripts).
SUPPORT_DIR = "docker"
WHEELS_DIR = f"{SUPPORT_DIR}/wheels"
MODELS_DIR = f"{SUPPORT_DIR}/models"
ENTRYPOINT_FILE = f"{SUPPORT_DIR}/entrypoint.sh"
MANIFEST = "manifest.json"
COMPOSE_FILE = "docker-compose.yaml"
PROMETHEUS_FILE = f"{SUPPORT_DIR}/prometheus.yml"
#: Installed in the builder stage only (for a locked package that has no wheel).
BUILD_PACKAGES = "build-essential"
#: The image runs ``conveyor serve``: the server's extra is always in.
SERVER_EXTRA = "serve"
#: Extras a routed version's flavor needs to be loaded.
FLAVOR_EXTRAS = {"onnx": "onnx", "pytorch": "torch"}
DEFAULT_INDEX = "https://pypi.org/simple"

_STAMP = re.compile(r"^# Generated by `conveyor build` \(sha256:([0-9a-f]{16})\)")
_MODULE_REF = re.compile(r"^([A-Za-z_]\w*)(?:\.\w+)*:[A-Za-z_]\w*(?:\.\w+)*$")


# -- the extras the spec uses ------------------------------------------------------------------


def extras_for(
    spec: ProjectSpec, versions: Iterable[ModelVersion] = ()
) -> tuple[dict[str, str], list[str]]:
    """The Conveyor extras the image installs, each with why; and notes.

    ``deploy.image.extras`` when set (plus ``serve``: the image runs the server), else
    what the spec uses: each backend URL's driver (``postgresql://`` -> postgres,
    ``redis://`` -> redis, ``nats://`` -> nats, ``s3://`` -> s3), ``rag.collections`` ->
    rag, ``gateway.providers`` -> gateway (a ``local`` provider -> local-llm too),
    ``mcp.servers`` -> mcp, and the flavors of ``versions`` (the routed ones, when read):
    onnx -> onnx, pytorch -> torch.
    """
    from conveyor.deploy.settings import deploy_of

    used = _used_extras(spec, versions)
    chosen = deploy_of(spec).image.extras
    notes: list[str] = []
    if chosen is None:
        extras = used
    else:
        extras = {SERVER_EXTRA: "the image runs conveyor serve"}
        extras.update({name: "deploy.image.extras" for name in chosen})
        for name, why in used.items():
            if name not in extras:
                notes.append(
                    f"the spec uses the {name} extra ({why}) but deploy.image.extras leaves "
                    "it out: the server will miss its driver"
                )
    known = _known_extras()
    unknown = sorted(set(extras) - known)
    if unknown:
        raise ConfigError(
            f"deploy.image.extras: unknown extra {', '.join(map(repr, unknown))}; Conveyor's "
            f"extras: {', '.join(sorted(known))}",
            field="deploy.image.extras",
        )
    return dict(sorted(extras.items())), notes


def _used_extras(spec: ProjectSpec, versions: Iterable[ModelVersion]) -> dict[str, str]:
    from conveyor.capability import seams

    found: dict[str, str] = {SERVER_EXTRA: "the image runs conveyor serve"}
    for name, seam in seams().items():
        url = spec.url(name)
        extra = seam.spec(url).extra
        if extra:
            found.setdefault(extra, f"backends.{name}: {url.scheme}://")
    serving = section_or_none(spec, "serving")
    listen = getattr(serving, "listen_url", None)
    if listen is not None:
        found.setdefault("postgres", "serving.listen_url: postgresql://")
    rag = section_or_none(spec, "rag")
    if rag is not None and rag.collections:
        found.setdefault("rag", f"rag.collections: {', '.join(rag.collections)}")
    gateway = section_or_none(spec, "gateway")
    if gateway is not None and gateway.providers:
        found.setdefault("gateway", f"gateway.providers: {', '.join(gateway.providers)}")
        local = [name for name, p in gateway.providers.items() if p.kind == "local"]
        if local:
            found.setdefault("local-llm", f"gateway.providers.{local[0]}: kind local")
    mcp = section_or_none(spec, "mcp")
    if mcp is not None and mcp.servers:
        found.setdefault("mcp", f"mcp.servers: {', '.join(mcp.servers)}")
    for version in versions:
        extra = FLAVOR_EXTRAS.get(version.flavor)
        if extra:
            found.setdefault(extra, f"{version.ref} is a {version.flavor} model")
    return found


def _known_extras() -> set[str]:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    provided = metadata.metadata("conveyor").get_all("Provides-Extra") or []
    return {canonicalize_name(e) for e in provided}


# -- the lock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One locked distribution: ``name==version``, who needs it, the sha256 of its files."""

    name: str
    version: str
    via: tuple[str, ...]
    hashes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        from packaging.utils import canonicalize_name

        return str(canonicalize_name(self.name))


@dataclass
class Lock:
    """The locked requirements of the image: the closure of ``conveyor[extras]``."""

    extras: list[str]
    python: str
    pins: list[Pin]
    #: The Conveyor wheel in the context (relative path), or None: pinned like the rest.
    conveyor_wheel: str | None = None
    conveyor_wheel_sha256: str | None = None
    conveyor_version: str = ""
    hashed: bool = False
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"# conveyor[{','.join(self.extras)}] for Python {self.python} "
            f"(linux {platform.machine() or 'x86_64'}): every distribution pinned to the "
            "version installed where `conveyor build` ran.",
        ]
        if self.hashed:
            lines.append(
                "# Hashes: every file of each release on "
                + ", ".join(self.sources)
                + " (pip --require-hashes refuses any other bytes)."
            )
        else:
            lines.append("# No hashes: " + "; ".join(self.notes or ["none found"]))
        lines.append(f"# Install: pip install --no-deps {_pip_hash_flag(self)}-r {LOCK_FILE}")
        for pin in self.pins:
            lines.append(f"{pin.name}=={pin.version}" + (" \\" if self.hashed else ""))
            if self.hashed:
                hashes = [f"    --hash=sha256:{h}" for h in pin.hashes]
                lines.extend(h + " \\" for h in hashes[:-1])
                lines.append(hashes[-1])
            lines.append(f"    # via {', '.join(pin.via)}")
        if self.conveyor_wheel is not None:
            line = f"./{self.conveyor_wheel}"
            if self.hashed:
                line += f" \\\n    --hash=sha256:{self.conveyor_wheel_sha256}"
            lines.append(line)
            lines.append(f"    # Conveyor {self.conveyor_version}, built from its source")
        return "\n".join(lines) + "\n"


def _pip_hash_flag(lock: Lock) -> str:
    return "--require-hashes " if lock.hashed else ""


def lock_for(
    extras: Sequence[str],
    *,
    python: str,
    also: Mapping[str, str] | None = None,
    hashes: bool = True,
) -> Lock:
    """The closure of ``conveyor[extras]`` (and of the distributions in ``also``, name ->
    who needs it) pinned from this environment, with hashes from pip's package indexes.

    Requirements are walked through the installed distributions' metadata
    (``importlib.metadata``), their markers evaluated for the image (Linux, CPython
    ``python``); one that is needed but not installed here, or installed at a version its
    dependent refuses, is a ConfigError: the lock pins only what was tested.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = _marker_environment(python)
    wanted = f"conveyor[{','.join(extras)}]" if extras else "conveyor"
    queue: list[tuple[Requirement, str]] = [(Requirement(wanted), "the image")]
    for name, why in (also or {}).items():
        queue.append((Requirement(name), why))
    seen: dict[str, tuple[str, str, set[str], list[str]]] = {}  # key -> name, version, extras
    while queue:
        requirement, parent = queue.pop(0)
        key = str(canonicalize_name(requirement.name))
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"{requirement.name} (needed by {parent}) is not installed where conveyor "
                f"build runs, so its version cannot be pinned: install it here "
                f"(pip install '{wanted}') and build again",
                package=requirement.name,
            ) from None
        version = dist.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise ConfigError(
                f"{parent} needs {requirement}, but {requirement.name} {version} is installed "
                "here: the lock pins only versions that work together",
                package=requirement.name,
            )
        entry = seen.get(key)
        first = entry is None
        if entry is None:
            entry = (dist.metadata["Name"] or requirement.name, version, set(), [])
            seen[key] = entry
        if parent not in entry[3]:
            entry[3].append(parent)
        new_extras = {str(canonicalize_name(e)) for e in requirement.extras} - entry[2]
        if not first and not new_extras:
            continue
        entry[2].update(new_extras)
        scopes = ({""} if first else set()) | new_extras
        label = entry[0] if key != "conveyor" else "conveyor"
        for line in dist.requires or []:
            dependency = Requirement(line)
            marker = dependency.marker
            if marker is None:
                if first:
                    queue.append((dependency, label))
                continue
            if any(marker.evaluate({**environment, "extra": scope}) for scope in scopes):
                queue.append((dependency, label))
    pins = [
        Pin(name, version, tuple(sorted(via)))
        for key, (name, version, _extras, via) in sorted(seen.items())
        if key != "conveyor"
    ]
    lock = Lock(list(extras), python, pins, conveyor_version=seen["conveyor"][1])
    if hashes:
        _add_hashes(lock)
    else:
        lock.notes.append("--no-hashes: versions only")
    return lock


def _marker_environment(python: str) -> dict[str, str]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    full = platform.python_version() if python == here else f"{python}.0"
    return {
        "python_version": python,
        "python_full_version": full,
        "implementation_name": "cpython",
        "implementation_version": full,
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": platform.machine() or "x86_64",
        "platform_release": "",
        "platform_version": "",
    }


# -- hashes from the package indexes ----------------------------------------------------------


def pip_sources() -> tuple[list[str], list[str]]:
    """The package indexes and find-links locations pip is configured with (its config files
    and ``PIP_*`` variables, as ``pip config list`` shows them), default index first."""
    indexes: list[str] = []
    extra: list[str] = []
    links: list[str] = []
    no_index = False
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    settings: list[tuple[str, str]] = []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        settings.append((key.rsplit(".", 1)[-1], value.strip().strip("'\"")))
    if not listed:  # no pip here: its variables still say where packages come from
        names = {"PIP_INDEX_URL": "index-url", "PIP_EXTRA_INDEX_URL": "extra-index-url"}
        names |= {"PIP_FIND_LINKS": "find-links", "PIP_NO_INDEX": "no-index"}
        settings = [(names[k], v) for k, v in os.environ.items() if k in names]
    for key, value in settings:
        if key == "index-url":
            indexes[:] = [value]  # the most specific setting is listed last
        elif key == "extra-index-url":
            extra.extend(value.split())
        elif key == "find-links":
            links.extend(value.split())
        elif key == "no-index":
            no_index = value.lower() in ("1", "true", "yes", "on")
    if no_index:
        return [], _unique(links)
    return _unique((indexes or [DEFAULT_INDEX]) + extra), _unique(links)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i.rstrip("/") if "://" in i else i for i in items if i))


def _add_hashes(lock: Lock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    indexes, links = pip_sources()
    sources = [*indexes, *links]
    lock.sources = sources
    if not sources:
        lock.notes.append("pip is configured with no index and no find-links")
        return
    wanted = {pin.key: pin for pin in lock.pins}
    found: dict[str, set[str]] = {key: set() for key in wanted}
    failed: list[str] = []

    def one(source: str, pin: Pin) -> tuple[str, set[str] | None]:
        files = _release_files(source, pin.key, is_index=source in indexes)
        if files is None:
            return source, None
        return source, {sha for name, sha in files if _same_release(name, pin)}

    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [(pin, pool.submit(one, source, pin)) for source in sources for pin in lock.pins]
        for pin, job in jobs:
            source, hashes = job.result()
            if hashes is None:
                if source not in failed:
                    failed.append(source)
                continue
            found[pin.key] |= hashes
    missing = [wanted[key].name for key, hashes in found.items() if not hashes]
    for source in failed:
        lock.notes.append(f"{source} could not be read")
    if missing:
        lock.notes.append(
            f"no published file found for {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + " on "
            + ", ".join(sources)
            + " (pip needs a hash for every requirement or for none)"
        )
        return
    lock.pins = [
        Pin(pin.name, pin.version, pin.via, tuple(sorted(found[pin.key]))) for pin in lock.pins
    ]
    lock.hashed = True


def _same_release(filename: str, pin: Pin) -> bool:
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        canonicalize_name,
        parse_sdist_filename,
        parse_wheel_filename,
    )
    from packaging.version import InvalidVersion, Version

    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            return False
        return name == canonicalize_name(pin.name) and version == Version(pin.version)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return False


_ANCHOR = re.compile(r"<a\s[^>]*href=\"([^\"]+)\"[^>]*>([^<]+)</a>", re.IGNORECASE)


def _release_files(source: str, project: str, *, is_index: bool) -> list[tuple[str, str]] | None:
    """``(filename, sha256)`` of the files ``source`` offers for ``project``; None when it
    cannot be read. An index's simple page carries the hashes (PEP 503/691); a find-links
    folder's files are hashed here."""
    from urllib.parse import unquote, urlsplit

    if "://" not in source or source.startswith("file://"):
        folder = Path(unquote(urlsplit(source).path) if "://" in source else source)
        if is_index:
            page = folder / project / "index.html"
            if not page.is_file():
                page = folder / project
            if page.is_dir():
                return _hashed_folder(page)
            if not page.is_file():
                return [] if folder.is_dir() else None
            return _anchors(page.read_text(encoding="utf-8", errors="replace"))
        if folder.is_dir():
            return _hashed_folder(folder, project)
        return None
    url = f"{source}/{project}/" if is_index else source
    return _fetch_page(url)


def _fetch_page(url: str) -> list[tuple[str, str]] | None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        headers={
            "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.5",
            "User-Agent": "conveyor-build",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            media = answer.headers.get("Content-Type", "")
            body = answer.read()
    except urllib.error.HTTPError as exc:
        return [] if exc.code == 404 else None
    except (OSError, ValueError):
        return None
    if "json" in media:
        document = json.loads(body)
        return [
            (f["filename"], f["hashes"]["sha256"])
            for f in document.get("files", [])
            if "sha256" in (f.get("hashes") or {})
        ]
    return _anchors(body.decode("utf-8", errors="replace"))


def _anchors(page: str) -> list[tuple[str, str]]:
    out = []
    for href, text in _ANCHOR.findall(page):
        _, _, fragment = href.partition("#")
        if fragment.startswith("sha256="):
            out.append((text.strip(), fragment.removeprefix("sha256=")))
    return out


def _hashed_folder(folder: Path, project: str | None = None) -> list[tuple[str, str]]:
    from packaging.utils import canonicalize_name

    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if project is not None:
            head = path.name.split("-", 1)[0]
            if canonicalize_name(head) != project:
                continue
        out.append((path.name, _sha256_file(path)))
    return out


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


# -- Conveyor itself ---------------------------------------------------------------------------


def _conveyor_source() -> Path | None:
    """The folder Conveyor was installed from (an editable or a local install), if any."""
    from importlib import metadata

    text = metadata.distribution("conveyor").read_text("direct_url.json")
    if not text:
        return None
    document = json.loads(text)
    url = document.get("url", "")
    if "dir_info" not in document or not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit

    folder = Path(unquote(urlsplit(url).path))
    return folder if (folder / "pyproject.toml").is_file() else None


def _build_wheel(source: Path, into: Path) -> Path:
    """Conveyor's wheel, built from ``source`` by its backend (hatchling) through pip."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="conveyor-wheel-") as scratch:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"),
                *("--wheel-dir", scratch, str(source)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wheels = list(Path(scratch).glob("conveyor-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise ConfigError(
                f"Conveyor's wheel could not be built from {source} "
                f"(pip wheel exited {done.returncode}): {(done.stderr or done.stdout)[-1500:]}",
                field="conveyor",
            )
        into.mkdir(parents=True, exist_ok=True)
        for stale in into.glob("conveyor-*.whl"):
            stale.unlink()
        target = into / wheels[0].name
        shutil.copyfile(wheels[0], target)
    return target


# -- git -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitInfo:
    revision: str | None
    created: str
    source: str | None


def git_info(root: Path) -> GitInfo:
    """The commit, its time (the image's creation time: rebuilding the same commit gives
    the same labels) and the remote's web address, when ``root`` is in a git repository."""
    from conveyor.deploy.kubernetes import git as _git

    revision = _git(root, "rev-parse", "HEAD")
    created = _git(root, "log", "-1", "--format=%cI") if revision else None
    remote = _git(root, "remote", "get-url", "origin") if revision else None
    return GitInfo(
        revision,
        created or datetime.now(UTC).replace(microsecond=0).isoformat(),
        _web_address(remote) if remote else None,
    )


def _web_address(remote: str) -> str | None:
    found = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+?)(?:\.git)?$", remote)
    if found:
        return f"https://{found.group(1)}/{found.group(2)}"
    if remote.startswith(("https://", "http://")):
        address = re.sub(r"//[^@/]+@", "//", remote)  # never a token in a label
        return address.removesuffix(".git")
    return None


# -- the project's files -----------------------------------------------------------------------


def project_files(spec: ProjectSpec) -> list[str]:
    """What of the project goes into the image (paths relative to its folder): the spec,
    the modules and packages it names (``module:function``) and every top-level module
    (the classes pickled models are made of live there)."""
    from conveyor.config import SPEC_FILE

    root = spec.root
    if not (root / SPEC_FILE).is_file():
        raise ConfigError(
            f"{root} has no {SPEC_FILE}: the image serves a spec (conveyor init writes one)",
            file=str(root / SPEC_FILE),
        )
    chosen = [SPEC_FILE]
    named: set[str] = set()
    for text in _strings(spec.model_dump(mode="json")):
        match = _MODULE_REF.match(text)
        if match:
            named.add(match.group(1))
    for name in sorted(named):
        if (root / name / "__init__.py").is_file():
            chosen.append(f"{name}/")
        elif (root / f"{name}.py").is_file():
            chosen.append(f"{name}.py")
    for path in sorted(root.glob("*.py")):
        if path.name not in chosen and not path.name.startswith(("test_", "conftest")):
            chosen.append(path.name)
    return chosen


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _strings(item)


# -- models baked in ---------------------------------------------------------------------------


def routed_versions(project: Project) -> list[ModelVersion]:
    """Every version on a live route: arms, shadows and flag targets."""
    from conveyor.serving.route_store import RouteStore

    versions: list[ModelVersion] = []
    for state in RouteStore(project.store, None).all():
        policy = state.policy
        numbers = {arm.version for arm in policy.versions}
        numbers |= set(policy.shadow) | {flag.version for flag in policy.flags}
        versions.extend(project.registry.get(state.model, n) for n in sorted(numbers))
    return versions


def bake(project: Project, versions: Sequence[ModelVersion], folder: Path) -> list[dict[str, Any]]:
    """Copy ``versions``' artifacts into ``folder`` (the artifact store's layout), verified
    as they are read, and write ``manifest.json``; then check the folder against it."""
    from conveyor.artifacts.digest import parse_digest

    if folder.exists():
        shutil.rmtree(folder)
    entries = []

    def copy(version: ModelVersion, digest: str) -> str:
        hex_digest = parse_digest(digest)
        relative = f"sha256/{hex_digest[:2]}/{hex_digest[2:]}"
        try:
            project.artifacts.download(digest, folder / relative)
        except ArtifactIntegrityError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ArtifactIntegrityError(
                f"cannot bake {version.ref}: {exc.message}", **exc.context
            ) from None
        return relative

    for version in versions:
        entry: dict[str, Any] = {
            "model": version.model,
            "version": version.number,
            "flavor": version.flavor,
            "digest": version.artifact_digest,
            "size": version.artifact_size,
            "path": copy(version, version.artifact_digest),
        }
        if version.compiled:  # the formula the server answers from (registry.formula)
            compiled = version.compiled
            entry["compiled"] = {
                "digest": compiled["digest"],
                "size": compiled["size"],
                "path": copy(version, compiled["digest"]),
            }
        entries.append(entry)
    manifest = {"format": 1, "models": entries}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    verify_baked(folder)
    return entries


def verify_baked(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Check every artifact listed in ``folder/manifest.json`` against its sha256 and size;
    ArtifactIntegrityError naming the model version on the first that differs."""
    from conveyor.artifacts.digest import format_digest, parse_digest

    root = Path(folder)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactIntegrityError(
            f"{root / MANIFEST}: no readable manifest of the baked models ({exc})",
            location=str(root / MANIFEST),
        ) from None
    entries: list[dict[str, Any]] = manifest.get("models", [])
    for entry in entries:
        ref = f"{entry['model']}@{entry['version']}"
        for file in (entry, entry.get("compiled")):  # the model, and its formula if any
            if file is None:
                continue
            expected = parse_digest(file["digest"])
            path = root / file["path"]
            if not path.is_file():
                raise ArtifactIntegrityError(
                    f"baked model {ref}: {path} is missing",
                    digest=file["digest"],
                    location=str(path),
                )
            actual = _sha256_file(path)
            if actual != expected or path.stat().st_size != file["size"]:
                raise ArtifactIntegrityError(
                    f"baked model {ref}: {path} hashes to {format_digest(actual)}, the manifest "
                    f"says {file['digest']}: it was altered after it was baked; build again",
                    digest=file["digest"],
                    actual=format_digest(actual),
                    location=str(path),
                )
    return entries


# -- the Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What the Dockerfile is made from."""

    project: str
    base: str
    tag: str
    conveyor_version: str
    extras: tuple[str, ...]
    files: tuple[str, ...]
    port: int
    tls: bool
    hashed: bool
    bake: bool
    git: GitInfo


def render_dockerfile(recipe: Recipe) -> str:
    """The multi-stage Dockerfile of ``recipe`` (without its stamp line)."""
    labels = {
        "org.opencontainers.image.title": recipe.project,
        "org.opencontainers.image.description": f"Conveyor model server of {recipe.project}",
        "org.opencontainers.image.version": recipe.tag,
        "org.opencontainers.image.created": recipe.git.created,
        "org.opencontainers.image.base.name": recipe.base,
    }
    if recipe.git.revision:
        labels["org.opencontainers.image.revision"] = recipe.git.revision
    if recipe.git.source:
        labels["org.opencontainers.image.source"] = recipe.git.source
    labels["dev.conveyor.version"] = recipe.conveyor_version
    labels["dev.conveyor.extras"] = ",".join(recipe.extras)
    labels["dev.conveyor.models"] = "baked" if recipe.bake else "artifact-store"
    label_lines = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    scheme = "https" if recipe.tls else "http"
    # the port the server listens on: serving.port, which the variable sets
    probe = (
        "import os, ssl, urllib.request; "
        f"urllib.request.urlopen('{scheme}://127.0.0.1:%s/v2/health/live' "
        f"% os.environ.get('{PORT_ENV}', '{recipe.port}'), "
        "timeout=3" + (", context=ssl._create_unverified_context()" if recipe.tls else "") + ")"
    )
    copies = _copy_lines(recipe.files)
    require = " --require-hashes" if recipe.hashed else ""
    env = {
        "PATH": f"{VENV_DIR}/bin:$PATH",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "CONVEYOR_PROJECT_DIR": APP_DIR,
        PORT_ENV: str(recipe.port),
    }
    if recipe.bake:
        env["CONVEYOR_ARTIFACTS"] = f"file://{BAKED_DIR}"
    env_lines = " \\\n    ".join(f"{k}={v}" for k, v in env.items())
    baked = (
        f"# The routed versions' artifacts, content-addressed: the image's artifact store.\n"
        f"COPY {MODELS_DIR}/ {BAKED_DIR}/\n"
        f"COPY {ENTRYPOINT_FILE} {ENTRYPOINT_IN_IMAGE}\n"
        if recipe.bake
        else ""
    )
    entrypoint = (
        f'ENTRYPOINT ["/bin/sh", "{ENTRYPOINT_IN_IMAGE}"]'
        if recipe.bake
        else 'ENTRYPOINT ["conveyor"]'
    )
    models_note = (
        f"# Models: baked under {BAKED_DIR}; the manifest is checked at start (entrypoint)\n"
        "# and the server checks each artifact's sha256 again as it loads it.\n"
        if recipe.bake
        else "# Models: not in the image. The server reads each routed version from the artifact\n"
        "# store by digest and checks its sha256 on every load (an altered one is refused).\n"
    )
    return f"""\
# The model server of {recipe.project}: docker build -t IMAGE:{recipe.tag} .
# Build arguments: BASE_IMAGE; BUILD_PACKAGES (apt packages of the builder stage, for
# a locked package without a wheel; "" skips apt); PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and
# PIP_FIND_LINKS (a mirror; they reach the builder stage only).
{models_note}ARG BASE_IMAGE={recipe.base}

FROM ${{BASE_IMAGE}} AS builder
ARG BUILD_PACKAGES="{BUILD_PACKAGES}"
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
RUN if [ -n "$BUILD_PACKAGES" ]; then \\
      apt-get update \\
      && apt-get install -y --no-install-recommends $BUILD_PACKAGES \\
      && rm -rf /var/lib/apt/lists/*; \\
    fi
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
RUN python -m venv {VENV_DIR}
COPY {LOCK_FILE} ./
COPY {WHEELS_DIR}/ ./{WHEELS_DIR}/
# Exactly the locked distributions (no resolution), each file checked against its hash;
# pip check proves the lock is complete.
RUN {VENV_DIR}/bin/pip install --no-deps{require} -r {LOCK_FILE} \\
    && {VENV_DIR}/bin/pip check

FROM ${{BASE_IMAGE}}
LABEL {label_lines}
RUN groupadd --system --gid {IMAGE_GID} conveyor \\
    && useradd --system --uid {IMAGE_UID} --gid {IMAGE_GID} --home-dir /tmp --no-create-home \\
       --shell /usr/sbin/nologin conveyor \\
    && mkdir -p {STATE_VOLUME} \\
    && chown {IMAGE_UID}:{IMAGE_GID} {STATE_VOLUME}
COPY --from=builder {VENV_DIR} {VENV_DIR}
WORKDIR {APP_DIR}
{copies}{baked}ENV {env_lines}
# Read-only root filesystem: the project's state (embedded databases, spill, caches) and
# temporary files are the only writes, on these volumes (emptyDirs in Kubernetes).
VOLUME ["{STATE_VOLUME}", "/tmp"]
USER {IMAGE_UID}:{IMAGE_GID}
EXPOSE {recipe.port}
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \\
    CMD ["python", "-c", {json.dumps(probe)}]
{entrypoint}
CMD ["serve", "--host", "0.0.0.0"]
"""


def _copy_lines(files: Sequence[str]) -> str:
    plain = [f for f in files if not f.endswith("/")]
    lines = [f"COPY {' '.join(plain)} ./\n"] if plain else []
    lines += [f"COPY {folder} ./{folder}\n" for folder in files if folder.endswith("/")]
    return "".join(lines)


def render_dockerignore(files: Sequence[str], *, bake: bool, has_wheel: bool) -> str:
    """An allow-list: only what the Dockerfile copies reaches the builder."""
    allowed = [LOCK_FILE, *files]
    if has_wheel:
        allowed.append(f"{WHEELS_DIR}/")
    if bake:
        allowed += [f"{MODELS_DIR}/", ENTRYPOINT_FILE]
    lines = [
        "# Everything is left out (.git, .conveyor/, data, secrets, virtualenvs) but what the",
        "# Dockerfile copies.",
        "*",
        *(f"!{path}" for path in allowed),
        "**/__pycache__",
        "**/*.pyc",
    ]
    return "\n".join(lines) + "\n"


def render_entrypoint() -> str:
    return f"""\
# Starts the container: the baked models are checked against their manifest first (a file
# altered after the build stops the start), then conveyor runs with the given arguments.
set -eu
python -m conveyor.deploy.image verify {BAKED_DIR}
exec conveyor "$@"
"""


# -- writing, without clobbering edits ---------------------------------------------------------


def stamped(text: str) -> str:
    """``text`` under the stamp line that lets a later build tell it was not edited."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return (
        f"# Generated by `conveyor build` (sha256:{digest}): edited, it is replaced only "
        f"with --force.\n{text}"
    )


def _edited(path: Path) -> bool:
    """Whether ``path`` exists and is not, unchanged, what conveyor build wrote."""
    if not path.exists():
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True
    first, _, rest = text.partition("\n")
    if first.startswith("#!"):
        first, _, rest = rest.partition("\n")
    found = _STAMP.match(first)
    return found is None or hashlib.sha256(rest.encode()).hexdigest()[:16] != found.group(1)


def refuse_edited(output: Path, names: Iterable[str], *, force: bool) -> None:
    """AlreadyExistsError, before anything is written, when one of ``names`` exists under
    ``output`` but conveyor build did not write it, or it was edited since (and no ``force``)."""
    conflicts = [name for name in names if _edited(output / name)]
    if conflicts and not force:
        raise AlreadyExistsError(
            f"{', '.join(conflicts)} in {output} {'was' if len(conflicts) == 1 else 'were'} "
            "not written by conveyor build, or edited since: nothing was written; pass "
            "--force to replace them (or --output DIR to write elsewhere)",
            files=conflicts,
        )


def write_files(output: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` (relative path -> text) under ``output``; an unchanged one is left."""
    written = []
    for name, text in files.items():
        path = output / name
        if not path.exists() or path.read_bytes() != text.encode():
            write_whole(path, text)
        written.append(path)
    return written


# -- the whole context -------------------------------------------------------------------------


@dataclass
class BuildResult:
    """What ``conveyor build`` wrote and chose."""

    output: Path
    image: str
    base: str
    extras: dict[str, str]
    lock: Lock
    files: list[str]
    written: list[Path]
    models: list[dict[str, Any]]
    revision: str | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "image": self.image,
            "base": self.base,
            "build": f"docker build -t {self.image} {self.output}",
            "extras": self.extras,
            "pinned": len(self.lock.pins),
            "hashes": self.lock.hashed,
            "hash_sources": self.lock.sources,
            "conveyor_wheel": self.lock.conveyor_wheel,
            "project_files": self.files,
            "models": self.models,
            "revision": self.revision,
            "written": [str(p) for p in self.written],
            "notes": self.notes,
        }


def build_context(
    project: Project,
    *,
    output: Path | None = None,
    tag: str | None = None,
    bake: bool | None = None,
    compose: bool = False,
    force: bool = False,
    hashes: bool = True,
) -> BuildResult:
    """Write the project's image build context (see the module's docstring) and return what
    was written. ``bake`` defaults to ``deploy.image.bake_models``."""
    from conveyor.deploy.kubernetes import image_reference
    from conveyor.deploy.settings import deploy_of
    from conveyor.serving.settings import serving_of

    spec = project.spec
    settings = deploy_of(spec).image
    bake = settings.bake_models if bake is None else bake
    image = image_reference(spec, tag)
    chosen_tag = image.rsplit("@", 1)[-1] if "@" in image else image.rsplit(":", 1)[-1]
    out = (output or spec.root).resolve()
    notes: list[str] = []
    files = project_files(spec)
    names = ["Dockerfile", ".dockerignore", LOCK_FILE]
    names += [ENTRYPOINT_FILE] if bake else []
    names += [COMPOSE_FILE, PROMETHEUS_FILE] if compose else []
    refuse_edited(out, names, force=force)
    if bake:
        _check_models_folder(out / MODELS_DIR, force)
    versions, read_note = _versions_to_serve(project, bake)
    if read_note:
        notes.append(read_note)
    extras, extra_notes = extras_for(spec, versions)
    notes += extra_notes
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if settings.python != here:
        notes.append(
            f"deploy.image.python is {settings.python} but the versions are pinned from "
            f"Python {here}: a pinned release without a {settings.python} wheel fails the "
            "image build"
        )
    libraries = _model_libraries(versions, notes)
    lock = lock_for(list(extras), python=settings.python, also=libraries, hashes=hashes)
    notes += [f"hashes: {n}" for n in lock.notes]
    if out != spec.root.resolve():
        _copy_project(spec.root, out, files)
    source = _conveyor_source()
    if source is not None:
        wheel = _build_wheel(source, out / WHEELS_DIR)
        lock.conveyor_wheel = f"{WHEELS_DIR}/{wheel.name}"
        lock.conveyor_wheel_sha256 = _sha256_file(wheel)
    else:
        lock.pins.append(Pin("conveyor", lock.conveyor_version, ("the image",)))
        if lock.hashed:
            _add_hashes(lock)  # again, with Conveyor's own release among them
    models: list[dict[str, Any]] = []
    if bake:
        models = bake_into(project, versions, out / MODELS_DIR)
    serving = serving_of(spec)
    git = git_info(spec.root)
    if git.revision is None:
        notes.append("not a git repository: no revision label")
    recipe = Recipe(
        project=spec.project,
        base=settings.base or f"python:{settings.python}-slim-bookworm",
        tag=chosen_tag,
        conveyor_version=lock.conveyor_version,
        extras=tuple(extras),
        files=tuple(files),
        port=serving.port,
        tls=bool(serving.ssl_certfile),
        hashed=lock.hashed,
        bake=bake,
        git=git,
    )
    if recipe.tls:
        notes.append(
            "serving uses TLS: mount its certificate and key at the paths the spec names "
            "(they are not copied into the image)"
        )
    texts = {
        "Dockerfile": stamped(render_dockerfile(recipe)),
        ".dockerignore": stamped(
            render_dockerignore(files, bake=bake, has_wheel=lock.conveyor_wheel is not None)
        ),
        LOCK_FILE: stamped(lock.render()),
    }
    if bake:
        texts[ENTRYPOINT_FILE] = stamped(render_entrypoint())
    if compose:
        from conveyor.deploy.compose import render_compose, render_prometheus

        texts[COMPOSE_FILE] = stamped(render_compose(spec, image=image, bake=bake))
        texts[PROMETHEUS_FILE] = stamped(render_prometheus(spec))
    written = write_files(out, texts)
    if compose:
        from conveyor.deploy.compose import prepare_secrets

        written += prepare_secrets(spec, out)
    if lock.conveyor_wheel:
        written.append(out / lock.conveyor_wheel)
    return BuildResult(
        out, image, recipe.base, extras, lock, files, written, models, git.revision, notes
    )


def bake_into(
    project: Project, versions: Sequence[ModelVersion], folder: Path
) -> list[dict[str, Any]]:
    if not versions:
        raise InvalidInputError(
            "nothing to bake: no model has a route (conveyor deploy MODEL@N first)",
            field="bake",
        )
    return bake(project, versions, folder)


def _check_models_folder(folder: Path, force: bool) -> None:
    if (
        folder.exists()
        and not (folder / MANIFEST).is_file()
        and any(folder.iterdir())
        and not force
    ):
        raise AlreadyExistsError(
            f"{folder} holds files conveyor build did not bake: pass --force to replace them",
            files=[str(folder)],
        )


def _versions_to_serve(project: Project, bake: bool) -> tuple[list[ModelVersion], str | None]:
    """The routed versions: always read with ``bake`` (an error if the store cannot be read);
    otherwise only from an embedded store, and without migrating it."""
    if bake:
        return routed_versions(project), None
    url = project.spec.url("store")
    if url.scheme != "sqlite" or not Path(url.location).is_file():
        return [], (
            f"the routes were not read ({url.scheme}:// store: a build without --bake reads "
            "no remote store): name the extras the routed models need in deploy.image.extras"
        )
    try:
        project.backend("store", migrate=False)
        return routed_versions(project), None
    except ConveyorError as exc:
        return [], f"the routes could not be read ({exc.message})"
    except Exception as exc:  # an old store without the routes table
        return [], f"the routes could not be read ({type(exc).__name__})"


def _model_libraries(versions: Sequence[ModelVersion], notes: list[str]) -> dict[str, str]:
    """Libraries the routed versions were saved with, to be locked with the rest."""
    from importlib import metadata

    wanted: dict[str, str] = {}
    for version in versions:
        for library, saved in sorted(version.libraries.items()):
            try:
                installed = metadata.version(library)
            except metadata.PackageNotFoundError:
                raise ConfigError(
                    f"{version.ref} was saved with {library} {saved}, which is not installed "
                    "where conveyor build runs: install it here so the image can pin it",
                    package=library,
                ) from None
            if installed != saved:
                notes.append(
                    f"{version.ref} was saved with {library} {saved}; the image pins "
                    f"{installed} (installed here)"
                )
            wanted.setdefault(library, version.ref)
    return wanted


def _copy_project(root: Path, out: Path, files: Sequence[str]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in files:
        source = root / name.rstrip("/")
        target = out / name.rstrip("/")
        if source.resolve() == target.resolve():
            continue
        if source.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


# -- in the container --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m conveyor.deploy.image verify FOLDER``: the entrypoint's check of the
    baked models (exit 1 with the reason on stderr when one was altered)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "verify":
        print("usage: python -m conveyor.deploy.image verify FOLDER", file=sys.stderr)
        return 2
    try:
        entries = verify_baked(args[1])
    except ArtifactIntegrityError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"{len(entries)} baked model(s) match their sha256", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
