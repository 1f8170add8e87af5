"""``conveyor score stream``: scores, windows and dead letters from the command line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from stream_support import Streams, make_project, nats_streams, rows

pytestmark = pytest.mark.nats


@pytest.fixture
def streams() -> Iterator[Streams]:
    with nats_streams() as made:
        yield made


def test_the_command_scores_a_stream_with_windows_and_reports_as_json(
    tmp_path: Path, streams: Streams
) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app

    make_project(tmp_path / "proj").close()
    events = [{**r, "ts": 1000 + r["n"]} for r in rows(120, users=3)]
    streams.publish([*events, b"oops"])
    answer = CliRunner().invoke(
        app,
        [
            "score",
            "stream",
            "lr@1",
            "--source",
            streams.url(durable=f"c{streams.name}"),
            "--output",
            streams.target("scores"),
            "--dead-letter",
            streams.target("dlq"),
            "--key-field",
            "user",
            "--time-field",
            "ts",
            "--window",
            "tumbling:1m",
            "--window",
            "session:10s:f1",
            "--late",
            streams.target("late"),
            "--max-messages",
            "121",
            "--idle-timeout",
            "5",
            "-C",
            str(tmp_path / "proj"),
            "--json",
        ],
    )
    assert answer.exit_code == 0, answer.output
    report = orjson.loads(answer.output)
    assert (report["messages"], report["scored"], report["dead_lettered"]) == (121, 120, 1)
    # windows align on the epoch: [960, 1020) and [1020, 1080) fired for each of 3 users
    assert report["windows"] == 6
    assert len(streams.read("scores")) == 120
    assert streams.read("dlq")[0]["reason"].startswith("not JSON")


def test_a_bad_window_is_refused_before_anything_is_consumed(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app

    make_project(tmp_path / "proj").close()
    answer = CliRunner().invoke(
        app,
        [
            "score",
            "stream",
            "lr@1",
            "--source",
            "nats://127.0.0.1:4222/x",
            "--window",
            "hopping:1m",
            "-C",
            str(tmp_path / "proj"),
            "--json",
        ],
    )
    assert answer.exit_code != 0
    assert "KIND:SIZE" in answer.output
