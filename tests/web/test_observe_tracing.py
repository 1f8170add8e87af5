"""Spans only where tracing was configured: a process that never imported OpenTelemetry
(no SDK, no ``opentelemetry-instrument``) gets no tracer, so no no-op span per request."""

from __future__ import annotations

import sys

import pytest

from conveyor.web.metrics import WebMetrics
from conveyor.web.pipeline import Observe


def test_no_tracer_unless_the_process_imported_opentelemetry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import opentelemetry.trace  # noqa: F401  (what a configured process has done)

    observe = Observe(WebMetrics())
    observe.start()
    assert observe.tracer is not None
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    observe.start()
    assert observe.tracer is None
    assert "opentelemetry.trace" not in sys.modules  # and it did not import it either
