"""Audio calls whose response carries no usage: which need a measured duration, and how it is billed.

From the OpenAI reference notes §3.4: ``whisper-1`` with ``response_format`` ``text``/``srt``/``vtt``
returns plain text with no usage, and ``/v1/audio/translations`` (``json``) has no usage field; both
are priced per minute of the uploaded audio (whisper-1: $0.006 per minute). ``verbose_json`` has a
top-level ``duration`` (read by ``proxy.usage.readers.transcription_reader``); the token-billed
``gpt-4o-*-transcribe`` models always report ``usage``.

For those calls the forwarder tees the multipart upload into a bounded copy
(``proxy.http.upload_copy``); after the response the file part is located here (pure) and its duration
probed off the event loop (``proxy.usage.audio_duration``).

Billing granularity is unverified (reference §3.4; a third party says "billed to the nearest
second"). Measured durations are rounded UP to whole seconds (:func:`billed_seconds`): the
proxy never under-counts, and the most it over-counts is under one second ($0.0001 on
whisper-1). The measured value is ``usage_source = "estimated"`` with ``estimate_reason =
"audio_duration"``: it is the proxy's measurement, not a number OpenAI reported.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Final

from pricing.usage import Usage
from proxy.http.observation import Observation
from proxy.usage.form import disposition_param, multipart_boundary

AUDIO_ENDPOINTS: Final = frozenset({"audio.transcriptions", "audio.translations"})
# OpenAI's upload limit is 25 MB; the copy allows 1 MiB more for the multipart framing and fields.
UPLOAD_LIMIT_BYTES: Final = 25 * 1024 * 1024
COPY_LIMIT_BYTES: Final = UPLOAD_LIMIT_BYTES + 1024 * 1024
ESTIMATE_REASON: Final = "audio_duration"
# Formats that report the audio's length themselves (verbose_json: top-level ``duration``).
_SELF_REPORTING_FORMATS: Final = frozenset({"verbose_json", "diarized_json"})
_HEADERS_MAX: Final = 16 * 1024

Buffer = bytes | mmap.mmap


def needs_duration(endpoint: str, method: str, fields: Mapping[str, Any]) -> bool:
    """Does this call's price depend on a duration the response may not carry?

    True for translations and whisper-style transcriptions (``whisper-1`` or an unnamed model),
    except the formats that report the length. Token-billed models (``gpt-…``) never need it.
    ``json`` whisper transcriptions are included: their ``usage`` is assumed (reference §7.7), the
    copy is the fallback when it is absent.
    """
    if endpoint not in AUDIO_ENDPOINTS or method.upper() != "POST":
        return False
    model = fields.get("model")
    if isinstance(model, str) and model.startswith("gpt-"):
        return False
    if fields.get("stream") in (True, "true"):
        return False
    fmt = fields.get("response_format")
    return not (isinstance(fmt, str) and fmt in _SELF_REPORTING_FORMATS)


def billed_seconds(length: float) -> Decimal | None:
    """Whole seconds billed for ``length`` seconds of audio (rounded up); None if not a length."""
    try:
        exact = Decimal(str(length))  # the shortest decimal of the probe's float
    except (InvalidOperation, ValueError):
        return None
    if not exact.is_finite() or exact < 0:
        return None
    return exact.to_integral_value(rounding=ROUND_CEILING)


def measured(obs: Observation, seconds: Decimal, model: str | None) -> Observation:
    """The observation of a call priced from the measured audio duration."""
    return replace(
        obs,
        usage=Usage(units={"audio_seconds": seconds}),
        source="estimated",
        estimate_reason=ESTIMATE_REASON,
        model=obs.model or model,
    )


def file_part(buffer: Buffer, content_type: str) -> tuple[int, int, str] | None:
    """``(start, end, filename)`` of the first file part of a complete multipart body, or None."""
    boundary = multipart_boundary(content_type)
    if not boundary or not content_type.lower().startswith("multipart/form-data"):
        return None
    delimiter = b"--" + boundary
    closing = b"\r\n" + delimiter
    pos = buffer.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if buffer[start : start + 2] == b"--":
            return None  # the closing delimiter: no file part
        headers_end = buffer.find(b"\r\n\r\n", start, start + _HEADERS_MAX)
        if headers_end < 0:
            return None
        content_start = headers_end + 4
        end = buffer.find(closing, content_start)
        if end < 0:
            return None  # truncated body
        headers = bytes(buffer[start:headers_end]).decode("latin-1")
        filename = disposition_param(headers, "filename")
        if filename is not None:
            return content_start, end, filename
        pos = end + 2
    return None
