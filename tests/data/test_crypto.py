from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from conveyor.config import load_spec
from conveyor.data.crypto import (
    Keyring,
    decrypt_cells,
    decrypt_value,
    encrypt_cells,
    encrypt_fields,
    encrypt_value,
    generate_key,
)
from conveyor.errors import ConfigError, IntegrityError, NotFoundError


def test_values_and_payload_fields_round_trip() -> None:
    ring = Keyring.parse(generate_key(), "k")
    for value in ("a@b.test", 12345, 1.5, None, ["x", 2], {"nested": True}):
        token = encrypt_value(value, ring)
        assert isinstance(token, str) and token.startswith("enc:v1:")
        assert decrypt_value(token, ring) == value
    payload = encrypt_fields({"email": "a@b.test", "amount": 3}, ["email"], ring)
    assert payload["amount"] == 3 and "a@b.test" not in json.dumps(payload)
    assert decrypt_value(payload["email"], ring) == "a@b.test"
    assert decrypt_value("plain", ring) == "plain"


def test_a_token_under_another_key_or_altered_is_refused() -> None:
    ring, other = Keyring.parse(generate_key(), "a"), Keyring.parse(generate_key(), "b")
    token = encrypt_value("secret", ring)
    with pytest.raises(NotFoundError, match="not in the keyring"):
        decrypt_value(token, other)
    prefix, body = token.rsplit(":", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(IntegrityError, match="failed authentication"):
        decrypt_value(f"{prefix}:{flipped}", ring)


def test_cells_round_trip_and_hide_the_values() -> None:
    ring = Keyring.parse(generate_key(), "k")
    table = pa.table({"email": ["a@x", None, "c@x"], "n": [1, 2, 3]})
    sealed = encrypt_cells(table, ["email"], ring)
    assert "a@x" not in str(sealed.to_pylist()) and sealed.column("email")[1].as_py() is None
    assert decrypt_cells(sealed, ["email"], ring).to_pylist() == table.to_pylist()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "not a base64 key"),
        ("c2hvcnQ=", "32"),
        ('{"current": "x", "keys": {}}', "not among its keys"),
        ('{"keys": 1}', "expected"),
    ],
)
def test_bad_keys_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Keyring.parse(text, "$CONVEYOR_DATA_KEY")


def test_keyring_from_env_or_key_file(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text("project: p\nencryption: {key_file: secrets/ring}\n")
    spec = load_spec(tmp_path, env={})
    with pytest.raises(ConfigError, match="secrets/ring"):
        Keyring.from_spec(spec, env={})
    (tmp_path / "secrets").mkdir()
    key = generate_key()
    (tmp_path / "secrets" / "ring").write_text(key)
    from_file = Keyring.from_spec(spec, env={})
    from_env = Keyring.from_spec(spec, env={"CONVEYOR_DATA_KEY": key})
    assert from_file is not None and from_env is not None
    assert from_file.current == from_env.current  # the id derives from the key
