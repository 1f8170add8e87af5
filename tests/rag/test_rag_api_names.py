"""``conveyor.rag``'s public names stay the functions once every submodule is imported: a
submodule named like one of them (``conveyor/rag/build.py`` once) is set on the package by
the import system and shadows the function (``conveyor.rag.build("docs")`` then raised
"'module' object is not callable")."""

from __future__ import annotations

import importlib
import pkgutil

import conveyor.rag
from conveyor.rag import api


def test_public_names_are_the_api_functions_after_every_submodule_is_imported() -> None:
    importlib.import_module("conveyor.cli")  # mounts conveyor.rag.cli (which imports it)
    for info in pkgutil.walk_packages(conveyor.rag.__path__, "conveyor.rag."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    for name in conveyor.rag.__all__:
        assert getattr(conveyor.rag, name) is getattr(api, name), name
        assert callable(getattr(conveyor.rag, name))
