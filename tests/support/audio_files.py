"""Small real audio files of a known duration, made in the test (no network, no encoders)."""

from __future__ import annotations

import io
import struct
import wave


def wav_bytes(seconds: float, *, rate: int = 8000, channels: int = 1) -> bytes:
    """A PCM WAV of ``seconds`` (``round(seconds * rate)`` frames of silence, 16-bit)."""
    frames = round(seconds * rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * channels * frames)
    return out.getvalue()


def flac_bytes(total_samples: int, *, rate: int = 16000) -> bytes:
    """A FLAC stream header (``fLaC`` + STREAMINFO) announcing ``total_samples`` at ``rate``.

    Duration readers (mutagen) take the length from STREAMINFO: total samples / sample rate.
    """
    info = 0
    fields = [
        (4096, 16),  # min block size
        (4096, 16),  # max block size
        (0, 24),  # min frame size (unknown)
        (0, 24),  # max frame size (unknown)
        (rate, 20),
        (0, 3),  # channels - 1 (mono)
        (15, 5),  # bits per sample - 1 (16-bit)
        (total_samples, 36),
        (0, 128),  # MD5 of the audio (unknown)
    ]
    for value, bits in fields:
        info = (info << bits) | value
    streaminfo = info.to_bytes(34, "big")
    header = struct.pack(">B", 0x80) + len(streaminfo).to_bytes(3, "big")  # last block, STREAMINFO
    return b"fLaC" + header + streaminfo + b"\xff\xf8" + b"\x00" * 64
