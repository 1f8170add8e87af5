"""The HTTP layer every Conveyor server shares: routes as data, one request pipeline,
errors as JSON, metrics, and the OpenAPI document generated from the routes.

- :mod:`~conveyor.web.routing`: :class:`Route` and the table that matches requests;
- :mod:`~conveyor.web.pipeline`: the ordered chain of stages every request passes;
- :mod:`~conveyor.web.app`: the ASGI app built from the routes capabilities contribute;
- :mod:`~conveyor.web.errors`: the one mapping from errors to HTTP statuses;
- :mod:`~conveyor.web.openapi`, :mod:`~conveyor.web.metrics`.

The public names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.web.app import AppContext, Contribution, WebApp, build_app
    from conveyor.web.pipeline import Call
    from conveyor.web.routing import Route

__all__ = ["AppContext", "Call", "Contribution", "Route", "WebApp", "build_app"]

_HOMES = {
    "AppContext": ".app",
    "Contribution": ".app",
    "WebApp": ".app",
    "build_app": ".app",
    "Call": ".pipeline",
    "Route": ".routing",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
