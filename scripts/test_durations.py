"""Record each test file's seconds from a JUnit XML report into ``tests/durations.json``.

``make test`` hands whole files to its two workers (``--dist loadfile``), longest first by
this record (``tests/conftest.py``), so that a file of minutes never starts last while the
other worker idles. Refresh it after a change that moves a file's time by much::

    make test PYTEST_ARGS='--junitxml=/tmp/junit.xml'
    .venv/bin/python scripts/test_durations.py /tmp/junit.xml

A file missing from the record (a new one) counts as 0 s and is scheduled after the rest.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "durations.json"


def file_seconds(report: Path) -> dict[str, float]:
    """``tests/x/test_y.py`` -> seconds (setup, call and teardown of its tests), rounded."""
    seconds: Counter[str] = Counter()
    for case in ET.parse(report).iter("testcase"):
        parts = case.get("classname", "").split(".")
        while parts and not parts[-1].startswith("test_"):
            parts.pop()  # a class inside the module
        if parts:
            seconds["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {name: round(s, 1) for name, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: scripts/test_durations.py JUNIT_XML", file=sys.stderr)
        return 2
    try:
        record = file_seconds(Path(argv[0]))
    except (OSError, ET.ParseError) as exc:
        print(f"{argv[0]}: cannot read the JUnit report: {exc}", file=sys.stderr)
        return 1
    if not record:
        print(f"{argv[0]}: no test cases found", file=sys.stderr)
        return 1
    RECORD.write_text(json.dumps(record, indent=0) + "\n")
    print(f"{RECORD.relative_to(ROOT)}: {len(record)} files, {sum(record.values()):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
