"""Server-rendered HTML with escaping: a page layout, tables, charts and reports.

No template engine (Jinja2 is not a dependency of Conveyor): every value goes through
:func:`esc` unless it is :class:`Markup` (HTML this module built). Charts are uPlot
(vendored under ``static/``) fed by a JSON block the page carries; the tables beside
them hold the same numbers, so a page reads without JavaScript too.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = [
    "Markup",
    "chart",
    "esc",
    "form_button",
    "form_inputs",
    "kv",
    "layout",
    "report_table",
    "table",
]

NAV = (
    ("models", "/ui/models", "Models"),
    ("routes", "/ui/routes", "Routes"),
    ("rollouts", "/ui/rollouts", "Rollouts"),
    ("monitor", "/ui/monitor", "Traffic"),
    ("drift", "/ui/drift", "Drift & quality"),
    ("alerts", "/ui/alerts", "Alerts"),
    ("experiments", "/ui/experiments", "Experiments"),
    ("flags", "/ui/flags", "Flags"),
    ("readiness", "/ui/readiness", "Readiness"),
)


class Markup(str):
    """HTML already escaped (built here): :func:`esc` passes it through."""


def esc(value: Any) -> Markup:
    """``value`` as HTML text: escaped, unless it is already :class:`Markup`."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup('<span class="none">-</span>')
    if isinstance(value, float):
        value = f"{value:.4g}"
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, body: Any = "", **attrs: Any) -> Markup:
    text = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None
    )
    return Markup(f"<{name}{text}>{esc(body)}</{name}>")


def link(href: str, text: Any) -> Markup:
    return tag("a", text, href=href)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    id: str | None = None,
    empty: str = "nothing yet",
) -> Markup:
    """A table; cells are escaped unless Markup."""
    head = join(tag("th", h) for h in headers)
    body = [join(tag("td", cell) for cell in row) for row in rows]
    if not body:
        return tag("p", empty, class_="empty", id=id)
    rows_html = "".join(f"<tr>{r}</tr>" for r in body)
    return Markup(
        f"<table{f' id={chr(34)}{esc(id)}{chr(34)}' if id else ''}>"
        f"<thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"
    )


def kv(items: Mapping[str, Any]) -> Markup:
    """A definition list of ``name: value``."""
    return Markup(
        '<dl class="kv">'
        + "".join(f"{tag('dt', k)}{tag('dd', v)}" for k, v in items.items())
        + "</dl>"
    )


def chart(
    id: str,
    title: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    kind: str = "line",
    unit: str = "",
) -> Markup:
    """A uPlot chart: ``x`` (epoch seconds, or bin positions with ``kind="bars"``) and
    named series; drawn by ``static/dashboard.js`` from the JSON beside it."""
    data = {"title": title, "x": list(x), "series": dict(series), "kind": kind, "unit": unit}
    payload = orjson.dumps(data).decode().replace("</", "<\\/")
    return Markup(
        f'<figure class="chart" data-chart="{esc(id)}" id="{esc(id)}">'
        f"<figcaption>{esc(title)}</figcaption>"
        f'<script type="application/json" class="chart-data">{payload}</script></figure>'
    )


def form_button(
    action: str, label: str, csrf: str, *, danger: bool = False, **fields: str
) -> Markup:
    """A POST form of one button, carrying the CSRF token."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in {"csrf": csrf, **fields}.items()
    )
    cls = "danger" if danger else "act"
    return Markup(
        f'<form method="post" action="{esc(action)}" class="inline">{hidden}'
        f'<button type="submit" class="{cls}">{esc(label)}</button></form>'
    )


def form_inputs(
    action: str,
    label: str,
    csrf: str,
    inputs: Sequence[tuple[str, str, Any]],
    *,
    danger: bool = False,
    id: str | None = None,
) -> Markup:
    """A POST form with labelled inputs ``(name, type, value)`` and one button, carrying
    the CSRF token."""
    fields = "".join(
        f'<label>{esc(name)} <input name="{esc(name)}" type="{esc(kind)}" '
        f'value="{esc("" if value is None else value)}"'
        + (' step="any" min="0" max="100" style="width:5em"' if kind == "number" else ' size="14"')
        + "></label>"
        for name, kind, value in inputs
    )
    cls = "danger" if danger else "act"
    ident = f' id="{esc(id)}"' if id else ""
    return Markup(
        f'<form method="post" action="{esc(action)}" class="inline"{ident}>'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{fields}'
        f'<button type="submit" class="{cls}">{esc(label)}</button></form>'
    )


def status_badge(status: Any) -> Markup:
    text = str(status)
    good = text in ("pass", "passed", "ok", "running", "promoted", "resolved", "ship", "True", "on")
    bad = text in (
        "fail",
        "failed",
        "error",
        "rolled_back",
        "firing",
        "aborted",
        "do_not_ship",
        "killed",
    )
    cls = "good" if good else "bad" if bad else "neutral"
    return tag("span", text, class_=f"badge {cls}")


def report_table(report: Any, *, id: str | None = None) -> Markup:
    """A :class:`conveyor.checks.result.Report`'s checks: name, status, observed, threshold,
    detail."""
    rows = [
        (c.name, status_badge(c.status), _compact(c.observed), _compact(c.threshold), c.detail)
        for c in report.checks
    ]
    return table(("check", "status", "observed", "threshold", "detail"), rows, id=id)


def _compact(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()[:200]
    return value


def layout(title: str, body: Any, *, active: str = "", who: str = "", csrf: str = "") -> bytes:
    """The whole page: head (uPlot's CSS and script, served by the app), navigation, body."""
    nav = join(
        tag("a", label, href=href, class_="active" if key == active else None)
        for key, href, label in NAV
    )
    logout = form_button("/ui/logout", "Log out", csrf) if csrf else Markup("")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · Conveyor</title>
<link rel="stylesheet" href="/ui/static/uPlot.min.css">
<link rel="stylesheet" href="/ui/static/dashboard.css">
<script src="/ui/static/uPlot.iife.min.js" defer></script>
<script src="/ui/static/dashboard.js" defer></script>
</head><body>
<header><span class="brand">Conveyor</span><nav>{nav}</nav>
<span class="who">{esc(who)}</span>{logout}</header>
<main><h1>{esc(title)}</h1>{esc(body)}</main>
</body></html>"""
    return page.encode()
