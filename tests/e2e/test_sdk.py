"""The official openai SDK through the proxy sees exactly what it sees from the fake directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer

MESSAGES = [{"role": "user", "content": "Say hello"}]


class _Clients:
    """Async clients made by a test, closed on its own loop when it ends."""

    def __init__(self) -> None:
        self.made: list[openai.AsyncOpenAI] = []

    def __call__(self, base_url: str) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(api_key="sk-test-123", base_url=base_url, max_retries=0)
        self.made.append(client)
        return client


@pytest.fixture
async def _async() -> AsyncIterator[_Clients]:
    clients = _Clients()
    yield clients
    for client in clients.made:
        await client.close()


async def test_chat_completion_objects_equal_direct_and_through_proxy(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    direct = await _async(fake_upstream.url + "/v1").chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    via = await _async(proxy_server.base_url).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert via.model_dump(exclude={"id", "created"}) == direct.model_dump(exclude={"id", "created"})
    assert via.usage is not None and via.usage.prompt_tokens == 12
    seen = fake_upstream.requests[-1]
    assert seen.json == {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert seen.headers["Authorization"] == "Bearer sk-test-123"


async def test_non_stream_bodies_are_byte_identical(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    client = _async(proxy_server.base_url)
    raw = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hi"
    )
    direct = await _async(fake_upstream.url + "/v1").embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hi"
    )
    assert raw.content == direct.content
    assert raw.request_id == "req_emb"


async def test_stream_delivers_the_same_events(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    async def collect(base_url: str) -> list[dict[str, object]]:
        stream = await _async(base_url).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        return [c.model_dump(exclude={"created", "id"}) async for c in stream]

    direct = await collect(fake_upstream.url + "/v1")
    via = await collect(proxy_server.base_url)
    assert via == direct
    assert via[-1]["choices"] == [] and via[-1]["usage"] is not None


async def test_responses_stream_ends_with_completed(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    stream = await _async(proxy_server.base_url).responses.create(
        model="gpt-4o-mini", input="hi", stream=True
    )
    types = [event.type async for event in stream]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"


async def test_sync_client_in_thread(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    # The servers run on this test's loop, so the sync client runs in a worker thread.
    def call() -> tuple[str, str]:
        client = openai.OpenAI(api_key="sk-sync", base_url=proxy_server.base_url, max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        chunks = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return completion.choices[0].message.content or "", text

    full, streamed = await asyncio.to_thread(call)
    assert full == streamed == "Hello from the"


async def test_upstream_error_status_and_body_pass_through(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    body = b'{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}'
    fake_upstream.fail(429, body=body, headers={"retry-after": "7", "x-should-retry": "false"})
    with pytest.raises(openai.RateLimitError) as info:
        await _async(proxy_server.base_url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert info.value.response.content == body
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.request_id is not None and info.value.request_id.startswith("req_fail")


async def test_transcription_multipart_and_binary_speech(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, _async: _Clients
) -> None:
    client = _async(proxy_server.base_url)
    audio = bytes(range(256)) * 40
    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("a.wav", audio, "audio/wav")
    )
    assert result.text == "hello world"
    assert fake_upstream.requests[-1].form["file"] == audio
    assert fake_upstream.requests[-1].form["model"] == "gpt-4o-mini-transcribe"

    speech = await client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    expected = b"".join(bytes(range(256)) * (i + 1) for i in range(4))
    assert speech.content == expected
