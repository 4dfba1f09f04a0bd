"""The one place that wires concrete pieces together into the aiohttp application.

``build_app`` is a sequence of small blocks; each owns its ``AppKey`` and its ``cleanup_ctx``:

1. settings + readiness registry
2. upstream HTTP client (one pooled keep-alive ``ClientSession``) -> forwarder
3. (ledger writer: start/stop + readiness) -- plugged in by the ledger issue
4. (metrics registry + ``GET /metrics``) -- plugged in by the metrics issue
5. admin routes under ``/meter/*`` (token-protected by ``proxy.admin_auth``)
6. health routes, then the ``/v1/`` catch-all forwarding route

Cleanup runs in reverse order of ``cleanup_ctx`` registration, after in-flight requests finished
(``AppRunner(shutdown_timeout=...)``), so anything that must see the last records (the ledger
writer) should be appended *before* the upstream session block... it is torn down *after* it.

Serve the app with ``handler_cancellation=True`` (``web.run_app`` / ``AppRunner`` kwarg): that is
how a client disconnect cancels the upstream request promptly.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import ClientSession, DummyCookieJar, TCPConnector, web

from proxy.admin_auth import admin_auth_middleware
from proxy.exchange import MeteringHooks
from proxy.forward import Forwarder, MeteringErrorCallback
from proxy.health import Readiness, healthz, readyz_handler
from proxy.settings import Settings, UpstreamSettings

log = logging.getLogger("openai_meter.app")

SETTINGS_KEY = web.AppKey("settings", Settings)
READINESS_KEY = web.AppKey("readiness", Readiness)
FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
UPSTREAM_SESSION_KEY = web.AppKey("upstream_session", ClientSession)

# Server kwargs every runner of this app must use (``web.run_app(app, **SERVER_KWARGS)``).
SERVER_KWARGS: dict[str, object] = {"handler_cancellation": True, "access_log": None}


def _ssl_context(upstream: UpstreamSettings) -> ssl.SSLContext | bool:
    if not upstream.verify_tls:
        return False
    if upstream.ca_bundle:
        return ssl.create_default_context(cafile=upstream.ca_bundle)
    return True


def upstream_session_ctx(
    settings: Settings, forwarder: Forwarder, readiness: Readiness
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """One keep-alive connection pool to the upstream for the app's lifetime."""

    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(
            limit=settings.upstream.max_connections,
            ssl=_ssl_context(settings.upstream),
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        session = ClientSession(
            connector=connector,
            cookie_jar=DummyCookieJar(),  # never share one client's upstream cookies with another
            auto_decompress=True,
            trust_env=True,  # honour HTTPS_PROXY / NO_PROXY for egress
            skip_auto_headers=("User-Agent",),
            timeout=forwarder.timeout,
        )
        app[UPSTREAM_SESSION_KEY] = session
        forwarder.session = session
        readiness.add("upstream_session", lambda: not session.closed)
        try:
            yield
        finally:
            forwarder.session = None
            await session.close()

    return ctx


def build_app(
    settings: Settings,
    *,
    hooks: MeteringHooks | None = None,
    on_metering_error: MeteringErrorCallback | None = None,
) -> web.Application:
    """The proxy application for ``settings``.

    ``hooks`` is the meter (``proxy.forward.NullHooks`` when None); ``on_metering_error(stage, exc)``
    is told about every guarded metering failure (wire it to ``metering_errors_total{stage}``).
    """
    # 1. settings + readiness -----------------------------------------------------------------
    app = web.Application(middlewares=[admin_auth_middleware(settings.admin.token)])
    app[SETTINGS_KEY] = settings
    readiness = Readiness()
    app[READINESS_KEY] = readiness

    # 2. upstream client + forwarder ---------------------------------------------------------
    forwarder = Forwarder(settings, hooks, on_metering_error=on_metering_error)
    app[FORWARDER_KEY] = forwarder
    app.cleanup_ctx.append(upstream_session_ctx(settings, forwarder, readiness))

    # 3. ledger writer (ledger issue): app.cleanup_ctx.append(ledger_ctx); readiness.add("ledger", ...)

    # 4. metrics (metrics issue): app[REGISTRY_KEY] = ...; app.router.add_get("/metrics", ...)

    # 5. admin routes under /meter/* (protected by admin_auth_middleware when a token is set)
    _add_admin_routes(app)

    # 6. health + forwarding -----------------------------------------------------------------
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz_handler(readiness))
    app.router.add_route("*", "/v1/{tail:.*}", forwarder.handle)
    return app


def _add_admin_routes(app: web.Application) -> None:
    try:
        prices_api = importlib.import_module("proxy.prices_api")
    except ImportError:  # the pricing issue has not landed yet
        return
    app.router.add_get("/meter/prices", prices_api.prices_handler)
