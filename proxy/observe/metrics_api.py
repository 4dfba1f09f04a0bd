"""``GET /metrics`` (Prometheus text or OpenMetrics, by ``Accept``) and the optional metrics port.

The registry is injected through :data:`REGISTRY_KEY`; nothing here touches prometheus_client's
default registry. Wiring (``proxy/app.py``)::

    registry = CollectorRegistry()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = Metrics(registry, models=..., teams=..., ...)
    app.router.add_get("/metrics", metrics_handler)
    if settings.metrics.port is not None:
        app.cleanup_ctx.append(metrics_server_ctx(registry, settings.listen.host, settings.metrics.port))

Both servers render synchronously on the event loop that also records the calls. ``proxy.observe.metrics``
relies on that: its series are updated without locks from the loop's thread, so a scrape that runs
on the same thread, start to finish, is a consistent snapshot. Do not move rendering to an executor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from proxy.http.bearer import bearer_matches
from proxy.http.errors import error_response
from proxy.observe.metrics import Metrics
from proxy.observe.metrics_merge import merged_exposition

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
METRICS_KEY = web.AppKey("metrics", Metrics)
# The bound address of the separate metrics server, once started (host, port).
METRICS_ADDRESS_KEY = web.AppKey("metrics_address", tuple[str, int])
# ``metrics.token``: when set, a scrape needs ``Authorization: Bearer <token>`` (Prometheus:
# ``authorization: {credentials: ...}`` in the scrape config). Per-team spend is not public.
METRICS_TOKEN_KEY = web.AppKey("metrics_token", str)
# ``serve --workers N``: the private unix sockets of the other workers; /metrics then serves the
# sum over all workers (proxy.observe.metrics_merge).
METRICS_PEERS_KEY = web.AppKey("metrics_peers", tuple[str, ...])


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its content type for an ``Accept`` header (call on the loop)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


async def _response(registry: CollectorRegistry, request: web.Request) -> web.Response:
    peers = request.app.get(METRICS_PEERS_KEY)
    if peers:
        body, content_type = await merged_exposition(registry, peers, request.headers.get("Accept"))
    else:
        body, content_type = render(registry, request.headers.get("Accept"))
    response = web.Response(body=body)
    # Set the header directly: the content type carries parameters (version, charset, escaping)
    # that aiohttp's ``content_type=`` argument would reject.
    response.headers["Content-Type"] = content_type
    return response


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` on the main app (uses ``request.app[REGISTRY_KEY]``; 401 without the
    ``metrics.token`` when one is set)."""
    token = request.app.get(METRICS_TOKEN_KEY)
    if token and not bearer_matches(request.headers.get("Authorization"), token):
        return error_response(
            401,
            "A valid metrics token is required: Authorization: Bearer <metrics.token>.",
            "invalid_request_error",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": 'Bearer realm="openai-meter-metrics"'},
        )
    return await _response(request.app[REGISTRY_KEY], request)


def metrics_app(
    registry: CollectorRegistry, token: str | None = None, peers: Sequence[str] = ()
) -> web.Application:
    """A tiny app serving only ``GET /metrics`` from ``registry`` (for ``metrics.port``), summed
    with ``peers`` (other workers' private sockets) when given."""
    app = web.Application()
    app[REGISTRY_KEY] = registry
    if peers:
        app[METRICS_PEERS_KEY] = tuple(peers)
    if token:
        app[METRICS_TOKEN_KEY] = token
    app.router.add_get("/metrics", metrics_handler)
    return app


async def start_metrics_server(
    registry: CollectorRegistry,
    host: str,
    port: int,
    token: str | None = None,
    peers: Sequence[str] = (),
) -> tuple[web.AppRunner, tuple[str, int]]:
    """Start the separate metrics server; port 0 picks a free port. Returns (runner, address)."""
    runner = web.AppRunner(metrics_app(registry, token, peers), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    bound = (host, int(addresses[0][1])) if addresses else (host, port)
    return runner, bound


def metrics_server_ctx(
    registry: CollectorRegistry,
    host: str,
    port: int,
    token: str | None = None,
    peers: Sequence[str] = (),
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """An ``app.cleanup_ctx`` entry running the separate metrics server for the app's lifetime."""

    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        runner, address = await start_metrics_server(registry, host, port, token, peers)
        app[METRICS_ADDRESS_KEY] = address
        try:
            yield
        finally:
            await runner.cleanup()

    return ctx
