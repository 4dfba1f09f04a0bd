"""The already-normalised fast path of ``normalize_path`` must agree with the full resolution."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

import proxy.http.forward as forward
from proxy.http.forward import normalize_path

_NEVER = re.compile(r"(?!x)x")
_PIECES = st.sampled_from(
    ["v1", "chat", "a", "Z9", ".", "..", "", "~", "_", "-", "%2e", "%2F", "%41", "\\", "a b", "é"]
)


def _slow(raw: str) -> tuple[str, str] | None:
    saved = forward._PLAIN_PATH
    forward._PLAIN_PATH = _NEVER  # force the full decode/resolve/re-encode path
    try:
        return normalize_path(raw)
    finally:
        forward._PLAIN_PATH = saved


@given(st.lists(_PIECES, max_size=8), st.booleans())
def test_fast_path_agrees_with_full_resolution(pieces: list[str], trailing: bool) -> None:
    raw = "/" + "/".join(pieces) + ("/" if trailing else "")
    assert normalize_path(raw) == _slow(raw)


def test_common_paths_take_the_fast_path_and_tricky_ones_do_not() -> None:
    for plain in ("/v1/chat/completions", "/v1/responses/resp_1/", "/v1/files/file-a.b~c"):
        assert forward._PLAIN_PATH.fullmatch(plain) is not None
        assert normalize_path(plain) == (plain, plain)
    for tricky in ("/v1/../meter", "/v1/./x", "/v1//x", "/v1/%2e%2e/x", "/v1/a\\..\\b", "/v1/.."):
        assert forward._PLAIN_PATH.fullmatch(tricky) is None
    assert normalize_path("/v1/..") == ("/", "/")
