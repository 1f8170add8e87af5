"""scripts/stream_demo.py (the quickstart's stream step) runs on the local NATS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]


def test_the_stream_demo_scores_100_events_and_dead_letters_2() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stream_demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "102 messages: 100 scored" in done.stdout
    assert "2 dead-lettered" in done.stdout
