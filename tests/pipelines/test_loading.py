"""Targets: module:attribute and path/file.py:attribute, and what goes wrong with them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.pipelines import Pipeline, PipelineDefinitionError, load_pipeline, load_pipelines
from conveyor.pipelines.loading import split_target


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    pkg = root / f"flows_{tmp_path.name.replace('-', '_')}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (pkg / "daily.py").write_text(
        textwrap.dedent(
            """
            from conveyor.pipelines import Pipeline
            from .helpers import double

            sales = Pipeline("sales")
            sales.add_step(lambda ctx: double(2), name="extract", outputs="n")
            alias = sales  # the same pipeline twice is listed once

            class Registry:
                inner = Pipeline("inner")

            not_a_pipeline = 42
            """
        )
    )
    return root


def test_module_targets_with_and_without_attribute(package: Path) -> None:
    module = f"{next(p.name for p in package.iterdir())}.daily"
    [sales] = load_pipelines(module, search_path=[package])
    assert isinstance(sales, Pipeline) and sales.name == "sales"
    assert load_pipeline(f"{module}:sales") is sales
    assert load_pipeline(f"{module}:Registry.inner").name == "inner"
    with pytest.raises(InvalidInputError, match="is a int, not a Pipeline"):
        load_pipeline(f"{module}:not_a_pipeline")
    with pytest.raises(
        NotFoundError, match=r"has no attribute 'nope' \(pipelines it defines: sales"
    ):
        load_pipeline(f"{module}:nope")
    with pytest.raises(NotFoundError, match="no module named 'no_such_module_here'"):
        load_pipelines("no_such_module_here")


def test_file_targets_import_their_neighbours(tmp_path: Path) -> None:
    (tmp_path / "shared_rules_for_loading_test.py").write_text("LIMIT = 7\n")
    flow = tmp_path / "flow.py"
    flow.write_text(
        "from conveyor.pipelines import Pipeline\n"
        "from shared_rules_for_loading_test import LIMIT\n"
        "a = Pipeline('a', description=str(LIMIT))\n"
        "b = Pipeline('b')\n"
    )
    assert [p.name for p in load_pipelines(str(flow))] == ["a", "b"]
    assert load_pipeline(f"{flow}:a").description == "7"
    assert load_pipeline(f"{flow}:a") is load_pipeline(f"{flow}:a")  # imported once
    with pytest.raises(InvalidInputError, match="defines several pipelines"):
        load_pipeline(str(flow))


def test_broken_files_and_definitions_are_clear(tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("def broken(:\n")
    with pytest.raises(PipelineDefinitionError, match=r"importing .*syntax.py failed: SyntaxError"):
        load_pipelines(str(tmp_path / "syntax.py"))
    (tmp_path / "cycle.py").write_text(
        "from conveyor.pipelines import Pipeline\n"
        "p = Pipeline('p')\n"
        "p.add_step(lambda ctx: 1, name='a', outputs='a')\n"
        "p.add_step(lambda ctx: 1, name='b', outputs='a')\n"
    )
    with pytest.raises(PipelineDefinitionError, match="already produced by step 'a'"):
        load_pipelines(str(tmp_path / "cycle.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(NotFoundError, match="defines no Pipeline"):
        load_pipelines(str(tmp_path / "empty.py"))


def test_split_target() -> None:
    assert split_target("pkg.mod:obj") == ("pkg.mod", "obj")
    assert split_target("pkg.mod:obj.attr") == ("pkg.mod", "obj.attr")
    assert split_target("dir/file.py") == ("dir/file.py", None)
    assert split_target(r"C:\flows\daily.py") == (r"C:\flows\daily.py", None)
    assert split_target(r"C:\flows\daily.py:sales") == (r"C:\flows\daily.py", "sales")
    with pytest.raises(InvalidInputError, match="a pipeline target is"):
        split_target("  ")
