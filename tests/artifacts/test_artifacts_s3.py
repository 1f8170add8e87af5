"""The contract against a real S3 API: moto's server, over HTTP on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.backends import ARTIFACTS
from conveyor.errors import BackendUnavailableError
from conveyor.testing.artifacts import ArtifactStoreContract

BUCKET = "conveyor-test"
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with ARTIFACTS.open(f"s3://{BUCKET}?endpoint_url={endpoint}", **CREDENTIALS) as store:
            store.fs.mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()


class TestS3ArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def artifacts_url(self, s3_endpoint: str) -> str:
        return f"s3://{BUCKET}/{uuid.uuid4().hex}/artifacts?endpoint_url={s3_endpoint}"

    @pytest.fixture
    def artifacts_options(self) -> dict[str, Any]:
        return dict(CREDENTIALS)


def test_missing_bucket_is_a_backend_error(s3_endpoint: str) -> None:
    with (
        ARTIFACTS.open(f"s3://no-such-bucket/x?endpoint_url={s3_endpoint}", **CREDENTIALS) as store,
        pytest.raises(BackendUnavailableError, match="no-such-bucket"),
    ):
        store.put(b"x")


def test_unreachable_endpoint_is_a_backend_error() -> None:
    with (
        ARTIFACTS.open(
            f"s3://{BUCKET}/x?endpoint_url=http://127.0.0.1:1",
            config_kwargs={"retries": {"max_attempts": 1}},
            **CREDENTIALS,
        ) as store,
        pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1\b"),
    ):
        store.get("sha256:" + "0" * 64)
