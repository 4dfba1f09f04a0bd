"""The small text fields of a ``multipart/form-data`` request body (pure).

Image edits and audio transcriptions are multipart: metering needs ``model``, ``n``, ``size``,
``quality``, ``response_format`` and ``stream`` from them. File parts are skipped without copying.
"""

from __future__ import annotations

from typing import Final

MAX_FIELD_BYTES: Final = 4096


def multipart_boundary(content_type: str) -> bytes | None:
    """The ``boundary`` parameter of a ``multipart/form-data`` Content-Type, as bytes."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def form_fields(body: bytes, content_type: str) -> dict[str, str]:
    """``name -> value`` for every non-file part no longer than ``MAX_FIELD_BYTES``."""
    if not content_type.lower().startswith("multipart/form-data"):
        return {}
    boundary = multipart_boundary(content_type)
    if not boundary:
        return {}
    delimiter = b"--" + boundary
    fields: dict[str, str] = {}
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body[start : start + 2] == b"--":
            break
        nxt = body.find(delimiter, start)
        if nxt < 0:
            break
        headers_end = body.find(b"\r\n\r\n", start, nxt)
        if headers_end >= 0:
            headers = body[start:headers_end].decode("latin-1").lower()
            value_end = nxt - 2 if body[nxt - 2 : nxt] == b"\r\n" else nxt
            if "filename=" not in headers and value_end - headers_end - 4 <= MAX_FIELD_BYTES:
                name = disposition_param(body[start:headers_end].decode("latin-1"), "name")
                if name:
                    fields[name] = body[headers_end + 4 : value_end].decode("utf-8", "replace")
        pos = nxt
    return fields


def disposition_param(headers: str, param_name: str) -> str | None:
    """A parameter (``name``, ``filename``) of a part's ``Content-Disposition`` header."""
    for line in headers.split("\r\n"):
        if not line.lower().startswith("content-disposition:"):
            continue
        for param in line.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == param_name:
                return value.strip('"')
    return None
