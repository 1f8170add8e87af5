"""`conveyor serve --ssl-certfile --ssl-keyfile` (docs/security.md): HTTPS with the given
certificate, and a clear refusal when one of the two is missing."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_support import conveyor_serve, linear_project

from conveyor.testing.wait import wait_until


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_serve_speaks_https_with_the_certificate_it_is_given(tmp_path: Path) -> None:
    project = linear_project(tmp_path, name="tls", serving="{auth: disabled}")
    project.close()
    cert, key = _certificate(tmp_path)
    process, port = conveyor_serve(
        tmp_path, "-C", str(tmp_path), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:

        def live() -> bool:
            assert process.poll() is None, "conveyor serve exited"
            try:
                return httpx.get(f"https://127.0.0.1:{port}/v2/health/live", verify=trust,
                                 timeout=2).status_code == 200  # fmt: skip
            except httpx.TransportError:
                return False

        wait_until(live, message="conveyor serve answers over HTTPS", timeout=60)
        answer = httpx.post(
            f"https://127.0.0.1:{port}/v1/models/m/predict",
            json={"records": [{"a": 1.0, "b": 2.0}]},
            verify=trust,
        )
        assert answer.status_code == 200 and answer.json()["predictions"] == [pytest.approx(3.0)]
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
        except httpx.TransportError:
            pass  # the TLS listener drops a plain-HTTP connection: not served in clear
        else:
            assert plain.status_code != 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_certificate_without_its_key_is_refused_in_one_line(tmp_path: Path) -> None:
    linear_project(tmp_path, name="tls", serving="{auth: disabled}").close()
    cert, _ = _certificate(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "serve", "-C", str(tmp_path),
         "--ssl-certfile", str(cert)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "needs both a certificate and its key" in done.stderr and "Traceback" not in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "serve", "-C", str(tmp_path),
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "nope.key")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 1 and "ssl_keyfile: no file at" in missing.stderr
