"""Ledger benchmarks: write throughput (records/s through LedgerWriter) on SQLite and PostgreSQL,
the request-path cost of ``submit`` (bounding + journal append, µs per call), and a month's
per-team spend report over a bulk-loaded PostgreSQL ledger.

    python -m bench.ledger_bench                       # throughput, 50k records per backend
    python -m bench.ledger_bench --runs 3              # each run's figures, then min / median
    python -m bench.ledger_bench --report-rows 10000000  # + the 10M-row report benchmark

PostgreSQL: ``OPENAI_METER_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test);
a throw-away database is created and dropped. Skipped (figure absent) when unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.bounds import bound_record
from storage.engine import create_engine
from storage.migrate import upgrade
from storage.queries import spend, spent
from storage.record import UsageRecord
from storage.schema import TOKEN_COLUMNS
from storage.spool import Spool
from storage.writer import LedgerWriter

PG_URL = os.environ.get(
    "OPENAI_METER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _records(count: int) -> list[UsageRecord]:
    return [
        UsageRecord(
            id=f"bench-{n:010d}",
            started_at=T0 + timedelta(milliseconds=n * 37),
            finished_at=T0 + timedelta(milliseconds=n * 37 + 900),
            method="POST",
            path="/v1/chat/completions",
            endpoint="chat.completions",
            status_code=200,
            outcome="ok",
            model=("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06")[n % 2],
            team=f"team-{n % 8}",
            key_fingerprint="sha256:0123456789ab",
            tags={"env": "prod"},
            input_tokens=1200,
            cached_input_tokens=300,
            output_tokens=250,
            usage_source="reported",
            cost_usd=Decimal("0.0003345") + Decimal(n % 1000).scaleb(-10),
            price_ref="bench",
            latency_ms=812.5,
        )
        for n in range(count)
    ]


async def _throughput(url: str, spool_dir: Path, count: int) -> float:
    engine = create_engine(url)
    await upgrade(engine)
    records = _records(count)
    writer = LedgerWriter(engine, Spool(spool_dir), queue_size=count + 1)
    await writer.start()
    start = time.perf_counter()
    for record in records:
        writer.submit(record)
    await writer.flush()
    elapsed = time.perf_counter() - start
    await writer.stop()
    await engine.dispose()
    return count / elapsed


def _submit_costs(spool_dir: Path, count: int) -> dict[str, float]:
    """µs per call of the request-path parts of ``LedgerWriter.submit`` (no consumer running).

    ``submit_us`` is the whole call with the journal, ``submit_no_journal_us`` without it; the
    difference is the journal's cost per call (encode the record, one ``write``). ``bound_us`` is
    :func:`storage.bounds.bound_record` alone (every value already fine: the usual case).
    CPU time (``process_time``: user + system, this process only), so a machine shared with other
    work does not inflate the figures with time spent waiting for a core.
    """
    records = _records(count)
    out: dict[str, float] = {}
    start = time.process_time()
    for record in records:
        bound_record(record)
    out["ledger_bound_us"] = (time.process_time() - start) / count * 1e6
    for name, journal in (("ledger_submit_us", True), ("ledger_submit_no_journal_us", False)):
        directory = spool_dir / name
        spool = Spool(directory)
        engine = create_engine(f"sqlite:///{directory}/unused.db")  # never connected
        writer = LedgerWriter(engine, spool, queue_size=count + 1, journal=journal)
        start = time.process_time()
        for record in records:
            writer.submit(record)
        out[name] = (time.process_time() - start) / count * 1e6
        spool.close()
    out["ledger_journal_us"] = out["ledger_submit_us"] - out["ledger_submit_no_journal_us"]
    return out


async def _admin(sql: str, url: str = PG_URL) -> None:
    """Run SQL with no statement timeout (bulk loads take minutes on a small machine)."""
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        database=u.database,
        timeout=5,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _with_pg_db(name: str) -> str | None:
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except Exception:
        return None
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


async def _report(url: str, rows: int) -> dict[str, float]:
    """Bulk-load ``rows`` raw rows over 30 days (generate_series), build the rollup, time reports."""
    engine = create_engine(url)
    await upgrade(engine)
    tokens = ", ".join(TOKEN_COLUMNS)
    load = f"""
        INSERT INTO usage_records (id, started_at, finished_at, method, path, endpoint, status_code,
            outcome, model, service_tier, stream, team, tags, {tokens}, units, usage_source, cost_usd)
        SELECT 'g' || g, ts, ts + interval '1 second', 'POST', '/v1/chat/completions',
            'chat.completions', 200, 'ok', (ARRAY['gpt-4o-mini','gpt-4o','o3','gpt-4.1'])[g % 4 + 1],
            'default', false, 'team-' || (g % 20), '{{}}', 1000, 100, 0, 200, 0, 0, 0, 0, 0, 0, 0,
            '{{}}', 'reported', (g % 1000) * 0.0000001 + 0.0001
        FROM (SELECT g, timestamptz '2026-10-01 00:00:00+00' + (g * (interval '30 days' / {rows})) AS ts
              FROM generate_series(0, {rows} - 1) AS g) s
    """
    rollup = f"""
        INSERT INTO usage_daily (day, team, model, service_tier, endpoint, requests, {tokens},
            cost_usd, unpriced_requests, estimated_requests)
        SELECT CAST(started_at AT TIME ZONE 'UTC' AS date), team, COALESCE(model, ''),
            COALESCE(service_tier, ''), endpoint, COUNT(*),
            {", ".join(f"SUM({t})" for t in tokens.split(", "))}, COALESCE(SUM(cost_usd), 0),
            SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END),
            SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END)
        FROM usage_records GROUP BY 1, 2, 3, 4, 5
    """
    t = time.perf_counter()
    await _admin(load, url)
    await _admin(rollup, url)
    await _admin("ANALYZE usage_records; ANALYZE usage_daily", url)
    load_s = time.perf_counter() - t
    since, until = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)
    out = {"report_rows_loaded": float(rows), "report_bulk_load_s": load_s}
    t = time.perf_counter()
    await spend(engine, since=since, until=until, by=("team", "model"))
    out["report_month_by_team_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    await spend(
        engine, since=since + timedelta(hours=13), until=until - timedelta(hours=5), by=("team",)
    )
    out["report_month_partial_days_by_team_s"] = time.perf_counter() - t
    t = time.perf_counter()
    await spent(engine, "team-3", since, until - timedelta(hours=5))
    out["budget_spent_one_team_month_s"] = time.perf_counter() - t
    await engine.dispose()
    return out


async def _main(count: int, report_rows: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out.update(_submit_costs(Path(tmp), min(count, 20_000)))
        out["ledger_sqlite_records_per_s"] = await _throughput(
            f"sqlite:///{tmp}/bench.db", Path(tmp) / "spool-sqlite", count
        )
        name = f"om_bench_{secrets.token_hex(4)}"
        url = await _with_pg_db(name)
        if url is not None:
            try:
                out["ledger_postgres_records_per_s"] = await _throughput(
                    url, Path(tmp) / "spool-pg", count
                )
            finally:
                await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if report_rows:
                name = f"om_bench_{secrets.token_hex(4)}"
                url = await _with_pg_db(name)
                assert url is not None
                try:
                    out.update(await _report(url, report_rows))
                finally:
                    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def run(count: int = 50_000, report_rows: int = 0) -> dict[str, float]:
    return asyncio.run(_main(count, report_rows))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--report-rows", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1, help="repeat; print min and median too")
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    for number in range(1, args.runs + 1):
        print(f"run {number}: load average before {_load()}")
        results.append(run(args.records, args.report_rows if number == 1 else 0))
        for key, value in results[-1].items():
            print(f"{key:40s} {value:14.3f}")
    print(f"load average after {_load()}")
    if args.runs > 1:
        for key in results[0]:
            values = [r[key] for r in results if key in r]
            if len(values) > 1:
                print(
                    f"{key:40s} min {min(values):12.3f}  median {statistics.median(values):12.3f}"
                )
