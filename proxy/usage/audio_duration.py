"""Probe the duration of an uploaded audio file (blocking: run it with ``asyncio.to_thread``).

The file part is located in the multipart copy (``proxy.usage.audio.file_part``) and read in place
(memory, or the spilled temp file through ``mmap``) by ``mutagen``, which reads headers only
(WAV, MP3, FLAC, OGG, M4A/MP4, ...). Any failure is a reason, never a guessed length.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import mutagen

from proxy.http.exchange import Exchange
from proxy.http.observation import Observation
from proxy.http.upload_copy import UploadCopy
from proxy.usage.audio import COPY_LIMIT_BYTES, Buffer, billed_seconds, file_part, needs_duration

Probe = tuple[Decimal, None] | tuple[None, str]
_PREFIX: Final = "audio_duration_unknown: "


class _Slice(io.RawIOBase):
    """A read-only, seekable window ``[start, end)`` of a buffer (no copy of the whole part)."""

    def __init__(self, buffer: Buffer, start: int, end: int, name: str) -> None:
        super().__init__()
        self._buffer = buffer
        self._start = start
        self._end = end
        self._pos = start
        self.name = name  # mutagen scores formats by file name too

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        count = max(0, min(len(b), self._end - self._pos))
        b[:count] = self._buffer[self._pos : self._pos + count]
        self._pos += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = self._start + offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        else:
            target = self._end + offset
        if target < self._start:
            raise OSError("seek before the start of the file")
        self._pos = target
        return self._pos - self._start

    def tell(self) -> int:
        return self._pos - self._start


def probe_upload(copy: UploadCopy, content_type: str) -> Probe:
    """``(billed seconds, None)`` or ``(None, reason)`` for the copied upload."""
    if copy.overflowed:
        return (
            None,
            f"{_PREFIX}upload of {copy.size} bytes is over the {copy.limit}-byte copy limit",
        )
    if not copy.ended or copy.closed:
        return None, f"{_PREFIX}upload incomplete"
    with copy.view() as buffer:
        part = file_part(buffer, content_type)
        if part is None:
            return None, f"{_PREFIX}no file part in the upload"
        start, end, filename = part
        window = _Slice(buffer, start, end, filename)
        try:
            audio = mutagen.File(window)
        except Exception as exc:  # mutagen raises its own errors and struct/index errors
            return None, f"{_PREFIX}{type(exc).__name__} reading the file"
        finally:
            window.close()
        length = getattr(getattr(audio, "info", None), "length", None)
        if audio is None or not isinstance(length, int | float):
            return None, f"{_PREFIX}unrecognised audio format"
        seconds = billed_seconds(length)
        if seconds is None:
            return None, f"{_PREFIX}bad length {length!r}"
        return seconds, None


# --- the meter's side: install the copy at request time, take it back at the end ---------------

UPLOAD_COPY_KEY: Final = "audio.upload_copy"


def install_upload_copy(exchange: Exchange, fields: Mapping[str, Any]) -> None:
    """Ask the forwarder to copy this multipart upload when its price needs the duration."""
    if exchange.request_body_head is None and exchange.request_body is None:
        return  # not a multipart upload the forwarder read a head of
    if not needs_duration(exchange.endpoint, exchange.method, fields):
        return
    copy = UploadCopy(limit=COPY_LIMIT_BYTES)
    exchange.extras[UPLOAD_COPY_KEY] = copy
    exchange.upload_tee = copy.write


def take_upload_copy(exchange: Exchange, obs: Observation) -> UploadCopy | None:
    """The copy to probe for this finished call, or None (any copy not returned is closed).

    Probed only when the call succeeded (2xx) and its response named no usage.
    """
    copy = exchange.extras.pop(UPLOAD_COPY_KEY, None)
    if not isinstance(copy, UploadCopy):
        return None
    status = exchange.status_code
    if obs.usage is None and status is not None and 200 <= status < 300:
        return copy
    copy.close()
    return None
