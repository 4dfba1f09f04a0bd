"""Report parameters: time spans, windows, grouping keys, money formatting (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.reporting import (
    ReportError,
    csv_text,
    money,
    parse_by,
    parse_instant,
    resolve_window,
)
from proxy.teams.fingerprints import key_fingerprint

NOW = datetime(2026, 11, 17, 15, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-10", datetime(2026, 10, 1, tzinfo=UTC)),
        ("2026-11-01T12:00:00Z", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01 12:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("1793448000", datetime(2026, 10, 31, 12, tzinfo=UTC)),
        ("today", datetime(2026, 11, 17, tzinfo=UTC)),
        ("now", NOW),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_times_beyond_the_utc_calendar_are_a_report_error(text: str) -> None:
    with pytest.raises(ReportError, match="out of range"):
        parse_instant(text, NOW)


@pytest.mark.parametrize("text", ["yesterday-ish", "7x", "2026-13-01", "", "-7d"])
def test_unreadable_time_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ReportError, match="7d, 24h"):
        parse_instant(text, NOW)


def test_default_window_is_this_utc_month_until_now() -> None:
    window = resolve_window(None, None, NOW)
    assert window.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert window.until == NOW


def test_default_window_from_a_non_utc_clock() -> None:
    # 00:30 on Dec 1 in UTC+2 is still November in UTC.
    local = datetime(2026, 12, 1, 0, 30, tzinfo=UTC) - timedelta(hours=2)
    window = resolve_window(None, None, local.astimezone())
    assert window.since == datetime(2026, 11, 1, tzinfo=UTC)


def test_relative_since_with_default_until() -> None:
    window = resolve_window("24h", None, NOW)
    assert (window.since, window.until) == (NOW - timedelta(hours=24), NOW)


def test_since_after_until_is_refused() -> None:
    with pytest.raises(ReportError, match="after"):
        resolve_window("2026-11-10", "2026-11-01", NOW)


def test_parse_by() -> None:
    assert parse_by("team, model,tag:env") == ("team", "model", "tag:env")
    assert parse_by(["team", "day,month"]) == ("team", "day", "month")
    assert parse_by(None) == ()
    assert parse_by("") == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("colour", "cannot group by 'colour'"),
        ("team,team", "twice"),
        ("tag:", "tag key"),
        ("tag:a b", "tag key"),
        ("team,model,project,user,day,month,endpoint", "at most"),
    ],
)
def test_parse_by_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ReportError, match=fragment):
        parse_by(text)


KEY_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@given(st.text(KEY_CHARS, min_size=8, max_size=50).map(lambda tail: f"sk-{tail}"))
def test_a_key_like_tag_key_groups_by_the_fingerprint_it_is_stored_as(key: str) -> None:
    """``--by tag:KEY`` / ``by=tag:KEY`` where KEY looks like an API key: the tag was stored under
    its fingerprint, so that is what is grouped by -- and that fingerprint is accepted as is."""
    stored = key_fingerprint(key)
    assert parse_by(f"tag:{key}") == (f"tag:{stored}",)
    assert parse_by(f"team,tag:{stored}") == ("team", f"tag:{stored}")
    with pytest.raises(ReportError, match="twice"):
        parse_by([f"tag:{key}", f"tag:{stored}"])
    with pytest.raises(ReportError) as refused:  # never echoes the key it refuses
        parse_by(f"tag:{key}!")
    assert key not in str(refused.value) and key.lower() not in str(refused.value).lower()


@pytest.mark.parametrize(
    "key",
    [
        "sha256:",
        "sha256:0123456789a",
        "sha256:0123456789abc",
        "sha256:0123456789AB",
        "a:b",
        "x" * 65,
    ],
)
def test_only_a_real_fingerprint_brings_a_colon_into_a_tag_key(key: str) -> None:
    with pytest.raises(ReportError, match="tag key"):
        parse_by(f"tag:{key}")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0", "0.000000"),
        ("0.00234", "0.002340"),
        ("1.2345678901", "1.2345678901"),
        ("0.0000001234", "0.0000001234"),
        ("12", "12.000000"),
        ("1E+3", "1000.000000"),
        ("0.0000000000", "0.000000"),
    ],
)
def test_money_is_exact_with_at_least_six_places(value: str, text: str) -> None:
    assert money(Decimal(value)) == text


@given(st.decimals(min_value=0, max_value=10**9, places=10, allow_nan=False))
def test_money_never_changes_the_value(value: Decimal) -> None:
    assert Decimal(money(value)) == value


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("\t=1", "'\t=1"),
        ("search", "search"),
        (None, ""),
    ],
)
def test_group_values_that_start_like_a_formula_are_csv_text(value: str | None, cell: str) -> None:
    """Found by attacking the merged product: a client's ``user`` or tag reached the spend CSV as
    a live spreadsheet formula."""
    assert csv_text(value) == cell
