"""scripts/test_durations.py: the per-file record that orders make test's files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test_durations.py"
spec = importlib.util.spec_from_file_location("test_durations_script_module", SCRIPT)
assert spec is not None and spec.loader is not None
durations = importlib.util.module_from_spec(spec)
spec.loader.exec_module(durations)

REPORT = """<?xml version="1.0"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.serving.test_a" name="t1" time="1.5"/>
<testcase classname="tests.serving.test_a.TestGroup" name="t2" time="2.0"/>
<testcase classname="tests.test_b" name="t3" time="0.25"/>
</testsuite></testsuites>
"""


def test_seconds_are_summed_per_file_classes_included_longest_first(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    found = durations.file_seconds(report)
    assert found == {"tests/serving/test_a.py": 3.5, "tests/test_b.py": 0.2}
    assert list(found) == ["tests/serving/test_a.py", "tests/test_b.py"]


def test_main_writes_the_record_and_refuses_a_report_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "durations.json"
    monkeypatch.setattr(durations, "RECORD", record)
    monkeypatch.setattr(durations, "ROOT", tmp_path)
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    assert durations.main([str(report)]) == 0
    assert json.loads(record.read_text())["tests/serving/test_a.py"] == 3.5

    assert durations.main([str(tmp_path / "absent.xml")]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "broken.xml").write_text("<testsuites>")
    assert durations.main([str(tmp_path / "broken.xml")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert json.loads(record.read_text())["tests/serving/test_a.py"] == 3.5  # kept
