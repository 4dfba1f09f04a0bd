"""Rate-limit header parsing and the transcribed usage-tier table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.observe.ratelimits import (
    USAGE_TIER_LIMITS,
    USAGE_TIERS,
    RateLimitState,
    parse_ratelimit_headers,
    parse_reset,
    tier_limits,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1s", 1.0),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("20", 20.0),
        ("  7s ", 7.0),
        ("250us", 0.00025),
    ],
)
def test_reset_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "6m0", "1x", "-3s", "-1", "inf", "s", "5s garbage"])
def test_unreadable_reset_is_ignored_not_an_error(text: str) -> None:
    assert parse_reset(text) is None


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_go_style_durations_round_trip(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s" if ms == 0 else f"{h}h{m}m{s}.{ms:03d}s"
    assert parse_reset(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


def test_headers_from_an_openai_response_are_read_case_insensitively() -> None:
    headers = CIMultiDict(
        {
            "X-RateLimit-Limit-Requests": "5000",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "1999985",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert parse_ratelimit_headers(headers) == (
        RateLimitState("requests", 5000, 4999, pytest.approx(0.012)),
        RateLimitState("tokens", 2_000_000, 1_999_985, 360.0),
    )


def test_missing_or_garbled_headers_leave_the_kind_out() -> None:
    headers = CIMultiDict(
        {"x-ratelimit-remaining-tokens": "-5", "x-ratelimit-remaining-requests": "42"}
    )
    assert parse_ratelimit_headers(headers) == (RateLimitState("requests", None, 42, None),)
    assert parse_ratelimit_headers(CIMultiDict()) == ()


def test_tier_table_matches_the_official_gpt_4o_mini_page() -> None:
    # platform.openai.com/docs/models/gpt-4o-mini (seed 004): the official Free row, not the
    # third-party article's 500 RPM.
    assert tier_limits("free") == {
        ("gpt-4o-mini", "rpm"): 3,
        ("gpt-4o-mini", "rpd"): 200,
        ("gpt-4o-mini", "tpm"): 40_000,
    }
    assert tier_limits("tier5")[("gpt-4o-mini", "tpm")] == 150_000_000
    assert tier_limits("tier1")[("gpt-4o-mini", "rpd")] == 10_000
    assert set(USAGE_TIER_LIMITS["gpt-4o-mini"]) == set(USAGE_TIERS)


def test_unknown_tier_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="tier1"):
        tier_limits("tier9")
