"""Which headers cross the proxy, in each direction. Pure; the filter sets are built once.

Rules (RFC 9110 §7.6.1 and the proxy checklist in the project's OpenAI notes):

* hop-by-hop headers (``Connection``, ``Keep-Alive``, ``Transfer-Encoding``, ``TE``, ``Trailer``,
  ``Upgrade``, ``Proxy-*``) and any header named in ``Connection`` never cross;
* the client's ``Host`` is replaced by the upstream's (aiohttp sets it from the URL);
* the client's ``Accept-Encoding`` is never forwarded: aiohttp negotiates and decompresses itself,
  so the client always receives identity bytes;
* the proxy's own ``X-Meter-*`` headers are consumed here, never sent upstream;
* upstream ``Content-Encoding`` / ``Content-Length`` are dropped (the body is re-framed, decoded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from multidict import CIMultiDict, istr

HOP_BY_HOP: Final[frozenset[str]] = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "trailers",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# Never forwarded upstream, on top of hop-by-hop.
_REQUEST_DROP: Final[frozenset[str]] = HOP_BY_HOP | {
    "host",
    "accept-encoding",
    "expect",
    "x-forwarded-host",
}
# Dropped when the proxy sends a body it read itself (length recomputed by the client library).
_BODY_FRAMING: Final[frozenset[str]] = frozenset({"content-length"})
# WebSocket handshake headers: the upstream client library makes its own.
_WS_DROP: Final[frozenset[str]] = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
    }
)
_RESPONSE_DROP: Final[frozenset[str]] = HOP_BY_HOP | {"content-encoding", "content-length"}

METER_PREFIX: Final[str] = "x-meter-"
_PREFIX_LEN: Final = len(METER_PREFIX)
AUTHORIZATION: Final[istr] = istr("Authorization")
TRACEPARENT: Final[istr] = istr("traceparent")


def _connection_tokens(headers: Mapping[str, str]) -> frozenset[str]:
    value = headers.get("Connection")
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


# Per drop set, a memo of header name (as sent, case and all) -> forwarded? The same few names
# arrive on every call; one dict lookup replaces lower() + set test + prefix test. Pure, so a race
# only recomputes; bounded, because names come from clients.
_KEEP_CACHE_LIMIT: Final = 512
_KEEP: Final[dict[frozenset[str], dict[str, bool]]] = {}


def _filtered(
    items: Iterable[tuple[str, str]], drop: frozenset[str], extra: frozenset[str]
) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    if extra:  # names listed in Connection (rare): no memo
        drop = drop | extra
        for name, value in items:
            lower = name.lower()
            if lower not in drop and lower[:_PREFIX_LEN] != METER_PREFIX:
                add(name, value)
        return out
    keep = _KEEP.get(drop)
    if keep is None:
        keep = _KEEP[drop] = {}
    for name, value in items:
        forward = keep.get(name)
        if forward is None:
            lower = name.lower()
            forward = lower not in drop and lower[:_PREFIX_LEN] != METER_PREFIX
            if len(keep) >= _KEEP_CACHE_LIMIT:
                keep.clear()
            keep[name] = forward
        if forward:
            add(name, value)
    return out


# The request drop sets for (keep_content_length, websocket), built once.
_REQUEST_DROPS: Final[dict[tuple[bool, bool], frozenset[str]]] = {
    (True, False): _REQUEST_DROP,
    (False, False): _REQUEST_DROP | _BODY_FRAMING,
    (True, True): _REQUEST_DROP | _WS_DROP,
    (False, True): _REQUEST_DROP | _BODY_FRAMING | _WS_DROP,
}


def upstream_request_headers(
    client: Mapping[str, str],
    *,
    authorization: str | None = None,
    traceparent: str | None = None,
    keep_content_length: bool = True,
    websocket: bool = False,
) -> CIMultiDict[str]:
    """Headers to send upstream for a client request's headers.

    ``authorization`` replaces the client's ``Authorization`` (virtual keys); ``traceparent``
    replaces the client's W3C ``traceparent`` (the proxy's own span continues the client's trace).
    ``keep_content_length`` is False when the proxy sends a body it read (and maybe rewrote).
    """
    drop = _REQUEST_DROPS[(bool(keep_content_length), bool(websocket))]
    out = _filtered(client.items(), drop, _connection_tokens(client))
    if authorization is not None:
        out[AUTHORIZATION] = authorization
    if traceparent is not None:
        out[TRACEPARENT] = traceparent
    return out


def client_response_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    """Headers to send the client for an upstream response's headers."""
    return _filtered(upstream.items(), _RESPONSE_DROP, _connection_tokens(upstream))


def is_websocket_upgrade(headers: Mapping[str, str]) -> bool:
    upgrade = headers.get("Upgrade")
    if not upgrade or upgrade.lower() != "websocket":
        return False
    return "upgrade" in _connection_tokens(headers)
