"""The content-addressed artifact store over fsspec (local files, memory, S3).

An artifact is stored under the SHA-256 of its bytes::

    <root>/sha256/<first 2 hex>/<remaining 62 hex>

so the same bytes are stored once, an address can never point at different
bytes, and every read can check that what comes back is what went in. A
write streams into a temporary key under ``<root>/tmp/`` while hashing, then
moves it to its address: a reader never sees a half-written artifact, and
a crashed writer leaves only a temporary key behind.

Backends, picked by URL (see :data:`conveyor.backends.ARTIFACTS` and
:mod:`conveyor.artifacts.filesystems`): ``file://``, ``memory://`` and ``s3://``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from conveyor.artifacts.digest import (
    ALGORITHM,
    ArtifactRef,
    format_digest,
    integrity_error,
    parse_digest,
)
from conveyor.artifacts.filesystems import Location, close_filesystem, open_location
from conveyor.artifacts.reader import VerifyingReader
from conveyor.backends import BackendURL, Closeable, unavailable
from conveyor.errors import (
    ArtifactIntegrityError,
    BackendUnavailableError,
    ClosedError,
    ConveyorError,
    InvalidInputError,
    NotFoundError,
)

__all__ = ["CHUNK_SIZE", "ArtifactStore"]

#: Bytes read, hashed and written per step: memory stays flat for any size.
CHUNK_SIZE = 1 << 20
_SEAM = "artifacts"


class ArtifactStore(Closeable):
    """Content-addressed bytes on an fsspec filesystem.

    Open with :meth:`from_url` (or ``ARTIFACTS.open(url)``) and close with
    ``with``. Methods are safe to call from several threads.
    """

    def __init__(self, location: Location, *, url: BackendURL) -> None:
        self._fs = location.fs
        self._root = location.root.rstrip("/")
        self._url = url
        # Exceptions that mean "the service did not answer" for this backend;
        # empty for local and memory, where such failures are real bugs.
        self._backend_errors = location.backend_errors
        self._endpoint = location.endpoint
        self._closed = False

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | BackendURL, **storage_options: Any) -> ArtifactStore:
        """Open the store at ``url``; ``storage_options`` go to the fsspec filesystem."""
        parsed = BackendURL.parse(url)
        return cls(open_location(parsed, dict(storage_options)), url=parsed)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Release the filesystem's connections; the store is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        close_filesystem(self._fs)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self._url)!r})"

    # -- introspection (also used by the contract tests to damage objects) -----

    @property
    def url(self) -> BackendURL:
        return self._url

    @property
    def fs(self) -> Any:
        """The underlying fsspec filesystem (for tools and tests; bypasses checks)."""
        return self._fs

    @property
    def root(self) -> str:
        """The folder or key prefix holding this store's objects."""
        return self._root

    def key(self, digest: str) -> str:
        """Where ``digest`` lives on :attr:`fs`: ``<root>/sha256/<2 hex>/<62 hex>``."""
        hex_digest = parse_digest(digest)
        return f"{self._root}/{ALGORITHM}/{hex_digest[:2]}/{hex_digest[2:]}"

    # -- writing --------------------------------------------------------------

    def put(
        self, data: bytes | BinaryIO | os.PathLike[str], *, media_type: str | None = None
    ) -> ArtifactRef:
        """Store ``data`` (bytes, a binary file object, or a path) and return its address.

        Files and streams are copied in :data:`CHUNK_SIZE` chunks, so any size
        fits in constant memory. Bytes that are already stored are not written
        again; an existing object whose size is wrong is damaged and replaced.
        """
        self._check_open()
        with self._guard():
            if isinstance(data, bytes | bytearray | memoryview):
                payload = bytes(data)
                hex_digest = hashlib.sha256(payload).hexdigest()
                if self._stored_size(hex_digest) == len(payload):
                    return ArtifactRef(format_digest(hex_digest), len(payload), media_type)
                hex_digest, size = self._write_stream(_chunks_of(payload))
            elif isinstance(data, os.PathLike):
                path = Path(os.fspath(data))
                if self._backend_errors:
                    # Remote store: hashing the local file first is cheaper than
                    # uploading again bytes the store already holds.
                    hex_digest, size = _hash_file(path)
                    if self._stored_size(hex_digest) == size:
                        return ArtifactRef(format_digest(hex_digest), size, media_type)
                # Local store: one read, hashed while copied (a duplicate's copy is dropped).
                with _open_source(path) as f:
                    hex_digest, size = self._write_stream(_read_chunks(f))
            elif hasattr(data, "read"):
                hex_digest, size = self._write_stream(_read_chunks(data))
            else:
                raise InvalidInputError(
                    f"cannot store a {type(data).__name__}: pass bytes, a binary file "
                    "object or a path (pathlib.Path)",
                    field="data",
                )
        return ArtifactRef(format_digest(hex_digest), size, media_type)

    def put_json(self, obj: Any) -> ArtifactRef:
        """Store ``obj`` as JSON (keys sorted, so equal objects share one address)."""
        try:
            payload = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise InvalidInputError(f"cannot store as JSON: {exc}", field="obj") from exc
        return self.put(payload, media_type="application/json")

    def _write_stream(self, chunks: Iterator[bytes]) -> tuple[str, int]:
        tmp = f"{self._root}/tmp/{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        size = 0
        try:
            with self._fs.open(tmp, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            hex_digest = hasher.hexdigest()
            final = self.key(format_digest(hex_digest))
            if self._stored_size(hex_digest) == size:
                self._fs.rm_file(tmp)
            else:
                # Absent, or present with the wrong size (damaged): move ours in.
                # On local disks this is a rename, atomic even against a
                # concurrent put of the same bytes.
                self._fs.mv(tmp, final)
        except FileNotFoundError as exc:
            # The root itself is gone: on S3, a bucket that does not exist.
            raise unavailable(
                self._url, _SEAM, f"{self._where(self._root)} does not exist ({exc})"
            ) from exc
        except BaseException:
            with suppress(Exception):
                self._fs.rm_file(tmp)
            raise
        return hex_digest, size

    # -- reading --------------------------------------------------------------

    def get(self, digest: str) -> bytes:
        """All the bytes of ``digest``, checked against it (for artifacts that fit in memory)."""
        self._check_open()
        key = self.key(digest)
        with self._guard(), self._not_found(digest):
            data: bytes = self._fs.cat_file(key)
        actual = hashlib.sha256(data).hexdigest()
        if actual != parse_digest(digest):
            raise integrity_error(digest, actual, self._where(key))
        return data

    def get_json(self, digest: str) -> Any:
        """The object stored by :meth:`put_json`."""
        data = self.get(digest)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(
                f"artifact {digest} is not JSON: {exc}", field="digest"
            ) from exc

    def open(self, digest: str) -> VerifyingReader:
        """A stream of ``digest``'s bytes, verified as they are read.

        The caller **must read to the end** (until ``read()`` returns ``b""``,
        or exactly :meth:`size` bytes): the hash is compared there, and a
        mismatch raises :class:`~conveyor.errors.ArtifactIntegrityError` from
        that last read. Use it as a context manager.
        """
        self._check_open()
        expected = parse_digest(digest)
        key = self.key(digest)
        with self._guard(), self._not_found(digest):
            size = int(self._fs.size(key))
            raw = self._fs.open(key, "rb")
        return VerifyingReader(
            raw,
            digest=digest,
            expected_hex=expected,
            size=size,
            where=self._where(key),
            guard=self._guard,
        )

    def download(self, digest: str, path: str | os.PathLike[str]) -> Path:
        """Write ``digest`` to ``path``, which appears only once the bytes are verified.

        The bytes go to a temporary file in the same folder, are checked, then
        renamed over ``path`` in one atomic step: a tampered artifact never
        lands at ``path``, and a reader of ``path`` never sees a partial file.
        """
        self._check_open()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            with open(tmp, "wb") as out, self.open(digest) as reader:
                # Reading until b"" is what triggers the check: a mismatch raises
                # here, before the rename below.
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def verify(self, digest: str) -> bool:
        """True if the stored bytes still hash to ``digest`` (reads them all)."""
        try:
            with self.open(digest) as reader:
                while reader.read(CHUNK_SIZE):
                    pass
        except ArtifactIntegrityError:
            return False
        return True

    # -- health ---------------------------------------------------------------

    def ping(self) -> None:
        """Raise BackendUnavailableError unless the store's root can be listed."""
        self._check_open()
        with self._guard():
            try:
                self._fs.ls(self._root, detail=False)
            except FileNotFoundError as exc:
                raise _unavailable(self, exc) from exc

    def health(self) -> dict[str, Any]:
        """Facts for ``conveyor doctor`` (raises BackendUnavailableError)."""
        self.ping()
        return {
            "seam": _SEAM,
            "backend": self._url.scheme,
            "url": str(self._url),
            "root": self._root,
        }

    # -- metadata -------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        self._check_open()
        with self._guard():
            return self._stored_size(parse_digest(digest)) is not None

    def size(self, digest: str) -> int:
        """The stored size in bytes (not verified)."""
        self._check_open()
        key = self.key(digest)
        with self._guard(), self._not_found(digest):
            return int(self._fs.size(key))

    def delete(self, digest: str) -> bool:
        """Remove ``digest``; False if it was not there."""
        self._check_open()
        key = self.key(digest)
        with self._guard():
            # S3 deletes are idempotent and do not report absence: ask first.
            if self._stored_size(parse_digest(digest)) is None:
                return False
            try:
                self._fs.rm_file(key)
            except FileNotFoundError:
                return False
        return True

    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, in hex order (lists the whole store)."""
        self._check_open()
        with self._guard():
            try:
                paths = self._fs.find(f"{self._root}/{ALGORITHM}")
            except FileNotFoundError:
                paths = []
        for path in sorted(paths):
            parts = str(path).rstrip("/").rsplit("/", 2)
            if len(parts) == 3 and len(parts[1]) == 2 and len(parts[2]) == 62:
                candidate = format_digest(parts[1] + parts[2])
                with suppress(InvalidInputError):
                    parse_digest(candidate)
                    yield candidate

    # -- internals ------------------------------------------------------------

    def _stored_size(self, hex_digest: str) -> int | None:
        try:
            info = self._fs.info(self.key(format_digest(hex_digest)))
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type", "file") == "file" else None

    def _where(self, key: str) -> str:
        return f"{self._url.scheme}://{key.lstrip('/')}" if self._url.scheme != "file" else key

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed; open a new one with ArtifactStore.from_url()")

    @contextmanager
    def _not_found(self, digest: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"artifact {digest} is not in the artifact store {self._url}",
                digest=digest,
            ) from exc

    def _guard(self) -> AbstractContextManager[None]:
        return _translate(self)


@contextmanager
def _translate(store: ArtifactStore) -> Iterator[None]:
    """Turn a remote backend's transport failure into BackendUnavailableError."""
    try:
        yield
    except (ConveyorError, FileNotFoundError):
        raise
    except store._backend_errors as exc:
        raise _unavailable(store, exc) from exc


def _unavailable(store: ArtifactStore, exc: BaseException) -> BackendUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return unavailable(store.url, _SEAM, f"{store._endpoint}: {reason}")


def _chunks_of(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[start : start + CHUNK_SIZE])


def _read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = f.read(CHUNK_SIZE)
        if not chunk:
            return
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidInputError(
                f"the stream gave {type(chunk).__name__}, not bytes: open the file in binary "
                "mode ('rb')",
                field="data",
            )
        yield bytes(chunk)


def _open_source(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise InvalidInputError(f"cannot store {path}: no such file", field="data") from exc


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with _open_source(path) as f:
        for chunk in _read_chunks(f):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size
