from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.artifacts import format_digest, parse_digest
from conveyor.errors import InvalidInputError

_CANONICAL = re.compile(r"sha256:[0-9a-f]{64}")


@given(st.binary())
def test_digest_of_any_bytes_parses_back(data: bytes) -> None:
    hex_digest = hashlib.sha256(data).hexdigest()
    assert parse_digest(format_digest(hex_digest)) == hex_digest


@given(st.text())
def test_only_canonical_digests_are_accepted(text: str) -> None:
    if _CANONICAL.fullmatch(text):
        assert parse_digest(text) == text[7:]
    else:
        with pytest.raises(InvalidInputError, match="not an artifact digest"):
            parse_digest(text)


@pytest.mark.parametrize("value", [None, 42, b"sha256:" + b"0" * 64])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError):
        parse_digest(value)
