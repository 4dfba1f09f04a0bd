"""Admin authentication: ``Authorization: Bearer <admin.token>`` on the proxy's ``/meter/*`` routes.

Protection is decided by the *matched route* (its resource path starts with ``/meter``), not by the
raw request path, so encodings such as ``//meter/x`` or ``/v1/../meter/x`` cannot slip past it: they
either match a ``/meter`` route (and need the token) or match none. With no token configured the
routes are open (a loopback-only deployment); ``serve`` warns about that when listening elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy.admin import session
from proxy.http.bearer import bearer_matches
from proxy.http.errors import unauthorized

ADMIN_PREFIX: Final[str] = "/meter"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization`` header against the admin token (anything
    malformed or non-ASCII is simply not a match: 401, never 500)."""
    return bearer_matches(header, token)


def is_admin_route(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None:
        return False
    canonical = resource.canonical
    return canonical == ADMIN_PREFIX or canonical.startswith(ADMIN_PREFIX + "/")


# The spend page (issue 14): its sign-in form and static files are public routes (by route name);
# its signed cookie (proxy.admin.session) counts as the token; the page itself sends a browser
# without either to the sign-in form.
PUBLIC_ROUTE_PREFIX: Final[str] = "meter-public-"
PAGE_ROUTE_NAME: Final[str] = "meter-page"
SIGN_IN_PATH: Final[str] = "/meter/login"


def is_public_route(request: web.Request) -> bool:
    name = request.match_info.route.name
    return name is not None and name.startswith(PUBLIC_ROUTE_PREFIX)


def session_matches(request: web.Request, token: str) -> bool:
    return session.valid(request.cookies.get(session.COOKIE_NAME), token, datetime.now(UTC))


def admin_auth_middleware(token: str | None) -> Middleware:
    """Middleware requiring the admin token on every ``/meter`` route (no-op without a token)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            token
            and is_admin_route(request)
            and not is_public_route(request)
            and not token_matches(request.headers.get("Authorization"), token)
            and not session_matches(request, token)
        ):
            if request.match_info.route.name == PAGE_ROUTE_NAME:
                return web.Response(status=303, headers={"Location": SIGN_IN_PATH})
            return unauthorized(
                "A valid admin token is required: Authorization: Bearer <admin.token>."
            )
        return await handler(request)

    return middleware


def require_admin(token: str | None) -> Callable[[Handler], Handler]:
    """Decorator form, for a handler mounted outside ``/meter`` that still needs the token."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if token and not token_matches(request.headers.get("Authorization"), token):
                return unauthorized(
                    "A valid admin token is required: Authorization: Bearer <admin.token>."
                )
            return await handler(request)

        return wrapped

    return decorate
