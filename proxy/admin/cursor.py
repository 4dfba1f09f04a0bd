"""The ``/meter/records`` page cursor: an opaque token for the last row of a page.

Rows come newest first, ordered by ``(started_at, id)`` descending -- a total order, since ids are
unique -- so the next page is "rows strictly before this key". Inserts that arrive while a client
pages (newer rows at the head) neither repeat nor skip a row already ordered after the cursor.
The token is URL-safe base64 of ``["<started_at ISO-8601 UTC, microseconds>", "<id>"]``; anything
else is refused with :class:`CursorError`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Final

import orjson

MAX_CURSOR_CHARS: Final = 512


class CursorError(ValueError):
    """Not a cursor this server issued; the message is for the client (HTTP 400)."""


def encode_cursor(started_at: datetime, record_id: str) -> str:
    moment = started_at.astimezone(UTC).isoformat(timespec="microseconds")
    raw = orjson.dumps([moment, record_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    problem = CursorError("cursor is not one this server issued: pass the 'next' value unchanged")
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise problem
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        moment, record_id = orjson.loads(raw)
        if not isinstance(moment, str) or not isinstance(record_id, str) or not record_id:
            raise problem
        started_at = datetime.fromisoformat(moment)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise problem from None
    if started_at.tzinfo is None:
        raise problem
    try:
        return started_at.astimezone(UTC), record_id
    except OverflowError:  # a forged moment at the edge of the calendar
        raise problem from None
