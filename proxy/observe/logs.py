"""Structured logging: the handler and its formatters (JSON lines, or ``logging.format: text``).

The per-call access line itself is written by the HTTP edge (:mod:`proxy.http.access_log`);
the formatters here render its fields.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson

from proxy.http.access_log import FIELDS_ATTR
from proxy.settings import LoggingSettings

ROOT_LOGGER: Final[str] = "openai_meter"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, FIELDS_ATTR, None)
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
        try:
            return orjson.dumps(data, default=str).decode()
        except orjson.JSONEncodeError:  # e.g. a path with %ff: a lone surrogate is not UTF-8
            return orjson.dumps(_valid_utf8(data), default=str).decode()


def _valid_utf8(value: Any) -> Any:
    """Strings with lone surrogates (undecodable bytes) re-decoded with U+FFFD replacement."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, dict):
        return {_valid_utf8(k): _valid_utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_utf8(v) for v in value]
    return value


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
