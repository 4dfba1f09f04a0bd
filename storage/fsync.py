"""fsync helpers shared by the spool, the journal and the dead-letter file."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_and_close(fd: int) -> None:
    """fsync ``fd`` (typically an ``os.dup`` taken under a lock), then close it."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fsync_and_close(os.open(directory, os.O_RDONLY))
