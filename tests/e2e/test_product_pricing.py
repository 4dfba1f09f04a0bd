"""The whole product (``create_app``) prices what happened, on every endpoint, with the official SDK.

Expected costs are computed here from the published rates (USD per 1M tokens / per minute / per 1M
characters), written down with their source, never asked of the engine. A ledger ``cost_usd`` is a
``Decimal`` and must equal the expected amount exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.product import Product, share_encodings

M = Decimal(1_000_000)
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]

# gpt-4o-mini, standard tier: https://platform.openai.com/docs/models/gpt-4o-mini (seed 004)
MINI_IN, MINI_CACHED, MINI_OUT = Decimal("0.15"), Decimal("0.075"), Decimal("0.60")
# o4-mini, standard: https://openai.com/api/pricing/ (seed 000)
O4_IN, O4_CACHED, O4_OUT = Decimal("1.10"), Decimal("0.275"), Decimal("4.40")
# gpt-4o-audio-preview-2024-12-17: OpenAI pricing table of 2025-01-08 (seed 001), per 1K tokens
# 0.0025 / 0.01 text, 0.04 / 0.08 audio -> per 1M:
AUDIO_TEXT_IN, AUDIO_TEXT_OUT = Decimal("2.50"), Decimal("10.00")
AUDIO_IN, AUDIO_OUT = Decimal("40.00"), Decimal("80.00")
# text-embedding-3-small: https://platform.openai.com/docs/pricing (seed 003)
EMBED_IN = Decimal("0.02")
# gpt-3.5-turbo-instruct: seed 001, per 1K tokens 0.0015 / 0.0020 -> per 1M:
INSTRUCT_IN, INSTRUCT_OUT = Decimal("1.50"), Decimal("2.00")
# whisper-1: https://developers.openai.com/api/docs/models/whisper-1 ($0.006 per minute)
WHISPER_PER_MINUTE = Decimal("0.006")
# gpt-4o-transcribe: text in 2.50, audio in 6.00, output 10.00 per 1M (API reference §6.5)
TRANSCRIBE_AUDIO_IN, TRANSCRIBE_OUT = Decimal("6.00"), Decimal("10.00")
# tts-1: $15 per 1M characters (official tts-1 model page)
TTS1_PER_1M_CHARS = Decimal("15.00")


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def product(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Product]:
    async with Product(fake_upstream.url, tmp_path) as running:
        yield running


# -- 3. token kinds land in the right columns and are priced by the catalog ---------------------


async def test_cached_and_reasoning_tokens_in_their_columns_and_priced_once(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.model = "o4-mini-2025-04-16"
    fake_upstream.usage = FakeUsage(
        input_tokens=2000, cached_tokens=1024, output_tokens=900, reasoning_tokens=640
    )
    client = product.sdk()
    await client.chat.completions.create(model="o4-mini", messages=MESSAGES)
    stream = await client.chat.completions.create(model="o4-mini", messages=MESSAGES, stream=True)
    async for _ in stream:
        pass
    await product.stop()
    rows = await product.rows()
    assert len(rows) == 2
    expected = ((2000 - 1024) * O4_IN + 1024 * O4_CACHED + 900 * O4_OUT) / M
    for row in rows:
        assert row["model"] == "o4-mini-2025-04-16"
        assert (row["input_tokens"], row["cached_input_tokens"]) == (2000, 1024)
        assert (row["output_tokens"], row["reasoning_tokens"]) == (900, 640)
        assert row["usage_source"] == "reported"
        assert row["cost_usd"] == expected
        assert row["price_ref"].startswith("o4-mini@")


async def test_audio_tokens_in_their_columns_and_priced_at_audio_rates(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.model = "gpt-4o-audio-preview-2024-12-17"
    fake_upstream.usage = FakeUsage(
        input_tokens=300, audio_input_tokens=250, output_tokens=400, audio_output_tokens=350
    )
    await product.sdk().chat.completions.create(
        model="gpt-4o-audio-preview-2024-12-17", messages=MESSAGES
    )
    await product.stop()
    [row] = await product.rows()
    assert (row["input_tokens"], row["audio_input_tokens"]) == (300, 250)
    assert (row["output_tokens"], row["audio_output_tokens"]) == (400, 350)
    expected = (50 * AUDIO_TEXT_IN + 250 * AUDIO_IN + 50 * AUDIO_TEXT_OUT + 350 * AUDIO_OUT) / M
    assert row["cost_usd"] == expected


async def test_prediction_tokens_in_their_columns_and_billed_as_output(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.usage = FakeUsage(
        input_tokens=500,
        output_tokens=120,
        accepted_prediction_tokens=40,
        rejected_prediction_tokens=25,
    )
    await product.sdk().chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        prediction={"type": "content", "content": "predicted text"},
    )
    await product.stop()
    [row] = await product.rows()
    assert (row["accepted_prediction_tokens"], row["rejected_prediction_tokens"]) == (40, 25)
    # Rejected prediction tokens are already inside completion_tokens: billed once, as output.
    assert row["cost_usd"] == (500 * MINI_IN + 120 * MINI_OUT) / M


async def test_cached_tokens_on_a_stream_with_injected_usage(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.usage = FakeUsage(input_tokens=3000, cached_tokens=2048, output_tokens=50)
    stream = await product.sdk().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async for _ in stream:
        pass
    await product.stop()
    [row] = await product.rows()
    assert row["cached_input_tokens"] == 2048 and row["usage_source"] == "reported"
    assert row["cost_usd"] == ((3000 - 2048) * MINI_IN + 2048 * MINI_CACHED + 50 * MINI_OUT) / M


# -- 4. Responses (JSON and stream), embeddings, legacy completions -----------------------------


async def test_responses_embeddings_and_completions_one_priced_record_each(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.usage = FakeUsage(input_tokens=100, output_tokens=30)
    client = product.sdk()
    await client.responses.create(model="gpt-4o-mini", input="hi")
    stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    async for _ in stream:
        pass
    await client.embeddings.create(model="text-embedding-3-small", input="hi")
    await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    await product.stop()
    rows = sorted(await product.rows(), key=lambda r: (r["endpoint"], r["stream"]))
    assert [(r["endpoint"], r["stream"]) for r in rows] == [
        ("completions", False),
        ("embeddings", False),
        ("responses", False),
        ("responses", True),
    ]
    completions, embeddings, *responses = rows
    assert completions["model"] == "gpt-3.5-turbo-instruct"
    assert completions["price_ref"].startswith("gpt-3.5-turbo-instruct@")
    assert completions["cost_usd"] == (100 * INSTRUCT_IN + 30 * INSTRUCT_OUT) / M
    assert embeddings["model"] == "text-embedding-3-small"
    assert embeddings["price_ref"].startswith("text-embedding-3-small@")
    assert embeddings["cost_usd"] == 100 * EMBED_IN / M
    for row in responses:
        assert row["model"] == "gpt-4o-mini-2024-07-18"  # the response's snapshot
        assert row["model_requested"] == "gpt-4o-mini"
        assert row["response_id"].startswith("resp_")
        assert row["price_ref"] == "gpt-4o-mini@2024-07-18/standard"
        assert row["cost_usd"] == (100 * MINI_IN + 30 * MINI_OUT) / M
        assert row["usage_source"] == "reported"


# -- 5. audio: transcription (multipart) and speech ---------------------------------------------


async def test_transcriptions_and_speech_are_priced(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    client = product.sdk()
    audio = ("clip.wav", b"RIFF" + bytes(range(256)) * 64, "audio/wav")
    fake_upstream.transcription_seconds = 8.47  # whisper-1 reports a duration
    await client.audio.transcriptions.create(model="whisper-1", file=audio)
    fake_upstream.transcription_seconds = (
        None  # gpt-4o-transcribe reports tokens (12 audio in, 5 out)
    )
    await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio)
    text = "Hello from the metering proxy, spoken aloud."
    speech = await client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert len(speech.content) > 0
    await product.stop()
    by_model = {r["model"]: r for r in await product.rows()}
    assert set(by_model) == {"whisper-1", "gpt-4o-transcribe", "tts-1"}

    whisper = by_model["whisper-1"]
    assert whisper["endpoint"] == "audio.transcriptions"
    assert whisper["units"] == {"audio_seconds": Decimal("8.47")}
    assert whisper["cost_usd"] == Decimal("8.47") * WHISPER_PER_MINUTE / 60  # 0.000847 exactly

    transcribe = by_model["gpt-4o-transcribe"]
    assert (transcribe["input_tokens"], transcribe["audio_input_tokens"]) == (12, 12)
    assert transcribe["cost_usd"] == (12 * TRANSCRIBE_AUDIO_IN + 5 * TRANSCRIBE_OUT) / M

    tts = by_model["tts-1"]
    assert tts["units"] == {"characters": Decimal(len(text))}
    assert tts["cost_usd"] == len(text) * TTS1_PER_1M_CHARS / M


# -- 6. retrievals are metered once, across a restart -------------------------------------------


async def test_retrievals_are_metered_once_even_across_a_restart(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.usage = FakeUsage(input_tokens=100, output_tokens=30)
    priced = (100 * MINI_IN + 30 * MINI_OUT) / M
    async with Product(fake_upstream.url, tmp_path) as first:
        client = first.sdk()
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, store=True
        )
        response = await client.responses.create(model="gpt-4o-mini", input="hi", store=True)
        again = await client.chat.completions.retrieve(completion.id)
        assert again.usage is not None and again.usage.prompt_tokens == 100
        await client.responses.retrieve(response.id)
    async with Product(fake_upstream.url, tmp_path) as second:  # same database: a restart
        client = second.sdk()
        await client.chat.completions.retrieve(completion.id)
        await client.responses.retrieve(response.id)
    rows = await second.rows()
    assert len(rows) == 6  # one record per forwarded call...
    created = [r for r in rows if r["method"] == "POST"]
    retrieved = [r for r in rows if r["method"] == "GET"]
    assert [r["cost_usd"] for r in created] == [priced, priced]
    assert len(retrieved) == 4
    for row in retrieved:  # ...but the spend counts once
        assert row["cost_usd"] == 0
        assert row["input_tokens"] == row["output_tokens"] == 0
        assert row["price_ref"].startswith("already_metered:")
    assert sum(r["cost_usd"] for r in rows) == 2 * priced


# -- 7. unknown model: unpriced, never a silent $0 ----------------------------------------------


async def test_unknown_model_is_recorded_unpriced_and_counted(
    fake_upstream: FakeUpstream, product: Product
) -> None:
    fake_upstream.model = "gpt-unknown-9"
    await product.sdk().chat.completions.create(model="gpt-unknown-9", messages=MESSAGES)
    [row] = await product.wait_rows(1)
    assert row["cost_usd"] is None
    assert row["input_tokens"] == 12 and row["usage_source"] == "reported"
    async with aiohttp.ClientSession() as http:
        async with http.get(product.url + "/metrics") as r:
            metrics = await r.text()
        async with http.get(product.url + "/meter/spend", params={"since": "1d"}) as r:
            spend = await r.json()
    assert 'openai_meter_unpriced_requests_total{model="other"} 1.0' in metrics
    assert spend["total"]["unpriced_requests"] == 1
    assert spend["total"]["requests"] == 1
