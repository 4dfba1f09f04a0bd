"""Which headers cross the proxy; the per-name memo must never change an answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.http import headers as headers_module
from proxy.http.headers import client_response_headers, upstream_request_headers


def proxy_of(pairs: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


CLIENT = [
    ("Host", "127.0.0.1:8080"),
    ("Authorization", "Bearer sk-test"),
    ("Accept-Encoding", "gzip"),
    ("Content-Type", "application/json"),
    ("Content-Length", "70"),
    ("X-Meter-Tags", "a=b"),
    ("x-METER-anything", "1"),
    ("OpenAI-Project", "proj_1"),
    ("Keep-Alive", "timeout=5"),
    ("X-Custom", "1"),
    ("X-Custom", "2"),
]


def test_request_headers_drop_hop_by_hop_host_encoding_and_meter_headers() -> None:
    out = upstream_request_headers(proxy_of(CLIENT))
    assert list(out.items()) == [
        ("Authorization", "Bearer sk-test"),
        ("Content-Type", "application/json"),
        ("Content-Length", "70"),
        ("OpenAI-Project", "proj_1"),
        ("X-Custom", "1"),
        ("X-Custom", "2"),
    ]


def test_content_length_kept_or_dropped_per_call_not_per_memo() -> None:
    client = proxy_of(CLIENT)
    for _ in range(3):  # alternate: the memo of one drop set must not answer for another
        assert "Content-Length" in upstream_request_headers(client)
        assert "Content-Length" not in upstream_request_headers(client, keep_content_length=False)


def test_names_in_connection_are_dropped_only_for_that_message() -> None:
    with_connection = proxy_of([*CLIENT, ("Connection", "x-custom, keep-alive")])
    assert "X-Custom" not in upstream_request_headers(with_connection)
    assert upstream_request_headers(proxy_of(CLIENT)).getall("X-Custom") == ["1", "2"]


def test_authorization_is_replaced_for_virtual_keys() -> None:
    out = upstream_request_headers(proxy_of(CLIENT), authorization="Bearer sk-real")
    assert out.getall("Authorization") == ["Bearer sk-real"]


def test_traceparent_is_replaced_whatever_its_case_or_count_and_tracestate_passes() -> None:
    ours = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    client = proxy_of(
        [*CLIENT, ("TraceParent", "00-aa-bb-01"), ("traceparent", "x"), ("tracestate", "k=v")]
    )
    out = upstream_request_headers(client, traceparent=ours)
    assert out.getall("traceparent") == [ours]
    assert out.getall("tracestate") == ["k=v"]
    # without the proxy's own span, the client's headers cross untouched
    assert upstream_request_headers(client).getall("traceparent") == ["00-aa-bb-01", "x"]


def test_websocket_handshake_headers_are_not_forwarded() -> None:
    client = proxy_of([*CLIENT, ("Sec-WebSocket-Key", "abc"), ("Upgrade", "websocket")])
    out = upstream_request_headers(client, websocket=True)
    assert "Sec-WebSocket-Key" not in out and "Upgrade" not in out and "Content-Length" not in out
    assert "Sec-WebSocket-Key" in upstream_request_headers(client)


def test_response_headers_drop_encoding_length_and_hop_by_hop() -> None:
    upstream = proxy_of(
        [
            ("Content-Type", "text/event-stream"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("Transfer-Encoding", "chunked"),
            ("x-request-id", "req_1"),
        ]
    )
    assert list(client_response_headers(upstream).items()) == [
        ("Content-Type", "text/event-stream"),
        ("x-request-id", "req_1"),
    ]


def test_memo_stays_bounded_under_many_distinct_names() -> None:
    limit = headers_module._KEEP_CACHE_LIMIT
    pairs = [(f"X-Client-{i}", "v") for i in range(limit * 3)]
    out = client_response_headers(proxy_of(pairs))
    assert len(out) == limit * 3
    assert all(len(memo) <= limit for memo in headers_module._KEEP.values())


NAMES = st.sampled_from(
    [
        "Host",
        "host",
        "Connection",
        "TE",
        "te",
        "Content-Length",
        "content-length",
        "Content-Encoding",
        "Accept-Encoding",
        "X-Meter-Tags",
        "x-meter-tags",
        "X-Meter",
        "Authorization",
        "Upgrade",
        "Sec-WebSocket-Key",
        "X-Custom",
        "x-custom",
    ]
)


def reference(pairs: list[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    """The rule, spelled out without any memo."""
    first_connection = next((v for n, v in pairs if n.lower() == "connection"), "")
    listed = {t.strip().lower() for t in first_connection.split(",") if t.strip()}
    return [
        (n, v)
        for n, v in pairs
        if n.lower() not in drop
        and n.lower() not in listed
        and not n.lower().startswith("x-meter-")
    ]


@given(
    calls=st.lists(
        st.tuples(
            st.lists(
                st.tuples(NAMES, st.sampled_from(["1", "x-custom", "te, upgrade", ""])),
                max_size=8,
            ),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_calls_matches_the_rule(
    calls: list[tuple[list[tuple[str, str]], bool, bool]],
) -> None:
    for pairs, keep_length, websocket in calls:
        drop = headers_module._REQUEST_DROPS[(keep_length, websocket)]
        out = upstream_request_headers(
            proxy_of(pairs), keep_content_length=keep_length, websocket=websocket
        )
        assert list(out.items()) == reference(pairs, drop)
        response = client_response_headers(proxy_of(pairs))
        assert list(response.items()) == reference(pairs, headers_module._RESPONSE_DROP)
