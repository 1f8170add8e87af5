"""How a local MCP server is confined (stand-in: the working directory and the environment
only; resource limits and bubblewrap are being built in this module's full version)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IsolationSpec", "Launch", "wrap"]


class IsolationSpec(BaseModel):
    """``mcp.servers.X.isolation``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["none", "process", "sandbox"] = Field("process", description="How confined.")
    cpu_s: int | None = Field(60, ge=1, description="CPU seconds.")
    memory_mb: int | None = Field(1024, ge=16, description="Address space, MiB.")
    open_files: int | None = Field(256, ge=16, description="Open files.")
    processes: int | None = Field(64, ge=1, description="Processes.")
    network: bool = Field(False, description="Network access (sandbox).")
    env: list[str] = Field(default_factory=list, description="Variables passed through.")
    readable: list[str] = Field(default_factory=list, description="Extra readable paths.")
    writable: list[str] = Field(default_factory=list, description="Extra writable paths.")
    workdir: str | None = Field(None, description="Working directory.")


@dataclass
class Launch:
    command: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    applied: dict[str, Any] = field(default_factory=dict)


def wrap(
    spec: IsolationSpec,
    server: str,
    command: str,
    args: list[str],
    env: dict[str, str],
    root: Path,
    granted: Mapping[str, str] | None = None,
) -> Launch:
    cwd = Path(spec.workdir) if spec.workdir else root / ".conveyor" / "mcp" / server
    cwd.mkdir(parents=True, exist_ok=True)
    base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    base.update({k: os.environ[k] for k in spec.env if k in os.environ})
    return Launch(
        command, list(args), {**base, **env, **dict(granted or {})}, cwd, {"level": "none"}
    )
