"""``serve --workers N``: the count, what is refused, and each worker's own settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.commands.workers import (
    stranded_spool,
    worker_count,
    worker_settings,
    workers_problem,
)
from proxy.settings import Settings


@pytest.mark.parametrize(
    ("value", "cores", "expected"),
    [(1, 8, 1), (3, 1, 3), ("auto", 2, 2), ("auto", None, 1), ("auto", 0, 1)],
)
def test_worker_count(value: int | str, cores: int | None, expected: int) -> None:
    assert worker_count(value, cores) == expected


def _with_budget(url: str, action: str = "block", shared: bool = True) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": url},
            "budgets": {"shared_reservations": shared},
            "teams": {"ml": {"budget": {"monthly_usd": "10", "action": action}}},
        }
    )


def test_blocking_budgets_need_shared_postgres_reservations() -> None:
    assert workers_problem(_with_budget("sqlite:///x.db"), 1) is None
    problem = workers_problem(_with_budget("sqlite:///x.db"), 2)
    assert problem is not None and "'ml'" in problem and "\n" not in problem
    assert workers_problem(_with_budget("postgresql://u@h/db"), 4) is None
    assert workers_problem(_with_budget("postgresql://u@h/db", shared=False), 2) is not None
    assert workers_problem(_with_budget("sqlite:///x.db", action="alert"), 2) is None
    assert workers_problem(Settings(), 16) is None


def test_each_worker_has_its_own_spool_and_only_worker_0_reconciles() -> None:
    settings = Settings.model_validate(
        {
            "ledger": {"spool_dir": "/var/spool/om"},
            "reconcile": {"interval": "6h"},
            "metrics": {"port": 9100},
        }
    )
    zero, one = worker_settings(settings, 0), worker_settings(settings, 1)
    assert Path(zero.ledger.spool_dir) == Path("/var/spool/om/worker-0")
    assert Path(one.ledger.spool_dir) == Path("/var/spool/om/worker-1")
    assert zero.reconcile.interval == "6h" and one.reconcile.interval is None
    # metrics.port is served by worker 0 itself, merged over the workers (WorkerRole.wire)
    assert zero.metrics.port is None and one.metrics.port is None
    assert zero.ledger.batch_size == settings.ledger.batch_size


def _segment(directory: Path, name: str, body: bytes = b'{"x": 1}\n') -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(body)


def test_records_another_worker_count_would_strand_refuse_the_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    assert stranded_spool(str(spool), 1) is None  # no spool yet
    assert stranded_spool(str(spool), 2) is None
    _segment(spool, "ledger-0000000000000003.jsonl")
    assert stranded_spool(str(spool), 1) is None  # one process replays <spool_dir>
    problem = stranded_spool(str(spool), 2)
    assert problem is not None and "workers: 1" in problem and "\n" not in problem
    (spool / "ledger-0000000000000003.jsonl").write_bytes(b"")  # empty segments hold nothing
    _segment(spool, ".lock", b"x")
    _segment(spool / "worker-2", "journal-0000000000000001.jsonl")
    _segment(spool / "worker-0", "journal-0000000000000001.jsonl")
    assert stranded_spool(str(spool), 3) is None
    problem = stranded_spool(str(spool), 2)
    assert problem is not None and "worker-2" in problem and "workers >= 3" in problem
    problem = stranded_spool(str(spool), 1)
    assert problem is not None and "worker-0" in problem and "workers >= 2" in problem
    _segment(spool / "worker-x", "notes.txt")  # not ours: ignored
    assert stranded_spool(str(spool), 3) is None
