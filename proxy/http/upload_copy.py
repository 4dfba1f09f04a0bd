"""A bounded copy of a request body as it streams upstream (for the audio duration probe).

The forwarder calls ``exchange.upload_tee(chunk)`` with every chunk it sends upstream (the
already-read head first) and ``upload_tee(b"")`` once the body ended. :class:`UploadCopy` keeps
up to ``memory_limit`` bytes in memory, then spills to an anonymous temporary file; past ``limit``
it stops copying, frees what it held and says so (``overflowed``). The body itself always streams
through untouched: the copy never holds the call back.
"""

from __future__ import annotations

import contextlib
import mmap
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Final

UploadTee = Callable[[bytes], None]
MEMORY_LIMIT: Final = 1024 * 1024


class UploadCopy:
    __slots__ = (
        "_file",
        "_limit",
        "_memory",
        "_memory_limit",
        "closed",
        "ended",
        "overflowed",
        "size",
    )

    def __init__(self, *, limit: int, memory_limit: int = MEMORY_LIMIT) -> None:
        self._limit = limit
        self._memory_limit = memory_limit
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self.size = 0  # bytes seen (also past the limit)
        self.ended = False  # the body was sent to its end
        self.overflowed = False
        self.closed = False

    def write(self, chunk: bytes) -> None:
        """One chunk of the body; ``b""`` marks its end."""
        if not chunk:
            self.ended = True
            return
        self.size += len(chunk)
        if self.overflowed or self.closed:
            return
        if self.size > self._limit:
            self.overflowed = True
            self._release()
            return
        if self._file is None:
            if len(self._memory) + len(chunk) <= self._memory_limit:
                self._memory += chunk
                return
            self._file = tempfile.TemporaryFile(prefix="openai-meter-upload-")  # noqa: SIM115 - closed by close()
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(chunk)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    @contextlib.contextmanager
    def view(self) -> Iterator[bytes | mmap.mmap]:
        """The copied bytes (blocking for a spilled copy: call from a worker thread)."""
        if self._file is None:
            yield bytes(self._memory)
            return
        self._file.flush()
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped

    def close(self) -> None:
        self.closed = True
        self._release()

    def _release(self) -> None:
        self._memory = bytearray()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def tee_body(
    body: bytes | AsyncIterator[bytes],
    tee: UploadTee,
    on_error: Callable[[BaseException], None],
) -> bytes | AsyncIterator[bytes]:
    """``body`` unchanged, with every chunk (then ``b""``) also given to ``tee``.

    A failing tee is reported once and dropped; the body goes on.
    """
    if isinstance(body, bytes):
        try:
            tee(body)
            tee(b"")
        except Exception as exc:
            on_error(exc)
        return body
    return _teed(body, tee, on_error)


async def _teed(
    body: AsyncIterator[bytes], tee: UploadTee, on_error: Callable[[BaseException], None]
) -> AsyncIterator[bytes]:
    active = True
    async for chunk in body:
        if active:
            try:
                tee(chunk)
            except Exception as exc:
                active = False
                on_error(exc)
        yield chunk
    if active:
        try:
            tee(b"")
        except Exception as exc:
            on_error(exc)
