"""Audio with no usage: which calls need a measured duration, the bounded upload copy, the probe."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.upload_copy import UploadCopy, tee_body
from proxy.usage.audio import billed_seconds, file_part, needs_duration
from proxy.usage.audio_duration import probe_upload
from tests.support.audio_files import flac_bytes, wav_bytes

BOUNDARY = "----meterTestBoundary" + uuid.uuid4().hex[:8]
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(
    audio: bytes, filename: str = "speech.wav", *, file_first: bool = False, **fields: str
) -> bytes:
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    file_part_bytes = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        + audio
        + b"\r\n"
    )
    if file_first:
        parts.insert(0, file_part_bytes)
    else:
        parts.append(file_part_bytes)
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def copy_of(body: bytes, pieces: list[int] | None = None, **kwargs: int) -> UploadCopy:
    copy = UploadCopy(limit=kwargs.pop("limit", 1 << 30), **kwargs)
    cuts = sorted({0, len(body), *(p % (len(body) + 1) for p in pieces or [])})
    for start, end in itertools.pairwise(cuts):
        copy.write(body[start:end])
    copy.write(b"")
    return copy


# --- which calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "fields", "expected"),
    [
        ("audio.transcriptions", {"model": "whisper-1", "response_format": "text"}, True),
        ("audio.transcriptions", {"model": "whisper-1", "response_format": "srt"}, True),
        ("audio.transcriptions", {"model": "whisper-1", "response_format": "vtt"}, True),
        ("audio.transcriptions", {"model": "whisper-1"}, True),  # json: usage assumed, fallback
        ("audio.transcriptions", {"model": "whisper-1", "response_format": "verbose_json"}, False),
        ("audio.transcriptions", {"model": "gpt-4o-mini-transcribe"}, False),  # token usage
        ("audio.transcriptions", {"model": "gpt-4o-transcribe", "stream": "true"}, False),
        ("audio.translations", {"model": "whisper-1"}, True),
        ("audio.translations", {"model": "whisper-1", "response_format": "text"}, True),
        ("audio.translations", {}, True),  # model unknown (after the file part): copy anyway
        ("audio.speech", {"model": "tts-1"}, False),
        ("chat.completions", {"model": "whisper-1"}, False),
    ],
)
def test_needs_duration(endpoint: str, fields: dict[str, str], expected: bool) -> None:
    assert needs_duration(endpoint, "POST", fields) is expected


def test_gets_never_need_a_duration() -> None:
    assert not needs_duration("audio.translations", "GET", {"model": "whisper-1"})


@pytest.mark.parametrize(
    ("length", "billed"),
    [(7.3, "8"), (8.0, "8"), (0.001, "1"), (0.0, "0"), (59.99999, "60"), (61.5, "62")],
)
def test_measured_lengths_are_rounded_up_to_whole_seconds(length: float, billed: str) -> None:
    assert billed_seconds(length) == Decimal(billed)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_not_a_length(bad: float) -> None:
    assert billed_seconds(bad) is None


# --- locating the file part -----------------------------------------------------------------


def test_file_part_is_found_after_or_before_the_fields() -> None:
    audio = wav_bytes(1.0)
    for first in (False, True):
        body = multipart(audio, file_first=first, model="whisper-1", response_format="text")
        part = file_part(body, CONTENT_TYPE)
        assert part is not None
        start, end, name = part
        assert body[start:end] == audio
        assert name == "speech.wav"


def test_file_part_absent_truncated_or_not_multipart() -> None:
    no_file = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode()
    assert file_part(no_file, CONTENT_TYPE) is None
    body = multipart(wav_bytes(1.0))
    assert file_part(body[: len(body) // 2], CONTENT_TYPE) is None
    assert file_part(body, "application/json") is None
    assert file_part(body, "multipart/form-data") is None  # no boundary


# --- the bounded copy and the probe -----------------------------------------------------------


def test_a_wav_upload_is_probed_to_whole_seconds() -> None:
    copy = copy_of(multipart(wav_bytes(7.3), model="whisper-1", response_format="text"))
    assert probe_upload(copy, CONTENT_TYPE) == (Decimal(8), None)


def test_a_flac_upload_is_probed_from_its_stream_info() -> None:
    body = multipart(flac_bytes(16000 * 61 + 8000), "speech.flac", model="whisper-1")
    assert probe_upload(copy_of(body), CONTENT_TYPE) == (Decimal(62), None)


def test_a_copy_over_the_memory_limit_spills_to_disk_and_probes_the_same() -> None:
    body = multipart(wav_bytes(70.0, rate=16000), model="whisper-1")  # ~2.2 MB
    copy = copy_of(body, [4096, 700_000, 1_500_000], memory_limit=1024 * 1024)
    assert copy.on_disk
    assert probe_upload(copy, CONTENT_TYPE) == (Decimal(70), None)
    copy.close()
    assert not copy.on_disk


def test_an_upload_over_the_cap_is_not_copied_and_says_why() -> None:
    body = multipart(wav_bytes(5.0))
    copy = copy_of(body, [1000], limit=len(body) - 1)
    assert copy.overflowed and not copy.on_disk
    seconds, reason = probe_upload(copy, CONTENT_TYPE)
    assert seconds is None
    assert reason == (
        f"audio_duration_unknown: upload of {len(body)} bytes is over the "
        f"{len(body) - 1}-byte copy limit"
    )


def test_an_unfinished_or_unreadable_upload_has_no_duration() -> None:
    body = multipart(wav_bytes(2.0))
    unfinished = UploadCopy(limit=1 << 30)
    unfinished.write(body)  # no end marker: the body was cut
    assert probe_upload(unfinished, CONTENT_TYPE)[1] == "audio_duration_unknown: upload incomplete"
    noise = copy_of(multipart(b"not audio at all" * 10, "x.bin"))
    seconds, reason = probe_upload(noise, CONTENT_TYPE)
    assert seconds is None
    assert reason is not None and reason.startswith("audio_duration_unknown: ")
    missing = copy_of(b"--" + BOUNDARY.encode() + b"--\r\n")
    assert probe_upload(missing, CONTENT_TYPE) == (
        None,
        "audio_duration_unknown: no file part in the upload",
    )


@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.integers(min_value=0), max_size=12), memory=st.sampled_from([64, 4096]))
def test_any_chunking_of_the_upload_gives_the_same_duration(pieces: list[int], memory: int) -> None:
    body = multipart(wav_bytes(3.25), model="whisper-1", response_format="srt")
    copy = copy_of(body, pieces, memory_limit=memory)
    try:
        assert probe_upload(copy, CONTENT_TYPE) == (Decimal(4), None)
    finally:
        copy.close()


# --- the tee the forwarder runs -----------------------------------------------------------------


async def test_tee_sees_every_chunk_then_the_end_and_passes_the_body_unchanged() -> None:
    seen: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"head", b"middle", b"tail"):
            yield chunk

    teed = tee_body(body(), seen.append, lambda exc: None)
    assert not isinstance(teed, bytes)
    out = [chunk async for chunk in teed]
    assert out == [b"head", b"middle", b"tail"]
    assert seen == [b"head", b"middle", b"tail", b""]
    whole: list[bytes] = []
    assert tee_body(b"all", whole.append, lambda exc: None) == b"all"
    assert whole == [b"all", b""]


async def test_a_failing_tee_is_reported_once_and_the_body_goes_on() -> None:
    errors: list[BaseException] = []

    def broken(chunk: bytes) -> None:
        raise OSError("disk full")

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b", b"c"):
            yield chunk

    teed = tee_body(body(), broken, errors.append)
    assert not isinstance(teed, bytes)
    assert [chunk async for chunk in teed] == [b"a", b"b", b"c"]
    assert len(errors) == 1
