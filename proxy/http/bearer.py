"""``Authorization: Bearer <token>`` checks for the proxy's own endpoints (admin, ``/metrics``).

Header values come from the network: aiohttp decodes them as UTF-8 with ``surrogateescape``, so a
hostile ``Bearer \\xff\\xfe`` arrives as lone surrogates that cannot be encoded again. Anything that
is not printable ASCII of the form ``Bearer <token>`` is simply "no valid token" (401), never an
exception (500).
"""

from __future__ import annotations

import hmac


def bearer_token(header: str | None) -> str | None:
    """The token of a well-formed, printable-ASCII ``Bearer <token>`` header, else None."""
    if not header or not header.isascii() or not header.isprintable():
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    if not value or " " in value:
        return None
    return value


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization`` header against ``token``."""
    presented = bearer_token(header)
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("ascii"), token.encode("utf-8", "surrogateescape"))
