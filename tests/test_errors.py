from __future__ import annotations

import ast
import inspect

import conveyor
from conveyor import errors


def test_errors_module_imports_only_the_standard_library() -> None:
    import sys

    tree = ast.parse(inspect.getsource(errors))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            for name in names:
                assert name and name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, name


def test_every_error_has_a_distinct_stable_code_and_is_drawn_in_the_docstring() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.ConveyorError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert cls.__name__ in errors.__doc__
        assert f'"{cls.code}"' in errors.__doc__


def test_builtin_mixins_keep_existing_except_clauses_working() -> None:
    assert issubclass(errors.NotFoundError, LookupError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.ProjectNotFoundError, FileNotFoundError)
    assert issubclass(errors.BackendUnavailableError, ConnectionError)
    assert issubclass(errors.MissingDependencyError, ImportError)


def test_to_dict_carries_code_message_and_context() -> None:
    exc = errors.NotFoundError("run abc not found", run_id="abc")
    assert exc.to_dict() == {"code": "not_found", "message": "run abc not found", "run_id": "abc"}
    assert str(exc) == "run abc not found"


def test_public_names_resolve() -> None:
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name
    assert sorted(conveyor.__all__) == sorted(set(conveyor.__all__))
