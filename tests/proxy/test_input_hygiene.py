"""Hostile input, the small ones (issue 11): one test per case.

* non-ASCII or malformed ``Authorization`` on admin routes -> 401, never 500;
* key-like values in ``X-Meter-Tags``, the body's ``user``, ``OpenAI-Project`` and
  ``OpenAI-Organization`` -> stored as fingerprints, never served by ``/meter/records``;
* virtual-key look-alikes (any case, or in an ``api-key`` header) -> 401, never forwarded;
* a head dribbled byte by byte is cut off; idle keep-alive connections are closed; a long stream
  is not cut;
* ``metrics.token`` protects ``/metrics`` on the main and the separate port.

Raw sockets where a client library would refuse to send the bytes (or would hide the timing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from multidict import CIMultiDict

from proxy.observe.metrics_api import METRICS_ADDRESS_KEY
from proxy.teams.attribution import key_fingerprint, looks_like_key, scrubbed
from tests.support.fake_upstream import WORDS, FakeUpstream
from tests.support.product import Product, share_encodings
from tests.support.proxy_server import ProxyServer, settings_for

ADMIN = "adm1n-t0ken"
SDK_KEY = "sk-hygiene-client-key-0001"


@pytest.fixture(autouse=True)
def _encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


async def raw_request(port: int, head: bytes) -> bytes:
    """Send ``head`` as-is on a fresh connection; return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


# ---------------------------------------------------------------- admin Authorization


@pytest.fixture
async def product(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Product]:
    async with Product(
        fake_upstream.url, tmp_path, admin={"token": ADMIN}, metrics={"token": "m3trics"}
    ) as p:
        yield p


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe",
        b"Bearer \xc3\xa9t\xc3\xa9",  # valid UTF-8, not ASCII
        b"\xff\xfe",
        b"Bearer",
        b"Bearer ",
        b"Bearer  " + ADMIN.encode() + b" extra",
        b"Basic " + ADMIN.encode(),
        b"Bearer " + ADMIN.encode() + b"\xff",
        b"Bearer " + b"A" * 8000,
    ],
)
async def test_malformed_or_non_ascii_authorization_on_admin_routes_is_401(
    product: Product, authorization: bytes
) -> None:
    head = (
        b"GET /meter/records HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + authorization
        + b"\r\nConnection: close\r\n\r\n"
    )
    status = await raw_request(product.server.port, head)
    assert status.startswith(b"HTTP/1.1 401"), status
    # ...and the right token still works.
    ok = b"GET /meter/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN.encode()
    assert (
        await raw_request(product.server.port, ok + b"\r\nConnection: close\r\n\r\n")
    ).startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------- key-like values in records

KEYS = {
    "tag": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123",
    "user": "SK-ADMIN-abcdefghijklmnop",
    "project": "sk-abcdefghijklmnopqrstuvwxyz012345",
    "organization": "Sk-Meter-zyxwvutsrqponmlk",
}


def test_key_like_values_are_recognised_in_any_case_but_words_are_not() -> None:
    for value in (*KEYS.values(), "prefix sk-abcdefgh1234", "x=sk-proj-12345678"):
        assert looks_like_key(value), value
        assert scrubbed(value) == key_fingerprint(value)
    for value in ("task-abcdefghij", "sk-learn", "desk-0123456789", "user-42", "proj_abc123"):
        assert not looks_like_key(value), value
        assert scrubbed(value) == value


async def test_key_like_attribution_values_are_stored_as_fingerprints(
    product: Product, fake_upstream: FakeUpstream
) -> None:
    client = product.sdk(SDK_KEY)
    await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        user=KEYS["user"],
        extra_headers={
            "X-Meter-Tags": f"ticket={KEYS['tag']},env=prod",
            "OpenAI-Project": KEYS["project"],
            "OpenAI-Organization": KEYS["organization"],
        },
    )
    (row,) = await product.wait_rows(1)
    assert row["user"] == key_fingerprint(KEYS["user"])
    assert row["project"] == key_fingerprint(KEYS["project"])
    assert row["organization"] == key_fingerprint(KEYS["organization"])
    assert row["tags"] == {"ticket": key_fingerprint(KEYS["tag"]), "env": "prod"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            product.url + "/meter/records", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r,
    ):
        body = await r.text()
    assert r.status == 200
    for key in (*KEYS.values(), SDK_KEY):
        assert key not in body and key.lower() not in body.lower()
    # The upstream still received the request exactly as sent (the proxy stays transparent).
    assert fake_upstream.requests[-1].headers["OpenAI-Project"] == KEYS["project"]


async def test_a_tag_key_stored_as_a_fingerprint_can_be_filtered_and_grouped_by(
    product: Product,
) -> None:
    """A key-like tag *key* is stored as its ``sha256:`` fingerprint; ``tag=KEY=VALUE`` and
    ``by=tag:KEY`` take that fingerprint (the grammar used to refuse its ``:``), and the raw key
    too, fingerprinted the same way -- never echoed back."""
    client = product.sdk(SDK_KEY)
    for env in ("prod", "dev"):
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Meter-Tags": f"{KEYS['tag']}={env},ticket={KEYS['tag']}"},
        )
    rows = await product.wait_rows(2)
    stored = key_fingerprint(KEYS["tag"])
    assert sorted(r["tags"][stored] for r in rows) == ["dev", "prod"]
    auth = {"Authorization": f"Bearer {ADMIN}"}

    async def get(path: str, status: int = 200) -> Any:
        async with (
            aiohttp.ClientSession(headers=auth) as session,
            session.get(product.url + path) as r,
        ):
            body = await r.text()
        assert r.status == status, body
        assert KEYS["tag"] not in body and KEYS["tag"].lower() not in body.lower()
        return orjson.loads(body)

    for key in (stored, KEYS["tag"]):  # the fingerprint, or the raw key fingerprinted alike
        records = (await get(f"/meter/records?tag={key}=prod"))["records"]
        assert [r["tags"][stored] for r in records] == ["prod"]
        spend = await get(f"/meter/spend?since=1d&by=tag:{key},team")
        assert spend["by"] == [f"tag:{stored}", "team"]
        assert sorted((row[f"tag:{stored}"], row["requests"]) for row in spend["rows"]) == [
            ("dev", 1),
            ("prod", 1),
        ]
    # a key-like tag value is matched the same way
    records = (await get(f"/meter/records?tag=ticket={KEYS['tag']}"))["records"]
    assert len(records) == 2
    # what is not a tag key is still a 400: a fingerprint with the wrong digits, or another colon
    for bad in (
        "sha256:ABCDEF012345",
        "sha256:0123456789a",
        "sha256:0123456789abc",
        "sha1:0123456789ab",
        "a:b",
        "sha256:",
    ):
        await get(f"/meter/records?tag={bad}=prod", status=400)
        await get(f"/meter/spend?since=1d&by=tag:{bad}", status=400)


async def test_a_key_in_a_malformed_tags_header_is_not_echoed(product: Product) -> None:
    client = product.sdk(SDK_KEY)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Meter-Tags": KEYS["tag"]},  # not key=value
        )
    assert KEYS["tag"] not in str(info.value.body)
    assert key_fingerprint(KEYS["tag"]) in str(info.value.body)


# ---------------------------------------------------------------- virtual-key look-alikes


@pytest.fixture
async def vk_product(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Product]:
    async with Product(
        fake_upstream.url,
        tmp_path,
        upstream={"api_key": "sk-real-upstream-key-123456"},
        virtual_keys={"enabled": True},
    ) as p:
        yield p


@pytest.mark.parametrize(
    "key",
    ["SK-METER-abcdefghijklmnop", "Sk-Meter-abcdefghijklmnop", "sk-meter-", "sK-mEtEr-x"],
)
async def test_virtual_key_look_alikes_in_authorization_are_refused_not_forwarded(
    vk_product: Product, fake_upstream: FakeUpstream, key: str
) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        await vk_product.sdk(key).models.list()
    assert info.value.code == "invalid_api_key"
    assert key not in str(info.value.body)
    assert fake_upstream.requests == []


async def test_non_utf8_virtual_key_is_refused_not_forwarded(
    vk_product: Product, fake_upstream: FakeUpstream
) -> None:
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-meter-\xff\xfe\r\n"
    status = await raw_request(vk_product.server.port, head + b"Connection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 401"), status
    assert fake_upstream.requests == []


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_virtual_key_in_an_api_key_header_is_refused_not_forwarded(
    fake_upstream: FakeUpstream, tmp_path: Path, enabled: bool
) -> None:
    sections: dict[str, Any] = {"virtual_keys": {"enabled": enabled}}
    if enabled:
        sections["upstream"] = {"api_key": "sk-real-upstream-key-123456"}
    async with Product(fake_upstream.url, tmp_path, **sections) as product:
        client = product.sdk(SDK_KEY)
        for value in ("sk-meter-abcdefghijklmnop", "SK-METER-abcdefghijklmnop"):
            with pytest.raises(openai.AuthenticationError):
                await client.models.list(extra_headers={"api-key": value})
        assert fake_upstream.requests == []
        await client.models.list(extra_headers={"api-key": "not-a-virtual-key"})
        assert len(fake_upstream.requests) == 1


# ---------------------------------------------------------------- connection timeouts


@pytest.fixture
async def quick_timeouts(fake_upstream: FakeUpstream) -> AsyncIterator[ProxyServer]:
    settings = settings_for(
        fake_upstream.url,
        server={"header_timeout_s": 0.5, "idle_timeout_s": 0.5, "shutdown_grace_s": 1.0},
    )
    async with ProxyServer(settings) as server:
        yield server


@pytest.fixture
async def header_guard_only(fake_upstream: FakeUpstream) -> AsyncIterator[ProxyServer]:
    """A short header timeout, a long idle timeout: only the head deadline can cut here."""
    settings = settings_for(
        fake_upstream.url,
        server={"header_timeout_s": 0.5, "idle_timeout_s": 60.0, "shutdown_grace_s": 1.0},
    )
    async with ProxyServer(settings) as server:
        yield server


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length body; returns its status line."""
    status = await asyncio.wait_for(reader.readline(), 10)
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def closed_by_server(reader: asyncio.StreamReader, deadline_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), deadline_s) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_head_dribbled_byte_by_byte_is_cut_off(header_guard_only: ProxyServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", header_guard_only.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    sent = 0
    try:
        for byte in head:  # one byte every 0.1 s: the whole head would take 12 s
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.1)
            if reader.at_eof() or writer.is_closing():
                break
    except ConnectionError:
        pass
    assert await closed_by_server(reader, 5.0)
    assert sent < len(head)  # cut off before the head was complete
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed(header_guard_only: ProxyServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", header_guard_only.port)
    assert await closed_by_server(reader, 5.0)
    writer.close()


@pytest.mark.parametrize("split", [1, 5, 17, 33])
async def test_a_head_in_pieces_within_the_deadline_is_served(
    header_guard_only: ProxyServer, split: int
) -> None:
    """The head's end may straddle chunks (CRLF CRLF split anywhere); after it, no deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", header_guard_only.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(0, len(head), split):
        writer.write(head[i : i + split])
        await writer.drain()
        await asyncio.sleep(0.01)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(1.0)  # past the head deadline: the kept-alive connection still serves
    writer.write(head)
    await writer.drain()
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_500_idle_keep_alive_connections_are_closed(quick_timeouts: ProxyServer) -> None:
    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", quick_timeouts.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
            await writer.drain()
            status = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 200"), status
            return await closed_by_server(reader, 10.0)  # nothing more, then closed
        finally:
            writer.close()

    results = await asyncio.gather(*(one() for _ in range(500)))
    assert all(results)


async def test_a_long_stream_is_not_cut_by_either_timeout(
    quick_timeouts: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.chunk_delay_s = 0.2
    fake_upstream.stream_events = 10  # ~2.4 s of streaming, far beyond both 0.5 s timeouts
    client = openai.AsyncOpenAI(api_key=SDK_KEY, base_url=quick_timeouts.base_url, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "".join(WORDS)  # all ten words arrived
        # The same keep-alive connection serves the next call after the stream.
        await client.models.list()
    finally:
        await client.close()


# ---------------------------------------------------------------- metrics.token


async def test_metrics_token_protects_both_metrics_endpoints(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with Product(
        fake_upstream.url, tmp_path, metrics={"token": "m3trics", "port": 0}
    ) as product:
        host, port = product.app[METRICS_ADDRESS_KEY]
        async with aiohttp.ClientSession() as session:
            for url in (product.url + "/metrics", f"http://{host}:{port}/metrics"):
                async with session.get(url) as r:
                    assert r.status == 401
                    assert orjson.loads(await r.read())["error"]["code"] == "invalid_metrics_token"
                async with session.get(url, headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401
                async with session.get(url, headers={"Authorization": "Bearer m3trics"}) as r:
                    assert r.status == 200
                    assert b"openai_meter" in await r.read()
        status = await raw_request(
            product.server.port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert status.startswith(b"HTTP/1.1 401")


async def test_metrics_open_without_a_token(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    async with Product(fake_upstream.url, tmp_path) as product:
        status = await raw_request(
            product.server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "name", ["Authorization", "api-key", "OpenAI-Project", "OpenAI-Organization", "X-Meter-Tags"]
)
async def test_a_header_that_decides_who_pays_twice_is_refused_never_forwarded(
    product: Product, fake_upstream: FakeUpstream, name: str
) -> None:
    """Found by attacking the merged product: two ``Authorization`` headers were both forwarded
    while only the first was metered (and a second ``X-Meter-Tags`` was silently dropped)."""
    values = {
        "Authorization": ("Bearer sk-team-a-0123456789", "Bearer sk-team-b-0123456789"),
        "api-key": ("key-a", "key-b"),
        "OpenAI-Project": ("proj_a", "proj_b"),
        "OpenAI-Organization": ("org-a", "org-b"),
        "X-Meter-Tags": ("env=a", "env=b"),
    }[name]
    headers = [("Content-Type", "application/json"), *((name, v) for v in values)]
    if name != "Authorization":
        headers.append(("Authorization", "Bearer sk-team-a-0123456789"))
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            product.base_url + "/chat/completions", data=body, headers=CIMultiDict(headers)
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    assert (error["code"], error["param"]) == ("duplicate_header", name)
    assert fake_upstream.requests == []
