"""Installed entry points, read without :mod:`importlib.metadata`.

``importlib.metadata`` costs about 90 ms to import (it pulls in :mod:`email` to parse
package metadata) and another 50 ms to scan every distribution: a seventh of a second
before ``conveyor --help`` can print anything, and again at every server start. Conveyor
needs only one file of each installed package, ``entry_points.txt``, so it reads those
itself, following the same rules: every folder on :data:`sys.path` in order, ``*.dist-info``
and ``*.egg-info`` folders, the first distribution of a (normalised) name wins.

A path entry that is a zip archive (an egg, a zipapp) is not a folder this reader can
list; when one is present, the standard library reads everything instead, so nothing is
ever missed.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from importlib import import_module
from typing import Any

_SUFFIXES = (".dist-info", ".egg-info")
_VALUE = re.compile(r"^(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+))?\s*(\[.*\])?\s*$")


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """One declared entry point: ``name = module:attr`` in ``group``."""

    name: str
    value: str
    group: str

    def load(self) -> Any:
        """Import the module and return the attribute the entry point names."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"malformed entry point value {self.value!r}")
        target: Any = import_module(match["module"])
        for part in (match["attr"] or "").split(".") if match["attr"] else ():
            target = getattr(target, part)
        return target


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _parse(text: str) -> list[tuple[str, str, str]]:
    """``(group, name, value)`` of an ``entry_points.txt`` (an INI file without defaults)."""
    found: list[tuple[str, str, str]] = []
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group is not None and "=" in line:
            name, _, value = line.partition("=")
            found.append((group, name.strip(), value.strip()))
    return found


def _from_folders(path: list[str]) -> list[EntryPoint] | None:
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in path:
        folder = entry or "."
        try:
            names = sorted(os.listdir(folder))
        except NotADirectoryError:
            return None  # a zip on the path: let the standard library read it
        except OSError:
            continue
        for name in names:
            if not name.endswith(_SUFFIXES):
                continue
            dist = _normalise(name.rsplit(".", 1)[0].split("-", 1)[0])
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            found.extend(EntryPoint(n, v, g) for g, n, v in _parse(text))
    return found


def _from_stdlib() -> list[EntryPoint]:
    from importlib.metadata import distributions

    seen: set[str] = set()
    found: list[EntryPoint] = []
    for dist in distributions():
        name = _normalise(dist.name or "")
        if name in seen:
            continue
        seen.add(name)
        found.extend(EntryPoint(ep.name, ep.value, ep.group) for ep in dist.entry_points)
    return found


@functools.cache
def installed() -> tuple[EntryPoint, ...]:
    """Every installed entry point, read once per process."""
    found = _from_folders(list(sys.path))
    return tuple(_from_stdlib() if found is None else found)


def entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group``, in the order of :data:`sys.path`."""
    return [ep for ep in installed() if ep.group == group]
