"""CLI start-up: wall time of ``openai-meter --help``, each sub-command's ``--help`` and a
``report`` over a small SQLite ledger, each in a fresh interpreter (what a user waits for).

    python -m bench.cli_bench                 # median of 7 runs per command
    python -m bench.cli_bench --runs 15
    python -m bench.cli_bench --root /tmp/old # the CLI of another source tree (before/after)

``run()`` returns seconds per command (median). Targets (issue 12): ``--help`` < 0.3 s, a report
over a small ledger < 0.5 s. Also prints which heavy packages each command imported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

HEAVY = ("aiohttp", "sqlalchemy", "tiktoken", "pydantic", "prometheus_client", "yaml", "orjson")
SMALL_LEDGER_ROWS = 500


async def _make_ledger(url: str, rows: int) -> None:
    from storage.engine import create_engine
    from storage.ledger import write_batch
    from storage.migrate import upgrade
    from storage.record import UsageRecord

    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    records = [
        UsageRecord(
            id=f"bench-{n:06d}",
            started_at=start + timedelta(minutes=n),
            finished_at=start + timedelta(minutes=n, seconds=1),
            method="POST",
            path="/v1/chat/completions",
            endpoint="chat.completions",
            status_code=200,
            outcome="ok",
            model=("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")[n % 3],
            team=("search", "support", "research", "unassigned")[n % 4],
            input_tokens=100 + n,
            output_tokens=20 + n % 50,
            usage_source="reported",
            cost_usd=Decimal(n + 1).scaleb(-8),
            price_ref="openai:gpt-4o-mini@2024-07-18",
        )
        for n in range(rows)
    ]
    engine = create_engine(url)
    try:
        await upgrade(engine)
        await write_batch(engine, records)
    finally:
        await engine.dispose()


def _command() -> list[str]:
    return [sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main())"]


def _time(args: list[str], runs: int, env: dict[str, str]) -> tuple[float, float, float]:
    """Median wall, fastest wall and median CPU time (user + sys of the child) in seconds. On a
    loaded machine compare CPU time and the fastest run: the median also counts waiting for a core."""
    took: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [*_command(), *args], env=env, cwd=env["PYTHONPATH"], check=True, capture_output=True
        )
        took.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(took), min(took), statistics.median(cpu)


def _heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
    probe = (
        "import sys\nfrom proxy.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        env=env,
        cwd=env["PYTHONPATH"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []


def run(runs: int = 7, root: Path | None = None) -> dict[str, float]:
    source = (root or Path(__file__).resolve().parent.parent).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        asyncio.run(_make_ledger(url, SMALL_LEDGER_ROWS))
        env = {**os.environ, "OPENAI_METER_DATABASE_URL": url, "PYTHONPATH": str(source)}
        cases = {
            "--help": ["--help"],
            "serve --help": ["serve", "--help"],
            "report --help": ["report", "--help"],
            "prices --help": ["prices", "--help"],
            f"report --by team,model ({SMALL_LEDGER_ROWS} rows)": ["report", "--by", "team,model"],
            "prices gpt-4o-mini": ["prices", "gpt-4o-mini"],
        }
        figures: dict[str, float] = {}
        for name, args in cases.items():
            wall, fastest, cpu = _time(args, runs, env)
            figures[f"{name} (s)"] = wall
            figures[f"{name} (fastest s)"] = fastest
            figures[f"{name} (cpu s)"] = cpu
            print(f"{name:40s} imports: {' '.join(_heavy_imports(args, env)) or '-'}")
        # Python itself, for scale.
        started = time.perf_counter()
        for _ in range(runs):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        figures["python -c pass (s)"] = (time.perf_counter() - started) / runs
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--root", type=Path, default=None, help="source tree whose CLI to time")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for key, value in run(args.runs, args.root).items():
        print(f"{key:52s} {value:8.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
