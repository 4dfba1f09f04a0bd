"""``openai-meter serve --workers N``: N processes serving one port, supervised by the parent.

* **Sockets**: the parent binds one socket set per worker with ``SO_REUSEPORT`` (the kernel spreads
  new connections over them) and forks the workers; worker *i* serves set *i*. The parent keeps every
  set open, so a restarted worker *i* takes over the same socket and the connections queued on it.
* **Start**: worker 0 starts first and alone (it runs the ledger's migrations); the others start
  once it listens. A worker that fails to start stops everything: exit 2 (its message is on stderr).
* **Stop**: SIGTERM/SIGINT to the parent is forwarded to every worker; each stops accepting, drains
  its in-flight calls and its ledger (``server.shutdown_grace_s``) and exits; the parent exits 0
  once all exited 0 (1 otherwise).
* **A worker that dies** (killed, crashed) is logged and restarted: it replays its own spool/journal
  (``<ledger.spool_dir>/worker-<i>``) on start. More than :data:`MAX_RESTARTS` restarts within
  :data:`RESTART_WINDOW_S` seconds stop everything (exit 1) rather than crash-loop for ever.
* **Ledger**: N writers, each with its own spool directory (a spool directory is locked by one
  process); SQLite takes them in WAL mode with a 30 s busy timeout (``storage.engine``).
* **Metrics**: each worker also serves its own registry on a private unix socket; ``GET /metrics`` on
  any worker merges every worker's samples (:mod:`proxy.observe.metrics_merge`). ``metrics.port``
  is served by worker 0, merged the same way. Each worker slot keeps the counters it exposed in
  ``w<i>.counters`` beside its socket: a restarted worker starts from them, and a scrape that cannot
  reach a worker uses them, so merged counters never go back when a worker dies.
* **Budgets**: a team with a blocking budget needs reservations shared between processes: PostgreSQL
  with ``budgets.shared_reservations`` (``storage.budget_counters``). On SQLite each process would
  reserve alone (N times the overshoot), so ``--workers > 1`` is refused there with one line.
* **Scheduled reconciliation** (``reconcile.interval``) runs in worker 0 only.

Linux/POSIX only (``os.fork``, ``SO_REUSEPORT``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.settings import Settings

log = logging.getLogger("openai_meter.workers")

MAX_RESTARTS: Final = 5
RESTART_WINDOW_S: Final = 60.0
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def worker_count(value: int | str, cpu_count: int | None) -> int:
    """``server.workers`` as a number: ``auto`` = the CPU cores (1 when unknown)."""
    if value == "auto":
        return max(1, cpu_count or 1)
    return int(value)


def workers_problem(settings: Settings, count: int) -> str | None:
    """One line saying why ``count`` workers cannot serve ``settings``, or None."""
    if count <= 1:
        return None
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        return "server.workers > 1 needs os.fork and SO_REUSEPORT (Linux, BSD, macOS)"
    blocking = sorted(
        team
        for team, spec in settings.teams.items()
        if spec.budget is not None
        and spec.budget.action == "block"
        and (spec.budget.daily_usd is not None or spec.budget.monthly_usd is not None)
    )
    postgres = settings.database.url.startswith(("postgresql", "postgres:"))
    if blocking and not (postgres and settings.budgets.shared_reservations):
        return (
            f"server.workers {count} with a blocking budget (team {blocking[0]!r}) needs PostgreSQL "
            "with budgets.shared_reservations: true; on SQLite each worker would reserve alone "
            "and a team could overshoot its limit once per worker (use workers: 1)"
        )
    return None


_SEGMENT: Final = re.compile(r"^(ledger|journal)-\d{16}\.jsonl$")


def _holds_records(directory: Path) -> bool:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return False
    return any(_SEGMENT.match(p.name) and p.is_file() and p.stat().st_size for p in entries)


def stranded_spool(spool_dir: str, count: int) -> str | None:
    """One line when ``spool_dir`` holds spooled or journaled records that ``count`` workers would
    not replay (written by a run with another worker count), or None.

    One process replays ``<spool_dir>``; N workers replay ``<spool_dir>/worker-0..N-1``. Starting
    anyway would leave those records out of the ledger until the old layout runs again."""
    root = Path(spool_dir)
    served = {root} if count == 1 else {root / f"worker-{i}" for i in range(count)}
    candidates = [root, *sorted(p for p in root.glob("worker-*") if p.is_dir())]
    for directory in candidates:
        if directory not in served and _holds_records(directory):
            if directory == root:
                runs = "a run with workers: 1"
            else:
                index = int(directory.name.split("-", 1)[1]) if directory.name[7:].isdigit() else 0
                runs = f"a run with workers >= {max(2, index + 1)}"
            return (
                f"{directory} holds ledger records not yet in the database, left by {runs}; "
                f"{count} worker(s) would not replay them: start once as that run did (it replays "
                "them and stops cleanly on SIGTERM), then change server.workers"
            )
    return None


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own spool directory; only worker 0 reconciles."""
    spool = str(Path(settings.ledger.spool_dir) / f"worker-{index}")
    update: dict[str, Any] = {
        "ledger": settings.ledger.model_copy(update={"spool_dir": spool}),
        # worker 0 serves metrics.port itself (merged): see WorkerRole.wire
        "metrics": settings.metrics.model_copy(update={"port": None}),
    }
    if index > 0:
        update["reconcile"] = settings.reconcile.model_copy(update={"interval": None})
    return settings.model_copy(update=update)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process knows about its place among the others."""

    index: int
    ready_fd: int
    metrics_socket: str
    peer_sockets: tuple[str, ...]
    metrics_port: int | None

    def started(self) -> None:
        """Tell the parent this worker listens (one byte on the readiness pipe)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)

    def wire(self, app: web.Application, settings: Settings) -> None:
        """The private metrics socket, ``/metrics`` merged over all workers, and (worker 0) the
        separate metrics port, merged too."""
        from proxy.observe.metrics_api import METRICS_PEERS_KEY, REGISTRY_KEY, metrics_server_ctx
        from proxy.observe.metrics_merge import carried_registry, counters_path, unix_metrics_ctx

        # What this worker exposes carries on the counters of the workers that held its slot
        # before it (killed, restarted): the merged sums never go back.
        registry = carried_registry(app[REGISTRY_KEY], counters_path(self.metrics_socket))
        app[REGISTRY_KEY] = registry
        app[METRICS_PEERS_KEY] = self.peer_sockets
        app.cleanup_ctx.append(unix_metrics_ctx(registry, self.metrics_socket))
        if self.metrics_port is not None and self.index == 0:
            app.cleanup_ctx.append(
                metrics_server_ctx(
                    registry,
                    settings.listen.host,
                    self.metrics_port,
                    settings.metrics.token,
                    peers=self.peer_sockets,
                )
            )


class _WorkerLogField(logging.Filter):
    """Adds ``worker: i`` to every log line of worker ``i`` (JSON field / text ``worker=i``)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        from proxy.http.access_log import FIELDS_ATTR

        fields = getattr(record, FIELDS_ATTR, None)
        merged = dict(fields) if isinstance(fields, dict) else {}
        merged["worker"] = self._index
        setattr(record, FIELDS_ATTR, merged)
        return True


ServeOne = Callable[["Settings", list[socket.socket], WorkerRole], int]


def supervise(
    settings: Settings, socket_sets: Sequence[list[socket.socket]], serve: ServeOne
) -> int:
    """Fork one worker per socket set, keep them running, stop them all on SIGTERM/SIGINT."""
    return _Supervisor(settings, socket_sets, serve).run()


class _Supervisor:
    def __init__(
        self, settings: Settings, socket_sets: Sequence[list[socket.socket]], serve: ServeOne
    ) -> None:
        self._settings = settings
        self._sets = socket_sets
        self._serve = serve
        self._rundir = tempfile.mkdtemp(prefix="openai-meter-workers-")
        self._paths = [os.path.join(self._rundir, f"w{i}.sock") for i in range(len(socket_sets))]
        self._children: dict[int, int] = {}  # pid -> worker index
        self._stopping = False
        self._failed = False
        self._restarts: list[float] = []

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _SIGNALS}
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            shutil.rmtree(self._rundir, ignore_errors=True)

    def _run(self) -> int:
        count = len(self._sets)
        for index in range(count):  # worker 0 alone first: it migrates the ledger
            if not self._spawn(index):
                return self._stop_all(0 if self._stopping else 2)
        log.info("openai-meter: %d workers serving (pids %s)", count, sorted(self._children))
        while self._children:
            pid, status = os.wait()
            if pid not in self._children:
                continue
            index = self._children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                if code != 0:
                    log.error("worker %d (pid %d) exited with %d while stopping", index, pid, code)
                    self._failed = True
                continue
            log.error("worker %d (pid %d) exited with %d; restarting it", index, pid, code)
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
            self._restarts.append(now)
            if len(self._restarts) > MAX_RESTARTS:
                log.error(
                    "more than %d worker restarts in %.0f s: stopping",
                    MAX_RESTARTS,
                    RESTART_WINDOW_S,
                )
                return self._stop_all(1)
            if not self._spawn(index) and not self._stopping:
                return self._stop_all(1)
        return 1 if self._failed or not self._stopping else 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _stop_all(self, code: int) -> int:
        self._on_signal(signal.SIGTERM, None)
        while self._children:
            pid, status = os.wait()
            if pid in self._children and os.waitstatus_to_exitcode(status):
                code = code or 1
            if pid in self._children:
                del self._children[pid]
        return code

    def _spawn(self, index: int) -> bool:
        """Fork worker ``index``; True once it listens, False if it exited before."""
        read_fd, write_fd = os.pipe()
        peers = tuple(p for i, p in enumerate(self._paths) if i != index)
        role = WorkerRole(index, write_fd, self._paths[index], peers, self._settings.metrics.port)
        # Block the stop signals across fork: the child must not run the parent's handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            for signum in _SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            os._exit(self._worker(index, role))
        self._children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        os.close(write_fd)
        try:
            ready = os.read(read_fd, 1) == b"1"  # EOF: the worker exited before listening
        finally:
            os.close(read_fd)
        return ready

    def _worker(self, index: int, role: WorkerRole) -> int:
        code = 1
        try:
            for handler in logging.getLogger().handlers:
                handler.addFilter(_WorkerLogField(index))
            for i, sockets in enumerate(self._sets):
                if i != index:
                    for sock in sockets:
                        sock.close()
            code = self._serve(worker_settings(self._settings, index), self._sets[index], role)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
        return code
