"""Errors the proxy itself produces, in OpenAI's shape (``{"error": {message, type, param, code}}``).

The shape is OpenAI's ``ErrorResponse`` (openai-openapi spec, summarised in the project's API notes):
``param`` and ``code`` are nullable. The openai SDK maps the status to its exception classes
(502/504 -> ``InternalServerError``), so clients handle these like any upstream error.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """The JSON bytes of an OpenAI-shaped error."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A complete ``web.Response`` carrying an OpenAI-shaped error."""
    response = web.Response(
        status=status,
        body=error_body(message, type_, param=param, code=code),
        content_type="application/json",
    )
    if headers:
        response.headers.update(headers)
    return response


def upstream_unreachable(detail: str) -> web.Response:
    """502: the upstream could not be reached (DNS, refused, TLS, reset before headers)."""
    return error_response(
        502,
        f"The metering proxy could not reach the upstream API: {detail}",
        "upstream_error",
        code="upstream_unreachable",
    )


def upstream_timeout(detail: str) -> web.Response:
    """504: the upstream did not answer in time."""
    return error_response(
        504,
        f"The upstream API did not answer in time: {detail}",
        "upstream_error",
        code="upstream_timeout",
    )


def not_found(path: str) -> web.Response:
    return error_response(404, f"Not found: {path}", "invalid_request_error", code="not_found")


def bad_request(message: str, *, code: str | None = None, param: str | None = None) -> web.Response:
    return error_response(400, message, "invalid_request_error", code=code, param=param)


def unauthorized(message: str) -> web.Response:
    return error_response(
        401,
        message,
        "invalid_request_error",
        code="invalid_admin_token",
        headers={"WWW-Authenticate": 'Bearer realm="openai-meter"'},
    )


def proxy_error(message: str) -> web.Response:
    return error_response(500, message, "server_error", code="proxy_error")
