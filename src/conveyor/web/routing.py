"""Routes as data, and the table that finds one for a request.

A :class:`Route` is everything about one endpoint: method and path template,
the handler, the action a caller's role must allow (None for the open probes),
and what the OpenAPI document says about it. Capabilities contribute lists of
them (:attr:`conveyor.capability.Capability.routes`); the app matches requests
against all of them, and the OpenAPI document is generated from the same list,
so the two cannot disagree.

Matching is by path segments: a static path is one dictionary lookup, a
template (``/v1/models/{model}/predict``) is compared segment by segment
against the templates with as many segments. A ``{param}`` matches one
non-empty segment of the ASGI ``path`` (which the server has already
percent-decoded: an encoded ``%2F`` adds a segment, so it never matches a
parameter and the request gets a 404).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from starlette.responses import Response

    from conveyor.web.pipeline import Call

__all__ = ["Endpoint", "Match", "Route", "Router"]

#: A handler: the call (request, caller, parameters) in, a response out.
Endpoint = Callable[["Call"], Awaitable["Response"]]

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
#: How many matched paths the router remembers before it starts over.
_SEEN_PATHS = 4096
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One endpoint and what is published about it."""

    method: str
    path: str
    endpoint: Endpoint
    action: str | None
    """What the caller does (``serving.predict``); its role must allow it. None: open."""
    summary: str
    body: Mapping[str, Any] | None = None
    """JSON schema of the request body (None: no body)."""
    body_media: tuple[str, ...] = ("application/json",)
    response: Mapping[str, Any] | None = None
    """JSON schema of a 200 answer (None: not described)."""
    response_media: str = "application/json"
    query: tuple[Mapping[str, Any], ...] = ()
    """OpenAPI parameter objects of the query string."""
    tags: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    """Error statuses this route answers besides the pipeline's own (401, 403, 429...)."""
    name: str = field(default="")
    on_failure: Callable[[Call, int, str], None] | None = None
    """Called with the call, the status and the error's code when this route answers an
    error (4xx or 5xx), never on success: the model server records failed predictions
    with it. It must be quick and must not raise."""

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise InvalidInputError(f"route {self.path}: unknown method {self.method!r}")
        if not self.path.startswith("/"):
            raise InvalidInputError(f"route path {self.path!r} must start with '/'")
        if not self.name:
            object.__setattr__(self, "name", f"{self.method} {self.path}")

    @property
    def params(self) -> tuple[str, ...]:
        """The names of the path's ``{parameters}``, in order."""
        return tuple(m.group(1) for s in self.path.strip("/").split("/") if (m := _PARAM.match(s)))


@dataclass(frozen=True, slots=True)
class Match:
    """What the router found: the route and its path parameters, or why not."""

    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...] = ()
    """When the path exists but not for this method: the methods it takes."""


class Router:
    """The routes of one app, compiled for matching; duplicates are refused."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._static: dict[str, dict[str, Route]] = {}
        # segment count -> [(segments, param positions, method -> route)]
        self._templates: dict[int, list[tuple[tuple[str, ...], dict[str, Route]]]] = {}
        #: Paths matched before (a server sees the same few model paths again and again).
        self._seen: dict[str, tuple[dict[str, Route] | None, dict[str, str]]] = {}
        for route in self.routes:
            segments = tuple(route.path.strip("/").split("/")) if route.path != "/" else ()
            if not route.params:
                table = self._static.setdefault(route.path, {})
            else:
                shapes = self._templates.setdefault(len(segments), [])
                known = [t for s, t in shapes if s == segments]
                if known:
                    table = known[0]
                else:
                    table = {}
                    shapes.append((segments, table))
            if route.method in table:
                raise InvalidInputError(
                    f"two routes for {route.method} {route.path}", field="routes"
                )
            table[route.method] = route

    def match(self, method: str, path: str) -> Match:
        """The route for ``method`` and ``path`` (a HEAD falls back to GET)."""
        table = self._static.get(path)
        params: dict[str, str] = {}
        if table is None:
            found = self._seen.get(path)
            if found is None:
                found = self._template(path)
                if found[0] is not None:
                    if len(self._seen) >= _SEEN_PATHS:  # many distinct paths: start over
                        self._seen.clear()
                    self._seen[path] = found
            table, params = found[0], dict(found[1])
        if table is None:
            return Match(None, {})
        route = table.get(method) or (table.get("GET") if method == "HEAD" else None)
        if route is None:
            return Match(None, params, tuple(sorted(table)))
        return Match(route, params)

    def _template(self, path: str) -> tuple[dict[str, Route] | None, dict[str, str]]:
        parts = path.strip("/").split("/")
        for segments, table in self._templates.get(len(parts), ()):
            params: dict[str, str] = {}
            for want, got in zip(segments, parts, strict=True):
                if want[:1] == "{":
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return table, params
        return None, {}
