"""``GET /meter/``: the spend page, and its sign-in (``/meter/login``, ``/meter/logout``) and static
files (``/meter/static/…``, shipped in the package: the page loads nothing from elsewhere).

Server-rendered with Jinja2 (autoescaping on), so every table reads without JavaScript; a small
script draws the two charts with the vendored Chart.js. Every response carries a strict
Content-Security-Policy (``'self'`` only, no inline script or style) and ``Cache-Control:
no-store``. Sign-in: the admin token posted once from the form becomes a signed cookie
(:mod:`proxy.admin.session`); the form's POST is refused unless it comes from the page's own
origin (``Origin`` / ``Sec-Fetch-Site``), on top of the cookie's ``SameSite=Strict``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from pricing.whatif import LeverError, parse_levers
from proxy.admin import session
from proxy.admin.admin_api import ADMIN_CLOCK_KEY, ADMIN_ENGINE_KEY, utc_now
from proxy.admin.admin_auth import PAGE_ROUTE_NAME, PUBLIC_ROUTE_PREFIX, SIGN_IN_PATH
from proxy.admin.page.data import (
    DEFAULT_LEVERS,
    DEFAULT_PRESET,
    PRESETS,
    BudgetView,
    PageInputs,
    gather,
    preset_window,
)
from proxy.admin.prices_api import PRICEBOOK_KEY
from proxy.admin.reporting import ReportError, resolve_window

if TYPE_CHECKING:
    import jinja2

PAGE_TOKEN_KEY: Final[web.AppKey[str | None]] = web.AppKey("meter_page_token")
PAGE_BUDGETS_KEY: Final = web.AppKey("meter_page_budgets", BudgetView)

STATIC_FILES: Final[dict[str, str]] = {
    "chart.umd.min.js": "application/javascript",
    "page.js": "application/javascript",
    "page.css": "text/css",
    "nojs.css": "text/css",
    "chart.js-LICENSE.md": "text/plain",
}
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
MAX_FORM_BYTES: Final = 16 * 1024


@functools.cache
def _env() -> jinja2.Environment:
    """Built when the page is first rendered: a proxy nobody opens the page of never imports
    Jinja2 (~4 MiB, issue 16's memory budget)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("proxy.admin.page", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _static_bytes() -> dict[str, bytes]:
    folder = resources.files("proxy.admin.page") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


_STATIC: dict[str, bytes] | None = None


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def render(template: str, **values: Any) -> str:
    return _env().get_template(template).render(**values)


def _now(request: web.Request) -> datetime:
    clock: Callable[[], datetime] = request.app.get(ADMIN_CLOCK_KEY, utc_now)
    return clock()


async def page_handler(request: web.Request) -> web.Response:
    query = request.query
    now = _now(request)
    preset: str | None = query.get("window") or None
    try:
        if query.get("since") or query.get("until"):
            preset = None
            window = resolve_window(query.get("since") or None, query.get("until") or None, now)
        else:
            preset = preset or DEFAULT_PRESET
            if preset not in PRESETS:
                raise ReportError(f"window must be one of {', '.join(PRESETS)}")
            window = preset_window(preset, now)
        texts = query.getall("what_if", []) or list(DEFAULT_LEVERS)
        levers = parse_levers(list(texts), request.app[PRICEBOOK_KEY])
    except (ReportError, LeverError) as exc:
        body = render("error.html.j2", message=str(exc), signed_in=_signed_in(request))
        return _html(body, status=400)
    values = await gather(
        request.app[ADMIN_ENGINE_KEY],
        request.app[PRICEBOOK_KEY],
        request.app.get(PAGE_BUDGETS_KEY, BudgetView()),
        PageInputs(window, preset, levers, now),
    )
    return _html(render("page.html.j2", signed_in=_signed_in(request), **values))


def _signed_in(request: web.Request) -> bool:
    return request.app.get(PAGE_TOKEN_KEY) is not None


def same_origin(request: web.Request) -> bool:
    """A form POST from the page itself. Browsers say where a request comes from in
    ``Sec-Fetch-Site`` (a header pages cannot set): it must be ``same-origin``. Without it,
    ``Origin`` must name this host. Clients that send neither are not browsers (curl, scripts):
    there is no cross-site request to forge from them."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc == request.host


async def login_form(request: web.Request) -> web.Response:
    token = request.app.get(PAGE_TOKEN_KEY)
    return _html(render("login.html.j2", message=None, open_page=token is None, signed_in=False))


async def login_submit(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        body = render(
            "login.html.j2",
            message="This sign-in did not come from this page; open the page and sign in there.",
            open_page=False,
            signed_in=False,
        )
        return _html(body, status=403)
    token = request.app.get(PAGE_TOKEN_KEY)
    if token is None:
        return see_other("/meter/")
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return _html(
            render(
                "login.html.j2", message="The form is too large.", open_page=False, signed_in=False
            ),
            status=413,
        )
    try:
        form = await request.post()
    except (ValueError, web.HTTPException):
        form = {}  # type: ignore[assignment]
    given = form.get("token")
    if not isinstance(given, str) or not session.token_equals(given.strip(), token):
        body = render(
            "login.html.j2",
            message="That is not the admin token. Check it and try again.",
            open_page=False,
            signed_in=False,
        )
        return _html(body, status=401)
    value, max_age = session.issue(token, datetime.now(UTC))
    response = see_other("/meter/")
    response.set_cookie(
        session.COOKIE_NAME,
        value,
        max_age=max_age,
        path="/meter",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        return _html(
            render("error.html.j2", message="Sign out from the page itself.", signed_in=False),
            status=403,
        )
    response = see_other(SIGN_IN_PATH)
    response.del_cookie(session.COOKIE_NAME, path="/meter")
    return response


async def page_redirect(request: web.Request) -> web.Response:
    """``/meter`` -> ``/meter/`` (308), query string as sent. Public: it reveals nothing, and the
    page it points to asks for the token (or the cookie) itself, so a browser without either
    lands on the sign-in form rather than a JSON 401."""
    query = request.rel_url.raw_query_string  # percent-encoded as received: no CR/LF, no //host
    location = f"/meter/?{query}" if query else "/meter/"
    return web.Response(status=308, headers={"Location": location})


async def static_handler(request: web.Request) -> web.Response:
    global _STATIC
    name = request.match_info["name"]
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    if _STATIC is None:
        _STATIC = _static_bytes()
    return web.Response(
        body=_STATIC[name],
        content_type=content_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def add_page_routes(app: web.Application, token: str | None, budgets: BudgetView) -> None:
    """``/meter/`` (token or cookie), sign-in / sign-out, static files and the ``/meter`` ->
    ``/meter/`` redirect (public)."""
    app[PAGE_TOKEN_KEY] = token
    app[PAGE_BUDGETS_KEY] = budgets
    app.router.add_get("/meter/", page_handler, name=PAGE_ROUTE_NAME)
    app.router.add_get("/meter", page_redirect, name=f"{PUBLIC_ROUTE_PREFIX}page-redirect")
    app.router.add_get(SIGN_IN_PATH, login_form, name=f"{PUBLIC_ROUTE_PREFIX}login")
    app.router.add_post(SIGN_IN_PATH, login_submit, name=f"{PUBLIC_ROUTE_PREFIX}login-post")
    app.router.add_post("/meter/logout", logout, name=f"{PUBLIC_ROUTE_PREFIX}logout")
    app.router.add_get("/meter/static/{name}", static_handler, name=f"{PUBLIC_ROUTE_PREFIX}static")
