"""Which UTC days a reconciliation covers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from proxy.admin.reconcile.run import ReconcileConfigError, recent_days, resolve_days

NOW = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "until", "first", "end"),
    [
        (None, None, date(2026, 11, 22), date(2026, 11, 30)),  # default 7d, today included
        ("1d", None, date(2026, 11, 28), date(2026, 11, 30)),
        ("2026-11-01", "2026-11-03", date(2026, 11, 1), date(2026, 11, 3)),  # midnight: exclusive
        ("2026-11-01T12:00:00Z", "2026-11-02T00:00:01Z", date(2026, 11, 1), date(2026, 11, 3)),
        ("2026-11-05", "2026-11-05", date(2026, 11, 5), date(2026, 11, 6)),  # at least one day
    ],
)
def test_whole_utc_days(since: str | None, until: str | None, first: date, end: date) -> None:
    days = resolve_days(since, until, NOW)
    assert (days.since, days.until) == (first, end)
    assert days.start.tzinfo is UTC and days.start.hour == 0


@pytest.mark.parametrize(
    ("since", "until"), [("2024-01-01", "2026-01-01"), ("soon", None), ("2d", "3d")]
)
def test_bad_windows(since: str, until: str | None) -> None:
    with pytest.raises(ReconcileConfigError):
        resolve_days(since, until, NOW)


def test_the_server_reads_the_restated_days_and_today() -> None:
    days = recent_days(NOW, 3)
    assert (days.since, days.until) == (date(2026, 11, 26), date(2026, 11, 30))
