"""The registry package loads nothing heavy until used, and exports what it lists."""

from __future__ import annotations

import conveyor.registry as registry
from fresh_python import loaded_of


def test_public_names_resolve() -> None:
    assert sorted(registry.__all__) == sorted(dir(registry))
    for name in registry.__all__:
        assert getattr(registry, name).__name__ == name


def test_importing_the_registry_loads_no_ml_library_or_orm() -> None:
    heavy = ("pyarrow", "pandas", "sklearn", "numpy", "sqlalchemy", "xgboost", "onnx")
    code = "import conveyor.registry as r\nr.Registry, r.Signature, r.PythonModel, r.ModelVersion\n"
    assert loaded_of(heavy, code) == []
