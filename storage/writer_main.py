"""The ledger's SQLite writer process: ``python -m storage.writer_main PATH``.

Started and owned by :class:`storage.writer_process.SqliteWriterProcess`. Reads batches from stdin and
answers each on stdout, one at a time:

* request: 4-byte big-endian length, then the batch as newline-separated record lines (the journal's
  and spool's JSON, :func:`storage.rows.record_to_json`);
* reply: 4-byte big-endian length, then JSON ``{"inserted": N}``, or ``{"error": "outage" | "refused",
  "type": ..., "message": ...}`` (``outage``: the database could not be used — the parent spools;
  ``refused``: it would not take this data — the parent splits the batch and dead-letters the row).

Each batch is one transaction (:func:`storage.sqlite_batch.write_batch`), committed with
``synchronous=FULL`` before the reply, so an ``inserted`` reply means durable. The process imports no
SQLAlchemy (a small process) and ignores SIGINT/SIGTERM: it ends when its stdin closes — the parent
closing it after draining, or the parent dying — so a Ctrl-C or a SIGTERM sent to the whole process
group never cuts the parent's drain short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from typing import BinaryIO

import orjson

from storage.sqlite_batch import connect, write_rows
from storage.sqlite_rows import sqlite_row_from_json


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(path: str, requests: BinaryIO, replies: BinaryIO) -> None:
    conn: sqlite3.Connection | None = None
    while (header := _read_exact(requests, 4)) is not None:
        payload = _read_exact(requests, int.from_bytes(header, "big"))
        if payload is None:
            break
        reply: dict[str, object]
        try:
            if conn is None:
                conn = connect(path)
            rows = [sqlite_row_from_json(line) for line in payload.split(b"\n") if line]
            reply = {"inserted": write_rows(conn, rows)}
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, I/O, missing file
            reply = {"error": "outage", "type": type(exc).__name__, "message": str(exc)}
            if conn is not None:
                conn.close()
            conn = None
        except Exception as exc:  # the data: a constraint, a value the driver cannot bind
            reply = {"error": "refused", "type": type(exc).__name__, "message": str(exc)}
        data = orjson.dumps(reply)
        replies.write(len(data).to_bytes(4, "big") + data)
        replies.flush()
    if conn is not None:
        conn.close()


def _yield_to_the_server() -> None:
    """Lower priority than the serving process: batches can wait, calls being served cannot."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(10)


def main() -> None:
    _yield_to_the_server()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
