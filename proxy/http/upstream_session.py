"""The one way to open an HTTP client session to the configured upstream.

Forwarding (``proxy.app``) and the Admin API client (``proxy.admin.reconcile``) both use it, so
both honour the same TLS settings (``upstream.verify_tls`` / ``upstream.ca_bundle``), connection
limit and cookie isolation. The egress proxy is resolved once from the environment by
:func:`proxy.http.forward.egress_proxy_for` and passed per request (``trust_env`` stays off).
"""

from __future__ import annotations

import ssl

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector

from proxy.settings import UpstreamSettings


def ssl_context(upstream: UpstreamSettings) -> ssl.SSLContext | bool:
    if not upstream.verify_tls:
        return False
    if upstream.ca_bundle:
        return ssl.create_default_context(cafile=upstream.ca_bundle)
    return True


def open_upstream_session(upstream: UpstreamSettings, timeout: ClientTimeout) -> ClientSession:
    """A keep-alive pool to the upstream (call from inside a running event loop)."""
    connector = TCPConnector(
        limit=upstream.max_connections,
        ssl=ssl_context(upstream),
        ttl_dns_cache=300,
        enable_cleanup_closed=False,
    )
    return ClientSession(
        connector=connector,
        cookie_jar=DummyCookieJar(),  # never share one client's upstream cookies with another
        auto_decompress=True,
        # Egress proxy env vars are resolved once (forward.egress_proxy_for), not per request.
        trust_env=False,
        skip_auto_headers=("User-Agent",),
        timeout=timeout,
    )
