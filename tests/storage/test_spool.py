"""The spool: lines round-trip exactly, order is kept, torn lines are set aside, one owner at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.rows import record_from_json, record_to_json
from storage.spool import Spool, SpoolLockedError
from tests.support.ledger_records import make_record

costs = st.none() | st.decimals(min_value=0, max_value=10**6, places=10, allow_nan=False)
units = st.dictionaries(
    st.sampled_from(["images", "audio_seconds", "characters"]),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False),
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(
    cost=costs,
    units=units,
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    offset_min=st.integers(min_value=-720, max_value=720),
    user=st.none() | st.text(max_size=20),
)
def test_json_line_round_trips_exactly(
    cost: Decimal | None,
    units: dict[str, Decimal],
    tags: dict[str, str],
    offset_min: int,
    user: str | None,
) -> None:

    started = datetime(2026, 11, 3, 12, tzinfo=timezone(timedelta(minutes=offset_min)))
    record = make_record(1, cost_usd=cost, units=units, tags=tags, user=user, started_at=started)
    line = record_to_json(record)
    assert b"\n" not in line
    again = record_from_json(line)
    assert again == record
    assert again.started_at.astimezone(UTC) == started.astimezone(UTC)


def test_segments_replay_in_order_and_survive_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=2_000)  # small segments: several files
    for n in range(30):
        spool.append([make_record(n)])
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.pending == 30
    segments = reopened.sealed_segments()
    assert len(segments) > 1
    assert [r.id for s in segments for r in s.records()] == [make_record(n).id for n in range(30)]


def test_torn_last_line_is_skipped_and_kept_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([make_record(1), make_record(2)])
    spool.close()
    (segment,) = list(tmp_path.glob("ledger-*.jsonl"))
    with segment.open("ab") as f:
        f.write(record_to_json(make_record(3))[:40])  # the process died mid-write
    reopened = Spool(tmp_path)
    (seg,) = reopened.sealed_segments()
    assert [r.id for r in seg.records()] == [make_record(1).id, make_record(2).id]
    assert (
        segment.with_suffix(".corrupt").read_bytes().startswith(record_to_json(make_record(3))[:40])
    )


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()
