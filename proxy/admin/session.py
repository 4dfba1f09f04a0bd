"""The spend page's sign-in cookie: the admin token, entered once, becomes a signed expiring cookie.

Value: ``v1.<expiry unix seconds>.<signature>``, where the signature is HMAC-SHA256 over
``v1.<expiry>`` with a key derived from the admin token (HMAC-SHA256(token, a fixed label)). So:
the cookie holds no secret (neither the token nor anything it can be recovered from), every worker
process and replica that shares the token accepts it, changing the token signs everyone out, and a
cookie past its expiry is refused even if a browser kept it. Logout deletes the cookie in the
browser; a copied cookie stays valid until its expiry (:data:`LIFETIME`), as any bearer credential.

Set with ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (never sent on a cross-site request:
no CSRF through it), ``Path=/meter`` and ``Secure`` when the request came over TLS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Final

COOKIE_NAME: Final = "openai_meter_session"
LIFETIME: Final = timedelta(hours=12)
_VERSION: Final = "v1"
_LABEL: Final = b"openai-meter spend-page session v1"
_MAX_COOKIE: Final = 200


def _key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8", "surrogatepass"), _LABEL, hashlib.sha256).digest()


def _sign(token: str, payload: str) -> str:
    digest = hmac.new(_key(token), payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(token: str, now: datetime, lifetime: timedelta = LIFETIME) -> tuple[str, int]:
    """A cookie value and its ``Max-Age`` in seconds."""
    expiry = int((now + lifetime).timestamp())
    payload = f"{_VERSION}.{expiry}"
    return f"{payload}.{_sign(token, payload)}", int(lifetime.total_seconds())


def valid(value: str | None, token: str, now: datetime) -> bool:
    """Constant-time signature check, then the expiry; anything malformed is simply invalid."""
    if not value or len(value) > _MAX_COOKIE:
        return False
    version, _, rest = value.partition(".")
    expiry_text, _, signature = rest.partition(".")
    if version != _VERSION or not expiry_text.isascii() or not expiry_text.isdigit():
        return False
    expected = _sign(token, f"{version}.{expiry_text}")
    if not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), expected.encode()):
        return False
    return now.timestamp() < int(expiry_text)


def token_equals(given: str, token: str) -> bool:
    """The login form's check (constant time, any text)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )
