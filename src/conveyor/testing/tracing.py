"""The spans a process finishes, kept in memory for a test to read.

::

    exporter = span_exporter()          # emptied: the spans finished from now on
    ...                                 # serve, call
    spans = exporter.get_finished_spans()

OpenTelemetry takes one global tracer provider per process, set once: the first call
installs the SDK's provider (or joins one already set) with an in-memory exporter, and
every later call, from any test module, shares it. Start the server after the call: a
Conveyor server takes its tracers when it starts, and only in a process where
OpenTelemetry is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["span_exporter"]

_EXPORTER: Any = None


def span_exporter() -> Any:
    """The process's in-memory span exporter, emptied (an ``InMemorySpanExporter``)."""
    global _EXPORTER
    if _EXPORTER is None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # none set yet: the API's proxy
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
            if trace.get_tracer_provider() is not provider:
                raise RuntimeError("another tracer provider was set in this process")
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _EXPORTER = exporter
    _EXPORTER.clear()
    return _EXPORTER
