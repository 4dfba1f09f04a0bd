"""Bearer checks for the proxy's own endpoints: never an exception, whatever the header holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.http.bearer import bearer_matches, bearer_token


def test_well_formed_bearer() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_matches("Bearer t0ken", "t0ken")
    assert not bearer_matches("Bearer t0ken2", "t0ken")


def test_malformed_or_non_ascii_is_no_token() -> None:
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer a b",
        "Bearer \udcff\udcfe",  # b"\xff\xfe" as aiohttp decodes it (surrogateescape)
        "Bearer t\u00f6ken",
        "Bearer tok\x00en",
        "Bearer tok\ten",
    ):
        assert bearer_token(header) is None, header
        assert not bearer_matches(header, "t0ken")


def test_a_non_ascii_configured_token_compares_without_raising() -> None:
    assert not bearer_matches("Bearer abc", "t\u00f6ken\udcff")


@given(st.text(), st.text(min_size=1))
def test_never_raises(header: str, token: str) -> None:
    bearer_matches(header, token)
    bearer_matches("Bearer " + header, token)
