"""The dashboard's routes under ``/ui``: pages (role viewer) and actions (their own roles).

Authentication: the login form takes an API key and the answer sets it in the cookie
``conveyor_ui`` (HttpOnly, SameSite=Strict, Path=/ui, Secure when the request came over
TLS). The cookie holds the key itself, not a session: there is no server-side session
to keep, revoking or expiring the key logs the browser out at its next request, and the
key's role decides exactly as it does for the API (the one access rule,
:meth:`conveyor.governance.access.Access.authorize_async`). Script cannot read the
cookie (HttpOnly), and another site cannot make the browser send it (SameSite=Strict).

The routes are declared open to the request pipeline (``action=None``: the pipeline only
reads ``Authorization``/``x-api-key`` headers, and the API's routes never accept the
cookie, so no JSON route is exposed to cross-site requests) and each handler checks the
cookie's key itself: ``dashboard.view`` (viewer) for a page, and the API's own action for
each button: ``serving.rollback`` (roll back a route), ``rollouts.manage`` (pause, resume,
abort), ``alerts.manage`` (acknowledge). Every POST form carries a CSRF token, an HMAC of
the key (so it is bound to the logged-in key and needs no server state); a POST without
a matching token gets 403 ``csrf`` and changes nothing, as does one without the role.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from starlette.responses import Response

from conveyor.errors import (
    AuthenticationError,
    ConveyorError,
    InvalidInputError,
    PermissionDeniedError,
)
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from conveyor.governance.access import Caller
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["COOKIE", "csrf_token", "routes"]

COOKIE = "conveyor_ui"
#: Seconds after start before the server decodes the last day's rollups in the background.
WARM_AFTER_S = 5.0
VIEW = "dashboard.view"
_STATIC = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "uPlot.LICENSE": "text/plain",
}
log = logging.getLogger(__name__)
_FORM = ("application/x-www-form-urlencoded",)


def csrf_token(key: str) -> str:
    """The CSRF token of the forms shown to the holder of ``key``."""
    return hmac.new(key.encode(), b"conveyor-dashboard-csrf", hashlib.sha256).hexdigest()


def _html(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    merged = {
        "cache-control": "no-store",
        "x-frame-options": "DENY",
        "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        **(headers or {}),
    }
    return Response(body, status, headers=merged, media_type="text/html; charset=utf-8")


def _redirect(to: str, headers: dict[str, str] | None = None) -> Response:
    merged = {"location": to, "cache-control": "no-store", **(headers or {})}
    return Response(b"", 303, headers=merged)


def _login_page(error: str | None = None, status: int = 200, next_: str = "/ui/models") -> Response:
    from conveyor.dashboard.html import esc

    message = f'<p class="error" id="login-error">{esc(error)}</p>' if error else ""
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Log in · Conveyor</title><link rel="stylesheet" href="/ui/static/dashboard.css"></head>
<body><form class="login" method="post" action="/ui/login">
<h1>Conveyor dashboard</h1>{message}
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" autofocus required>
<input type="hidden" name="next" value="{esc(next_)}">
<button type="submit">Log in</button>
<p class="empty">The key stays in an HttpOnly cookie; a viewer key can look, a deployer key can
act.</p></form></body></html>"""
    return _html(body.encode(), status)


def routes(context: AppContext) -> Contribution:
    from conveyor.dashboard import pages
    from conveyor.dashboard.html import Markup, layout, tag
    from conveyor.governance.access import Access

    project = context.project
    access = Access.for_server(project.keys, getattr(context.state, "auth", "required"))

    async def caller_of(call: Call, action: str) -> tuple[Caller, str]:
        key = call.request.cookies.get(COOKIE) or call.token or ""
        caller = await access.authorize_async(key or None, action)
        return caller, key

    def page(
        name: str,
        title: Callable[[Call], str],
        render: Callable[[Call, str], Markup],
    ) -> Callable[[Call], Awaitable[Response]]:
        async def endpoint(call: Call) -> Response:
            try:
                caller, key = await caller_of(call, VIEW)
            except AuthenticationError:
                target = quote(call.request.url.path, safe="/")
                return _redirect(f"/ui/login?next={target}")
            except PermissionDeniedError as exc:
                return _html(layout("Forbidden", tag("p", exc.message, class_="error")), 403)
            csrf = csrf_token(key) if key else ""
            body = await asyncio.to_thread(render, call, csrf)
            notice = call.request.query_params.get("done")
            if notice:
                body = Markup(tag("p", notice, class_="notice", id="notice") + body)
            refused = call.request.query_params.get("error")
            if refused:
                body = Markup(tag("p", refused, class_="error", id="error") + body)
            return _html(layout(title(call), body, active=name, who=caller.actor, csrf=csrf))

        return endpoint

    def act(
        action: str, run: Callable[[Call, str, dict[str, str]], Any], back: Callable[[Call], str]
    ) -> Any:
        async def endpoint(call: Call) -> Response:
            form = _form(await call.body())
            try:
                caller, key = await caller_of(call, action)
            except AuthenticationError:
                return _redirect("/ui/login")
            except PermissionDeniedError as exc:
                return _html(
                    layout("Forbidden", tag("p", exc.message, class_="error", id="forbidden")), 403
                )
            # without a key (a server with auth disabled) there is nothing to bind a token
            # to: the buttons need a logged-in key even then
            if not key or not hmac.compare_digest(form.get("csrf", ""), csrf_token(key)):
                return _html(
                    layout(
                        "Forbidden",
                        tag("p", "missing or wrong CSRF token", class_="error", id="forbidden"),
                    ),
                    403,
                )
            try:
                done = await asyncio.to_thread(run, call, caller.actor, form)
            except (AuthenticationError, PermissionDeniedError):
                raise
            except ConveyorError as exc:
                # a refused change (bad input, a missing or taken name): back to the page,
                # which says why; nothing changed
                return _redirect(f"{back(call)}?error={quote(exc.message)}")
            return _redirect(f"{back(call)}?done={quote(str(done))}")

        return endpoint

    def _audit_login(ok: bool, actor: str | None, reason: str | None) -> None:
        from conveyor.dashboard.events import DASHBOARD_LOGIN

        project.events.record(DASHBOARD_LOGIN, payload={"ok": ok, "reason": reason}, actor=actor)

    async def login_form(call: Call) -> Response:
        return _login_page(next_=_safe_next(call.request.query_params.get("next")))

    async def login(call: Call) -> Response:
        form = _form(await call.body())
        key = form.get("key", "").strip()
        try:
            caller = await access.authorize_async(key or None, VIEW)
        except (AuthenticationError, PermissionDeniedError) as exc:
            reason = str(exc.context.get("reason") or exc.code)
            await asyncio.to_thread(_audit_login, False, None, reason)
            return _login_page(exc.message, 401, _safe_next(form.get("next")))
        await asyncio.to_thread(_audit_login, True, caller.actor, None)
        secure = "; Secure" if call.scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={key}; HttpOnly; SameSite=Strict; Path=/ui{secure}"
        return _redirect(_safe_next(form.get("next")), {"set-cookie": cookie})

    async def logout(call: Call) -> Response:
        cookie = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"
        return _redirect("/ui/login", {"set-cookie": cookie})

    async def home(call: Call) -> Response:
        return _redirect("/ui/models")

    async def static(call: Call) -> Response:
        name = call.params["name"]
        media = _STATIC.get(name)
        if media is None:
            return Response(b"not found", 404, media_type="text/plain")
        data = await asyncio.to_thread(
            resources.files("conveyor.dashboard").joinpath("static", name).read_bytes
        )
        return Response(data, media_type=media, headers={"cache-control": "max-age=3600"})

    def since_of(call: Call, name: str, default: str) -> Any:
        from conveyor.durations import parse_duration

        return parse_duration(call.request.query_params.get(name, default), name)

    def until_of(call: Call) -> Any:
        """``until``: an ISO 8601 time (naive: UTC); default now."""
        from datetime import UTC, datetime

        text = call.request.query_params.get("until")
        if not text:
            return None
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(
                f"until must be an ISO 8601 time, got {text!r}", field="until"
            ) from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    def rollback(call: Call, actor: str, form: dict[str, str]) -> str:
        model = call.params["model"]
        state = pages._route_store(project).rollback(model, actor=actor, reason="dashboard")
        return f"{model} rolled back to revision {state.revision}"

    def steer(name: str) -> Callable[[Call, str, dict[str, str]], str]:
        def run(call: Call, actor: str, form: dict[str, str]) -> str:
            ref, rollouts = call.params["ref"], project.rollouts
            if name == "pause":
                done = rollouts.pause(ref, actor=actor, reason="dashboard")
            elif name == "resume":
                done = rollouts.resume(ref, actor=actor)
            else:
                done = rollouts.abort(ref, actor=actor, reason="dashboard")
            return f"rollout {done.model} v{done.candidate}: {done.status}"

        return run

    def ack(call: Call, actor: str, form: dict[str, str]) -> str:
        # as conveyor.monitoring.alerts.cli.acknowledge does (that module is the CLI's:
        # importing it from a server thread loads the command tree)
        from conveyor.monitoring.alerts.events import ALERT_ACKNOWLEDGED
        from conveyor.monitoring.alerts.store import SqlStore

        incident = SqlStore(project.store).ack(call.params["alert_id"], by=actor)
        project.events.record(
            ALERT_ACKNOWLEDGED,
            subject=incident.model,
            payload={"alert_id": incident.id, "rule": incident.rule},
            actor=actor,
        )
        return f"alert {incident.rule} acknowledged"

    def flag_change(name: str) -> Callable[[Call, str, dict[str, str]], str]:
        def run(call: Call, actor: str, form: dict[str, str]) -> str:
            model, flag, flags = call.params["model"], call.params["name"], project.flags
            reason = form.get("reason") or "dashboard"
            if name == "ramp":
                done = flags.ramp(
                    model, flag, _number(form.get("percent"), "percent"), actor=actor, reason=reason
                )
            elif name == "target":
                done = flags.target(model, flag, form.get("match", ""), actor=actor, reason=reason)
            elif name == "kill":
                done = flags.kill(model, flag, actor=actor, reason=reason)
            else:
                done = flags.delete(model, flag, actor=actor, reason=reason)
                return f"flag {flag} of {model} deleted"
            return (
                f"flag {flag} of {model}: {done['state']}, {done['percent']:g}% of "
                f"{_targets(done['match'])}"
            )

        return run

    def flag_create(call: Call, actor: str, form: dict[str, str]) -> str:
        version = form.get("version", "").strip().removeprefix("v")
        if not version.isdigit():
            raise InvalidInputError(
                f"version is a version number, got {form.get('version')!r}", field="version"
            )
        done = project.flags.create(
            form.get("model", "").strip(),
            form.get("name", "").strip(),
            version=int(version),
            match=form.get("match", ""),
            percent=_number(form.get("percent") or "0", "percent"),
            actor=actor,
            reason="dashboard",
        )
        return f"flag {done['name']} of {done['model']} created: {done['percent']:g}%"

    def model_param(call: Call) -> str | None:
        return call.request.query_params.get("model") or None

    ui = ("dashboard",)
    pages_ = [
        ("/ui/models", "models", lambda c: "Models", lambda c, t: pages.models_page(project)),
        (
            "/ui/models/{model}",
            "models",
            lambda c: f"Model {c.params['model']}",
            lambda c, t: pages.model_page(project, c.params["model"]),
        ),
        (
            "/ui/routes",
            "routes",
            lambda c: "Live routes",
            lambda c, t: pages.routes_page(project, t),
        ),
        (
            "/ui/rollouts",
            "rollouts",
            lambda c: "Rollouts",
            lambda c, t: pages.rollouts_page(project, t),
        ),
        (
            "/ui/rollouts/{ref}",
            "rollouts",
            lambda c: "Rollout",
            lambda c, t: pages.rollout_page(project, c.params["ref"], t),
        ),
        (
            "/ui/monitor",
            "monitor",
            lambda c: "Traffic: throughput, latency, errors",
            lambda c, t: pages.monitor_page(
                project,
                model_param(c),
                since_of(c, "since", "1h"),
                since_of(c, "window", "1m"),
                until_of(c),
                exact=c.request.query_params.get("exact") in ("1", "true", "yes"),
            ),
        ),
        (
            "/ui/drift",
            "drift",
            lambda c: "Drift and quality",
            lambda c, t: pages.drift_page(project, model_param(c)),
        ),
        ("/ui/alerts", "alerts", lambda c: "Alerts", lambda c, t: pages.alerts_page(project, t)),
        (
            "/ui/experiments",
            "experiments",
            lambda c: "Experiments",
            lambda c, t: pages.experiments_page(project),
        ),
        (
            "/ui/experiments/{name}",
            "experiments",
            lambda c: f"Experiment {c.params['name']}",
            lambda c, t: pages.experiment_page(project, c.params["name"]),
        ),
        (
            "/ui/flags",
            "flags",
            lambda c: "Feature flags",
            lambda c, t: pages.flags_page(project, t, since_of(c, "since", "24h"), until_of(c)),
        ),
        (
            "/ui/flags/{model}/{name}",
            "flags",
            lambda c: f"Flag {c.params['name']} of {c.params['model']}",
            lambda c, t: pages.flag_page(project, c.params["model"], c.params["name"], t),
        ),
        (
            "/ui/readiness",
            "readiness",
            lambda c: "Production readiness",
            lambda c, t: pages.readiness_page(project),
        ),
    ]
    found: list[Route] = [
        Route(
            "GET",
            "/ui",
            home,
            None,
            "The dashboard (redirects to its models page)",
            response_media="text/html",
            tags=ui,
        ),
        Route(
            "GET",
            "/ui/login",
            login_form,
            None,
            "The dashboard's login form",
            response_media="text/html",
            tags=ui,
        ),
        Route(
            "POST",
            "/ui/login",
            login,
            None,
            "Log in with an API key (kept in an HttpOnly, SameSite=Strict cookie)",
            body_media=_FORM,
            response_media="text/html",
            tags=ui,
            errors=(401,),
        ),
        Route(
            "POST",
            "/ui/logout",
            logout,
            None,
            "Log out (the cookie is cleared)",
            body_media=_FORM,
            response_media="text/html",
            tags=ui,
        ),
        Route(
            "GET",
            "/ui/static/{name}",
            static,
            None,
            "The dashboard's scripts and styles",
            response_media="text/plain",
            tags=ui,
            errors=(404,),
        ),
    ]
    for path, name, title, render in pages_:
        found.append(
            Route(
                "GET",
                path,
                page(name, title, render),
                None,
                f"Dashboard page (cookie key, role viewer: {VIEW})",
                response_media="text/html",
                tags=ui,
                errors=(303, 403, 404),
            )
        )
    actions: list[
        tuple[str, str, Callable[[Call, str, dict[str, str]], Any], Callable[[Call], str], str]
    ] = [
        (
            "/ui/routes/{model}/rollback",
            "serving.rollback",
            rollback,
            lambda c: "/ui/routes",
            "Roll a route back to its previous policy",
        ),
        (
            "/ui/alerts/{alert_id}/ack",
            "alerts.manage",
            ack,
            lambda c: "/ui/alerts",
            "Acknowledge an alert",
        ),
    ]
    actions.append(
        ("/ui/flags", "flags.manage", flag_create, lambda c: "/ui/flags", "Create a feature flag")
    )
    for name in ("ramp", "target", "kill", "delete"):
        actions.append(
            (
                f"/ui/flags/{{model}}/{{name}}/{name}",
                "flags.manage",
                flag_change(name),
                lambda c: "/ui/flags",
                f"{name.capitalize()} a feature flag",
            )
        )
    for name in ("pause", "resume", "abort"):
        actions.append(
            (
                f"/ui/rollouts/{{ref}}/{name}",
                "rollouts.manage",
                steer(name),
                lambda c: f"/ui/rollouts/{c.params['ref']}",
                f"{name.capitalize()} a rollout",
            )
        )
    for path, action, run, back, summary in actions:
        found.append(
            Route(
                "POST",
                path,
                act(action, run, back),
                None,
                f"{summary} (cookie key and CSRF token; role of {action})",
                body_media=_FORM,
                response_media="text/html",
                tags=ui,
                errors=(303, 403, 404),
            )
        )
    warming = threading.Event()

    def warm() -> None:
        """Decode the last day's rollups a few seconds after start (off the start-up and
        the first requests' path), so the first traffic page does not decode them."""
        from conveyor.monitoring import rollups

        if warming.wait(WARM_AFTER_S):
            return
        try:
            rollups.warm(project, stop=warming.is_set)
        except Exception:  # a store or file gone at shutdown: the pages decode on demand
            log.debug("warming the rollups failed", exc_info=True)

    async def startup() -> None:
        threading.Thread(target=warm, name="conveyor-dashboard-warm", daemon=True).start()

    async def shutdown() -> None:
        warming.set()

    return Contribution(found, startup=startup, shutdown=shutdown)


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"the form could not be read: {exc}", field="body") from None
    return {k: v[0] for k, v in parsed.items()}


def _number(text: str | None, field: str) -> float:
    try:
        return float(text or "")
    except ValueError:
        raise InvalidInputError(f"{field} is a number, got {text!r}", field=field) from None


def _targets(match: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(match.items())) or "every request"


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard (no open redirect to another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/models"
