"""The access log: one line per forwarded call, written by the HTTP edge.

Never logs bodies, query strings or keys: only the fields named in :func:`call_fields`.
The line's fields travel on the log record under :data:`FIELDS_ATTR`; the formatters in
:mod:`proxy.observe.logs` render them (JSON or text).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from proxy.http.exchange import Exchange

ACCESS_LOGGER: Final[str] = "openai_meter.access"
FIELDS_ATTR: Final[str] = "meter_fields"


def call_fields(exchange: Exchange) -> dict[str, Any]:
    duration_ms = exchange.latency_ms
    return {
        "request_id": exchange.id,
        "upstream_request_id": exchange.request_id,
        "method": exchange.method,
        "path": exchange.path,
        "endpoint": exchange.endpoint,
        "status": exchange.status_code,
        "duration_ms": round(duration_ms, 3) if duration_ms is not None else None,
        "outcome": exchange.outcome,
        "model": exchange.model_requested,
        "stream": exchange.stream,
        "team": exchange.attribution.team,
    }


class CallLogger:
    """Writes the one line per call. Cheap when the access logger is disabled."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    def log(self, exchange: Exchange) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        self._logger.info("call", extra={FIELDS_ATTR: call_fields(exchange)})
