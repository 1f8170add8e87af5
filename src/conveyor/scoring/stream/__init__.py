"""Stream scoring: a model over a NATS JetStream or Redis Streams consumer group.

``score_stream(project, "fraud", source="nats://127.0.0.1:4222/orders?subject=orders.>")``
and ``conveyor score stream``; see ``docs/scoring.md``. Importing this package imports
no broker client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.scoring.stream.scorer import (
        StreamResult,
        StreamScorer,
        StreamStats,
        score_stream,
    )
    from conveyor.scoring.stream.sinks import (
        FeatureSink,
        StreamSink,
        SubjectSink,
        TableSink,
        WebhookSink,
    )
    from conveyor.scoring.stream.source import Message, StreamSource, open_source
    from conveyor.scoring.stream.windows import Window

__all__ = [
    "FeatureSink",
    "Message",
    "StreamResult",
    "StreamScorer",
    "StreamSink",
    "StreamSource",
    "StreamStats",
    "SubjectSink",
    "TableSink",
    "WebhookSink",
    "Window",
    "open_source",
    "score_stream",
]

_HOMES = {
    "StreamResult": ".scorer",
    "StreamScorer": ".scorer",
    "StreamStats": ".scorer",
    "score_stream": ".scorer",
    "FeatureSink": ".sinks",
    "StreamSink": ".sinks",
    "SubjectSink": ".sinks",
    "TableSink": ".sinks",
    "WebhookSink": ".sinks",
    "Message": ".source",
    "StreamSource": ".source",
    "open_source": ".source",
    "Window": ".windows",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
