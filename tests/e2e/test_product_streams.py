"""The whole product (``create_app``) with the official SDK: streams are metered exactly and unchanged.

Issue 4: a chat / legacy completions stream that did not ask for usage gets it injected upstream,
the usage-only chunk is hidden from the client, and the ledger carries the upstream's exact usage.
Cut streams and client disconnects still end in exactly one (estimated) record.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from proxy.usage.encodings import load_offline
from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.product import Product, share_encodings

# What the SDK raises when the stream it is reading breaks off (no terminating chunk).
STREAM_BROKEN = (openai.APIError, httpx2.HTTPError)
USAGE = FakeUsage(input_tokens=41, output_tokens=7)
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
# Long enough that "close to a tiktoken count" means something.
PROMPT = (
    "Summarise the quarterly cost report for the search team in three short bullet points, "
    "naming the most expensive model, the share of cached input tokens, and one saving idea."
)


def _dump(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c.model_dump(exclude={"id", "created"}) for c in chunks]


async def _collect(client: openai.AsyncOpenAI, **extra: Any) -> list[Any]:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra
    )
    return [chunk async for chunk in stream]


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def upstream() -> Any:
    async with FakeUpstream(usage=USAGE) as up:
        yield up


async def test_async_stream_without_include_usage_is_unchanged_and_metered_exactly(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    direct_client = openai.AsyncOpenAI(
        api_key="sk-test-x", base_url=upstream.url + "/v1", max_retries=0
    )
    try:
        direct = await _collect(direct_client)
    finally:
        await direct_client.close()
    async with Product(upstream.url, tmp_path) as product:
        via = await _collect(product.sdk())
    # Exactly the chunks of the direct stream: no extra usage-only chunk, no usage field added.
    assert _dump(via) == _dump(direct)
    assert all(chunk.choices for chunk in via)
    assert all(chunk.usage is None for chunk in via)
    # ...while the upstream was asked for usage.
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    [row] = await product.rows()
    assert (row["input_tokens"], row["output_tokens"]) == (41, 7)
    assert row["usage_source"] == "reported"
    assert row["stream"] is True and row["outcome"] == "ok"
    assert row["model"] == "gpt-4o-mini-2024-07-18"


async def test_sync_sdk_stream_without_include_usage_is_unchanged_and_metered(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    def collect(base_url: str) -> list[dict[str, Any]]:
        with openai.OpenAI(api_key="sk-test-sync", base_url=base_url, max_retries=0) as client:
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            return _dump(list(stream))

    direct = await asyncio.to_thread(collect, upstream.url + "/v1")
    async with Product(upstream.url, tmp_path) as product:
        via = await asyncio.to_thread(collect, product.base_url)
    assert via == direct
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    [row] = await product.rows()
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (41, 7, "reported")


async def test_client_that_asked_for_usage_gets_the_usage_chunk_untouched(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    direct_client = openai.AsyncOpenAI(
        api_key="sk-test-x", base_url=upstream.url + "/v1", max_retries=0
    )
    try:
        direct = await _collect(direct_client, stream_options={"include_usage": True})
    finally:
        await direct_client.close()
    async with Product(upstream.url, tmp_path) as product:
        via = await _collect(product.sdk(), stream_options={"include_usage": True})
    assert _dump(via) == _dump(direct)
    last = via[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (41, 7)
    [row] = await product.rows()
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (41, 7, "reported")


async def test_legacy_completions_stream_without_usage_is_unchanged_and_metered(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    async def collect(client: openai.AsyncOpenAI) -> list[dict[str, Any]]:
        stream = await client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True
        )
        return _dump([c async for c in stream])

    direct_client = openai.AsyncOpenAI(
        api_key="sk-test-x", base_url=upstream.url + "/v1", max_retries=0
    )
    try:
        direct = await collect(direct_client)
    finally:
        await direct_client.close()
    async with Product(upstream.url, tmp_path) as product:
        via = await collect(product.sdk())
    assert via == direct
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    [row] = await product.rows()
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (41, 7, "reported")
    assert row["endpoint"] == "completions" and row["cost_usd"] is not None


# -- cut streams and client disconnects -------------------------------------------------------


def _prompt_tokens() -> int:
    return len(load_offline("o200k_base").encode_ordinary(PROMPT))


def _assert_plausible_estimate(row: dict[str, Any]) -> None:
    assert row["usage_source"] == "estimated"
    # The cookbook recipe adds a few tokens per message and for the reply's priming.
    assert _prompt_tokens() <= row["input_tokens"] <= _prompt_tokens() + 8
    assert row["output_tokens"] > 0  # deltas were seen
    assert row["cost_usd"] is not None and row["cost_usd"] > 0


async def test_upstream_cut_mid_stream_gives_one_estimated_record(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.stream_events = 8
    upstream.cut_after = 4  # role chunk + 3 words, then the connection drops
    async with Product(upstream.url, tmp_path) as product:
        client = product.sdk()
        seen: list[Any] = []
        with pytest.raises(STREAM_BROKEN):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            async for chunk in stream:
                seen.append(chunk)
        assert len(seen) == 4
    [row] = await product.rows()
    assert row["outcome"] == "upstream_error"
    _assert_plausible_estimate(row)


async def test_client_disconnect_mid_stream_gives_one_estimated_record(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.stream_events = 200
    upstream.chunk_delay_s = 0.01
    async with Product(upstream.url, tmp_path) as product:
        client = product.sdk()
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 4:
                break
        await stream.close()
        await asyncio.wait_for(upstream.stream_cancelled.wait(), 10)
    [row] = await product.rows()
    assert row["outcome"] == "client_disconnect"
    _assert_plausible_estimate(row)


# -- the same promises with the upstream's bytes split at arbitrary positions -------------------


async def _split_scenario(offsets: list[int], cut: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeUpstream(usage=USAGE) as up:
            up.sse_split = offsets
            up.stream_events = 5
            if cut:
                up.cut_after = 4
            async with Product(up.url, Path(tmp)) as product:
                client = product.sdk()
                chunks: list[Any] = []
                try:
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": PROMPT}],
                        stream=True,
                    )
                    async for chunk in stream:
                        chunks.append(chunk)
                except STREAM_BROKEN:
                    assert cut
            rows = await product.rows()
        assert len(rows) == 1
        if cut:
            assert len(chunks) == 4
            assert rows[0]["outcome"] == "upstream_error"
            _assert_plausible_estimate(rows[0])
        else:
            # role chunk + 5 words + finish chunk; the injected usage chunk is hidden.
            assert len(chunks) == 7 and all(c.choices for c in chunks)
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
                "Hello from the fake upstream"
            )
            assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (41, 7)
            assert rows[0]["usage_source"] == "reported"


# Each example starts an app (~0.3 s): no shrinking phase, so a failure reports in seconds, not minutes.
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(offsets=st.lists(st.integers(min_value=0, max_value=4000), max_size=12), cut=st.booleans())
def test_streams_split_at_arbitrary_bytes_are_metered_the_same(
    offsets: list[int], cut: bool
) -> None:
    asyncio.run(_split_scenario(offsets, cut))
