"""The dashboard's HTML helpers: what comes from the store is escaped, a chart's data
cannot close its script block, a login cannot redirect off the dashboard, and the CSRF
token is bound to the key."""

from __future__ import annotations

import orjson

from conveyor.dashboard.html import Markup, chart, esc, table
from conveyor.dashboard.http import _safe_next, csrf_token


def test_values_are_escaped_and_markup_is_kept() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    cell = table(("rule",), [(hostile,), (Markup("<b>ok</b>"),)])
    assert "<img" not in cell and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in cell
    assert "<b>ok</b>" in cell
    assert esc(None) == '<span class="none">-</span>' and esc(0.123456) == "0.1235"


def test_a_chart_cannot_close_its_script_block() -> None:
    drawn = chart("c", "t", [1.0], {"</script><script>alert(1)</script>": [1.0]})
    body = drawn.split('class="chart-data">', 1)[1].rsplit("</script>", 1)[0]
    assert "</script>" not in body
    assert "</script><script>alert(1)</script>" in orjson.loads(body)["series"]


def test_the_login_redirects_only_within_the_dashboard() -> None:
    assert _safe_next("/ui/rollouts/abc") == "/ui/rollouts/abc"
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/models", "/ui\\x", None):
        assert _safe_next(target) == "/ui/models"


def test_the_csrf_token_is_bound_to_the_key() -> None:
    assert csrf_token("cvk_a") == csrf_token("cvk_a") != csrf_token("cvk_b")
    assert len(csrf_token("cvk_a")) == 64
