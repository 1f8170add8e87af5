"""conveyor._entry_points reads what importlib.metadata reads, without importing it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conveyor import _entry_points
from conveyor._entry_points import EntryPoint, _from_folders, _from_stdlib


def _dist(site: Path, folder: str, text: str) -> None:
    dist = site / folder
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {folder.split('-')[0]}\n")
    (dist / "entry_points.txt").write_text(text)


def test_the_installed_entry_points_are_the_standard_librarys() -> None:
    assert set(_entry_points.installed()) == set(_from_stdlib())
    assert {ep.name for ep in _entry_points.entry_points("conveyor.capabilities")} >= {
        "data",
        "serving",
    }


def test_the_first_distribution_of_a_name_wins_and_comments_are_skipped(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _dist(first, "my_pkg-1.0.dist-info", "# a comment\n[grp]\nx = mod:obj\n\n[other]\ny=m\n")
    _dist(second, "My.Pkg-2.0.dist-info", "[grp]\nx = shadowed:obj\n")
    _dist(second, "legacy.egg-info", "[grp]\nz = legacy.mod:attr.inner [extra]\n")
    found = _from_folders([str(first), str(second), str(tmp_path / "missing")])
    assert found == [
        EntryPoint("x", "mod:obj", "grp"),
        EntryPoint("y", "m", "other"),
        EntryPoint("z", "legacy.mod:attr.inner [extra]", "grp"),
    ]


def test_a_zip_on_the_path_hands_the_read_to_the_standard_library(tmp_path: Path) -> None:
    archive = tmp_path / "eggs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[grp]\nq = json:dumps\n")
    assert _from_folders([str(archive)]) is None
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from conveyor._entry_points import entry_points as e;"
            "print([x.load().__name__ for x in e('grp')])",
        ],
        env={"PYTHONPATH": str(archive), "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "['dumps']"


def test_load_resolves_dotted_attributes_and_refuses_a_malformed_value() -> None:
    assert EntryPoint("d", "os.path:join", "g").load() is __import__("os").path.join
    assert EntryPoint("d", "os:path.join [x]", "g").load() is __import__("os").path.join
    with pytest.raises(ValueError, match="malformed"):
        EntryPoint("d", "not a value!", "g").load()
