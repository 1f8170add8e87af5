"""The project's embedding models as a service other capabilities use without importing
RAG: ``project.service("embedders").open({...})`` (the LLM gateway's semantic cache does).

Each configuration (an :class:`~conveyor.rag.embed.config.EmbeddingConfig` as a mapping)
is opened once per process and shared: an encoder holds its model in memory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.rag.embed.config import EmbeddingConfig

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.rag.types import Embedder

__all__ = ["Embedders"]


class Embedders:
    """Encoders by configuration, opened on first use and kept."""

    def __init__(self) -> None:
        self._opened: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_project(cls, project: Project) -> Embedders:
        return cls()

    def open(self, config: Mapping[str, Any] | EmbeddingConfig | None = None) -> Embedder:
        """The encoder ``config`` describes (the default: all-MiniLM-L6-v2 on ONNX Runtime,
        INT8). A ConfigError or ValidationError names what is wrong with it."""
        checked = (
            config if isinstance(config, EmbeddingConfig) else EmbeddingConfig(**(config or {}))
        )
        key = json.dumps(checked.model_dump(mode="json"), sort_keys=True)
        with self._lock:
            found = self._opened.get(key)
            if found is None:
                from conveyor.rag.embed.factory import open_embedder

                found = self._opened[key] = open_embedder(checked)
            return found

    def close(self) -> None:
        """Nothing to release but memory: the encoders go with the process."""
        self._opened.clear()
