"""Where a run came from: its seed, its code (git commit, dirty tree) and its environment."""

from __future__ import annotations

import importlib.metadata
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "apply_seed", "environment", "git_state"]

#: Libraries whose installed versions a run records (when installed).
LIBRARIES = (
    "conveyor",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "torch",
    "onnx",
    "onnxruntime",
)


def apply_seed(seed: int) -> list[str]:
    """Seed Python's ``random`` and, when installed, numpy's global generator; say which."""
    random.seed(seed)
    applied = ["random"]
    try:
        import numpy as np
    except ImportError:
        return applied
    np.random.seed(seed % 2**32)
    applied.append("numpy")
    return applied


def git_state(path: Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git work tree at ``path``; None outside one."""
    cwd = str(path) if path is not None else None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    if status.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment() -> dict[str, Any]:
    """Python, platform and the versions of the installed ML libraries."""
    libraries: dict[str, str] = {}
    for dist in LIBRARIES:
        try:
            libraries[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libraries": libraries,
    }
