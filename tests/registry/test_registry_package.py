"""The registry package loads nothing heavy until used, and exports what it lists."""

from __future__ import annotations

import subprocess
import sys

import conveyor.registry as registry


def test_public_names_resolve() -> None:
    assert sorted(registry.__all__) == sorted(dir(registry))
    for name in registry.__all__:
        assert getattr(registry, name).__name__ == name


def test_importing_the_registry_loads_no_ml_library_or_orm() -> None:
    code = (
        "import sys, conveyor.registry as r\n"
        "r.Registry, r.Signature, r.PythonModel, r.ModelVersion\n"
        "heavy = ('pyarrow', 'pandas', 'sklearn', 'numpy', 'sqlalchemy', 'xgboost', 'onnx')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
