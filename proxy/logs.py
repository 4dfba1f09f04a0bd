"""Structured logging: one JSON line per forwarded call (or ``logging.format: text``).

Never logs bodies, query strings or keys: only the fields named in :func:`call_fields`.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson

from proxy.exchange import Exchange
from proxy.settings import LoggingSettings

ACCESS_LOGGER: Final[str] = "openai_meter.access"
ROOT_LOGGER: Final[str] = "openai_meter"
_FIELDS_ATTR: Final[str] = "meter_fields"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, _FIELDS_ATTR, None)
    return value if isinstance(value, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return line


def configure_logging(settings: LoggingSettings, stream: IO[str] | None = None) -> None:
    """Install one handler on the root logger with the configured format and level."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # aiohttp's own access log duplicates ours (and would log query strings).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


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
        self._logger.info("call", extra={_FIELDS_ATTR: call_fields(exchange)})
