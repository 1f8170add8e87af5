from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.backends import ARTIFACTS, CACHE, EVENTS, SEAMS, STORE, BackendURL, Seam, redact
from conveyor.errors import (
    InvalidInputError,
    MissingDependencyError,
    UnknownBackendError,
)


def test_parse_postgres_url_with_driver_and_query() -> None:
    url = BackendURL.parse(
        "postgresql+psycopg://app:s3cr%40t@db.internal:5433/conveyor?sslmode=require"
    )
    assert (url.scheme, url.driver, url.username, url.password) == (
        "postgresql",
        "psycopg",
        "app",
        "s3cr@t",
    )
    assert (url.host, url.port, url.path) == ("db.internal", 5433, "/conveyor")
    assert url.query == {"sslmode": "require"}
    assert url.address == "db.internal:5433"


def test_password_never_shown() -> None:
    url = BackendURL.parse("postgresql://app:hunter2@db:5432/x")
    for text in (str(url), repr(url), url.render(), f"{url}"):
        assert "hunter2" not in text
    assert "***" in str(url)
    assert "hunter2" in url.render(hide_password=False)
    assert redact("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("not a url") == "not a url"


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ("sqlite:///.conveyor/conveyor.db", ".conveyor/conveyor.db"),
        ("sqlite:////var/lib/conveyor.db", "/var/lib/conveyor.db"),
        ("sqlite://", ""),
        ("file://.conveyor/Artifacts", ".conveyor/Artifacts"),
        ("file:///srv/Artifacts", "/srv/Artifacts"),
        ("memory://scratch", "scratch"),
    ],
)
def test_location_of_embedded_urls(raw: str, location: str) -> None:
    assert BackendURL.parse(raw).location == location


def test_not_a_url_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="not a backend URL"):
        BackendURL.parse("conveyor.db")
    with pytest.raises(InvalidInputError, match="invalid port"):
        BackendURL.parse("postgresql://db:notaport/x")


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(UnknownBackendError) as info:
        STORE.resolve("mysql://root@localhost/x")
    message = str(info.value)
    assert "'mysql'" in message
    assert "postgresql://" in message
    assert "sqlite://" in message
    assert info.value.context["known"] == ["postgresql", "sqlite"]
    assert isinstance(info.value, ValueError)  # existing `except ValueError` keeps working


def test_missing_dependency_names_the_extra() -> None:
    seam = Seam("test", "a test seam", {})
    seam.register(
        "fancy", "conveyor.nonexistent:Backend", extra="fancy", requires=("no_such_module_xyz",)
    )
    with pytest.raises(MissingDependencyError) as info:
        seam.resolve("fancy://host")
    assert "pip install 'conveyor[fancy]'" in str(info.value)
    assert "no_such_module_xyz" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_register_refuses_to_clobber_silently() -> None:
    seam = Seam("test", "a test seam", {})
    seam.register("x", "json:JSONDecoder")
    with pytest.raises(InvalidInputError, match="already registered"):
        seam.register("x", "json:JSONEncoder")
    seam.register("x", "json:JSONEncoder", clobber=True)
    import json

    assert seam.resolve("x://") is json.JSONEncoder


def test_every_seam_has_an_embedded_default() -> None:
    from conveyor.capability import seams

    assert set(SEAMS) == {"store", "artifacts", "events", "cache"}  # the foundation's
    assert set(seams()) == {*SEAMS, "ratelimit", "online"}  # and those capabilities add
    for seam in seams().values():
        assert seam.default is not None and seam.spec(seam.default), seam
    assert "sqlite" in STORE.schemes() and "sqlite" in EVENTS.schemes()
    assert "file" in ARTIFACTS.schemes()
    assert "memory" in CACHE.schemes()


def test_every_registered_target_imports() -> None:
    import importlib

    from conveyor.capability import seams

    for seam in seams().values():
        for scheme in seam.schemes():
            spec = seam.spec(f"{scheme}://x")
            module, _, attr = spec.target.partition(":")
            if seam.missing(f"{scheme}://x"):
                continue  # optional driver absent: covered by the MissingDependencyError test
            assert hasattr(importlib.import_module(module), attr), spec.target


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20
)


@given(
    user=_text,
    password=_text,
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    port=st.integers(1, 65535),
    db=st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
)
def test_render_parse_round_trip(user: str, password: str, host: str, port: int, db: str) -> None:
    url = BackendURL(
        scheme="postgresql", username=user, password=password, host=host, port=port, path=f"/{db}"
    )
    again = BackendURL.parse(url.render(hide_password=False))
    assert again == url
    assert ":***@" in str(again)
