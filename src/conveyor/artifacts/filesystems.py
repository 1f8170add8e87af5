"""Which fsspec filesystem, and which folder in it, an artifact URL names.

- ``file:///abs/dir``: a local folder (created if missing);
- ``memory://name``: fsspec's in-memory filesystem, which is process-global,
  so ``name`` is the namespace: two stores on ``memory://a`` share artifacts;
- ``s3://bucket/prefix``: S3 or an S3-compatible server through s3fs
  (``pip install 'conveyor[s3]'``); query options ``endpoint_url``,
  ``region``, ``profile`` and ``anon``; credentials come from the usual AWS
  sources, from ``s3://KEY:SECRET@bucket`` (the secret is redacted like any
  URL password) or from keyword options, which go to ``S3FileSystem``.

Every filesystem is built with ``skip_instance_cache=True``: fsspec's
instance cache would hand two stores the same object, and with it stale
connections (STYLE.md).
"""

from __future__ import annotations

import importlib
import os
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from conveyor.backends import BackendURL, check_options
from conveyor.errors import InvalidInputError

__all__ = ["Location", "close_filesystem", "open_location"]

_S3_QUERY = {"endpoint_url", "region", "profile", "anon"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Location:
    """A filesystem, the folder (or key prefix) in it, and how it fails."""

    fs: Any
    root: str
    backend_errors: tuple[type[BaseException], ...] = ()
    """Exceptions meaning "the service did not answer" (remote filesystems only)."""
    endpoint: str | None = None
    """Where requests go, for error messages."""


def open_location(url: BackendURL, options: dict[str, Any]) -> Location:
    """The filesystem for ``url``; ``options`` go to the fsspec constructor."""
    if url.scheme == "file":
        return _local(url, options)
    if url.scheme == "memory":
        return _memory(url, options)
    if url.scheme == "s3":
        return _s3(url, options)
    raise InvalidInputError(
        f"{url}: the artifact store supports file://, memory:// and s3:// URLs",
        field="artifacts",
    )


def close_filesystem(fs: Any) -> None:
    """Release what the filesystem holds open (only s3fs holds anything)."""
    creator = getattr(fs, "_s3creator", None)
    if creator is None:
        return
    # s3fs closes its aiohttp session only at garbage collection (from a
    # weakref finalizer); close it now so no socket outlives the store.
    from fsspec.asyn import sync

    with suppress(Exception):
        sync(fs.loop, creator.__aexit__, None, None, None)
    fs._s3 = None
    fs._s3creator = None


def _local(url: BackendURL, options: dict[str, Any]) -> Location:
    from fsspec.implementations.local import LocalFileSystem

    _reject_query(url, set())
    if not url.location:
        raise InvalidInputError(f"{url}: the file:// URL names no folder", field="artifacts")
    root = os.path.abspath(url.location)
    fs = LocalFileSystem(auto_mkdir=True, skip_instance_cache=True, **options)
    fs.makedirs(root, exist_ok=True)
    return Location(fs, root)


def _memory(url: BackendURL, options: dict[str, Any]) -> Location:
    from fsspec.implementations.memory import MemoryFileSystem

    _reject_query(url, set())
    name = url.path.strip("/") or "default"
    fs = MemoryFileSystem(skip_instance_cache=True, **options)
    return Location(fs, f"/{name}")


def _s3(url: BackendURL, options: dict[str, Any]) -> Location:
    import aiohttp
    from fsspec.exceptions import FSTimeoutError

    # s3fs and botocore ship no type information; importing them by name keeps
    # mypy strict here without a per-module override in pyproject.toml.
    s3fs = importlib.import_module("s3fs")
    botocore_exceptions = importlib.import_module("botocore.exceptions")

    _reject_query(url, _S3_QUERY)
    if not url.host:
        raise InvalidInputError(f"{url}: the s3:// URL names no bucket", field="artifacts")
    query = dict(url.query)
    kwargs: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = dict(options.pop("client_kwargs", {}))
    if "endpoint_url" in query:
        kwargs["endpoint_url"] = query["endpoint_url"]
    if "region" in query:
        client_kwargs["region_name"] = query["region"]
    if "profile" in query:
        kwargs["profile"] = query["profile"]
    if "anon" in query:
        kwargs["anon"] = _flag(url, "anon", query["anon"])
    if url.username is not None:
        kwargs["key"] = url.username
        kwargs["secret"] = url.password
    kwargs.update(options)
    # Listings are not cached: another writer may add or remove objects at any
    # time, and a stale listing would make exists() lie.
    kwargs.setdefault("use_listings_cache", False)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs=client_kwargs, **kwargs)
    root = f"{url.host}/{url.path.strip('/')}".rstrip("/")
    errors: tuple[type[BaseException], ...] = (
        OSError,
        botocore_exceptions.BotoCoreError,
        aiohttp.ClientError,
        FSTimeoutError,
        TimeoutError,
    )
    endpoint = kwargs.get("endpoint_url") or "the AWS default endpoint"
    return Location(fs, root, backend_errors=errors, endpoint=endpoint)


def _reject_query(url: BackendURL, allowed: set[str]) -> None:
    check_options(url, allowed, "artifact store", field="artifacts")


def _flag(url: BackendURL, name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInputError(f"{url}: {name}={value!r} is not true or false", field="artifacts")
