"""The user's own code named in the spec (``module:function``: a model's ``fit``, a feature
view's transform), imported with the project folder first on ``sys.path``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = ["load_entry_point"]


def load_entry_point(ref: str, root: Path | None, *, field: str) -> Callable[..., Any]:
    """``module:function``, imported with the project folder first on ``sys.path``."""
    module_name, _, attr = ref.partition(":")
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"{field}: cannot import module {module_name!r} ({exc})", field=field
        ) from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise InvalidInputError(
            f"{field}: module {module_name!r} has no function {attr!r}", field=field
        )
    return function  # type: ignore[no-any-return]
