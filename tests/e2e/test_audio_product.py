"""Audio with no usage in the response, through the whole product (``create_app``) with the SDK.

whisper-1 ``text``/``srt``/``vtt`` transcriptions and translations carry no usage: the proxy
measures the uploaded audio (rounded up to whole seconds) and prices it per minute.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.support.audio_files import flac_bytes, wav_bytes
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings

# whisper-1: $0.006 per minute (developers.openai.com/api/docs/models/whisper-1, official).
WHISPER_PER_MINUTE = Decimal("0.006")


def whisper_cost(seconds: int) -> Decimal:
    return Decimal(seconds) * WHISPER_PER_MINUTE / 60


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def product(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Product]:
    fake_upstream.transcription_text = "hello world"
    async with Product(fake_upstream.url, tmp_path) as running:
        yield running


async def test_text_srt_vtt_transcriptions_are_priced_from_the_measured_duration(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    client = product.sdk()
    texts = []
    for fmt, seconds in (("text", 7.3), ("srt", 12.0), ("vtt", 0.4)):
        texts.append(
            await client.audio.transcriptions.create(
                model="whisper-1",
                file=(f"clip-{fmt}.wav", wav_bytes(seconds)),
                response_format=fmt,  # type: ignore[arg-type]
            )
        )
    assert all("hello world" in str(text) for text in texts)  # the client got the plain text
    rows = await product.wait_rows(3)
    by_seconds = sorted(rows, key=lambda r: r["units"]["audio_seconds"])
    for row, billed in zip(by_seconds, (1, 8, 12), strict=True):
        assert row["endpoint"] == "audio.transcriptions"
        assert row["model"] == "whisper-1"
        assert row["units"] == {"audio_seconds": Decimal(billed)}  # 0.4 -> 1, 7.3 -> 8, 12 -> 12
        assert row["usage_source"] == "estimated"
        assert row["estimate_reason"] == "audio_duration"
        assert row["cost_usd"] == whisper_cost(billed)
        assert row["price_ref"].startswith("whisper-1@")


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations
async def test_translations_json_and_text_are_priced_from_the_measured_duration(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    client = product.sdk()
    translated = await client.audio.translations.create(
        model="whisper-1", file=("talk.flac", flac_bytes(16000 * 61 + 8000))
    )
    assert translated.text == "hello world"
    await client.audio.translations.create(
        model="whisper-1", file=("talk.wav", wav_bytes(30.0)), response_format="text"
    )
    rows = await product.wait_rows(2)
    by_seconds = {row["units"]["audio_seconds"]: row for row in rows}
    assert set(by_seconds) == {Decimal(62), Decimal(30)}  # 61.5 s -> 62
    for seconds, row in by_seconds.items():
        assert row["endpoint"] == "audio.translations"
        assert row["cost_usd"] == whisper_cost(int(seconds))


async def test_a_spilled_upload_is_measured_and_forwarded_byte_for_byte(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    audio = wav_bytes(100.0, rate=16000)  # 3.2 MB: past the copy's 1 MiB of memory
    await product.sdk().audio.transcriptions.create(
        model="whisper-1", file=("long.wav", audio), response_format="text"
    )
    rows = await product.wait_rows(1)
    assert rows[0]["units"] == {"audio_seconds": Decimal(100)}
    assert rows[0]["cost_usd"] == whisper_cost(100)
    seen = fake_upstream.requests[-1]
    assert seen.body_size > len(audio)
    assert audio[:1000] in seen.head


async def test_reported_usage_wins_and_no_copy_is_probed(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.transcription_text = None
    fake_upstream.transcription_seconds = 8.47
    await product.sdk().audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav_bytes(3.0))
    )
    rows = await product.wait_rows(1)
    assert rows[0]["units"] == {"audio_seconds": Decimal("8.47")}  # what OpenAI said
    assert rows[0]["usage_source"] == "reported"


async def test_an_upstream_error_is_not_priced_from_the_upload(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.fail(400)
    client = product.sdk()
    with pytest.raises(Exception, match="fake upstream error 400"):
        await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav_bytes(3.0)), response_format="text"
        )
    rows = await product.wait_rows(1)
    assert rows[0]["status_code"] == 400
    assert rows[0]["units"] == {}
    assert rows[0]["cost_usd"] == 0


async def test_a_30_mb_upload_streams_through_and_is_recorded_unpriced_with_the_reason(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    chunk = b"\x00" * (1024 * 1024)
    total_chunks = 30
    head = (
        b'--b0undary\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="response_format"\r\n\r\ntext\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    ) + wav_bytes(1.0)
    tail = b"\r\n--b0undary--\r\n"
    upstream_started_early = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal upstream_started_early
        yield head
        for i in range(total_chunks):
            yield chunk
            if i == 2:
                # The upstream sees the first bytes while most of the upload is still to come.
                await asyncio.wait_for(fake_upstream.first_body_bytes.wait(), timeout=10)
                upstream_started_early = True
        yield tail

    size = len(head) + total_chunks * len(chunk) + len(tail)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            product.base_url + "/audio/translations",
            data=body(),
            headers={
                "Authorization": "Bearer sk-test-big",
                "Content-Type": "multipart/form-data; boundary=b0undary",
            },
        )
        assert response.status == 200
        assert await response.text() == "hello world"
    assert upstream_started_early
    assert fake_upstream.requests[-1].body_size == size
    rows = await product.wait_rows(1)
    row = rows[0]
    assert row["endpoint"] == "audio.translations"
    assert row["model"] == "whisper-1"
    assert row["cost_usd"] is None  # unpriced, never $0
    assert row["unpriced_reason"] == (
        f"audio_duration_unknown: upload of {size} bytes is over the "
        f"{26 * 1024 * 1024}-byte copy limit"
    )
