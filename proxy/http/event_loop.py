"""Which event loop the server runs on: uvloop when it is installed and wanted, else asyncio's.

uvloop (libuv) costs less CPU per call and stalls less than asyncio's selector loop; it is a
dependency on every platform it supports (not Windows). ``server.uvloop: false`` turns it off, e.g.
to rule it out when chasing a problem. Imported only when a server starts (``--help`` stays light).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None (asyncio's default) when off or not installed."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool) -> T:
    """``asyncio.run(main)`` on the chosen loop (``asyncio.run`` has no ``loop_factory`` before 3.12)."""
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop.Loop`` or ``asyncio.unix_events._UnixSelectorEventLoop`` -- for the start-up log."""
    kind = type(loop)
    return f"{kind.__module__}.{kind.__qualname__}"
