"""The fake OpenAI upstream as its own process for the fleet test, with two additions:

* every response's ``x-request-id`` is unique (``<kind>-<n>``), so a client can prove that each call
  it got an answer for has its ledger row;
* ``POST /v1/batches`` and ``GET /v1/batches/{id}`` (a batch that is completed with usage), so a
  batch retrieved through several replicas can be shown to be metered once.

``python -m tests.fleet.fake_main PORT`` prints ``ready`` once it listens.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

from aiohttp import web

from tests.support.fake_upstream import FakeUpstream, SeenRequest

_BATCH_USAGE = {
    "input_tokens": 1500,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens": 500,
    "output_tokens_details": {"reasoning_tokens": 300},
    "total_tokens": 2000,
}


class FleetUpstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    def _unique(self, request_id: str) -> str:
        return f"{request_id}-{next(self._ids)}"

    def _json(self, request: web.Request, data: Any, request_id: str) -> web.Response:
        return super()._json(request, data, self._unique(request_id))

    async def _sse(
        self, request: web.Request, events: list[bytes], request_id: str
    ) -> web.StreamResponse:
        return await super()._sse(request, events, self._unique(request_id))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """``background: true`` answers ``queued`` with no usage; a later GET has it."""
        seen = await self._record(request)
        body = seen.json or {}
        if body.get("background") and not body.get("stream"):
            rid = f"resp_bg{len(self.requests)}"
            data = {**self._response_object(rid, "queued", False), "background": True}
            return self._json(request, data, "req_resp_bg")
        return await super()._responses(request)

    async def _record(self, request: web.Request) -> SeenRequest:
        """Read a request once even when an override and its parent both ask for it."""
        if "fleet.seen" not in request:
            request["fleet.seen"] = await super()._record(request)
        seen: SeenRequest = request["fleet.seen"]
        return seen

    async def _catch_all(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["v1", "batches"]:
            await self._record(request)
            if request.method == "POST" and len(parts) == 2:
                return self._json(
                    request, _batch(f"batch_fleet{len(self.requests)}", "validating"), "req_batch"
                )
            if request.method == "GET" and len(parts) == 3:
                return self._json(request, _batch(parts[2], "completed"), "req_batch_get")
        return await super()._catch_all(request)


def _batch(batch_id: str, status: str) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini-2024-07-18",
        "input_file_id": "file-fleet",
        "completion_window": "24h",
        "status": status,
        "created_at": int(time.time()),
        "request_counts": {"total": 10, "completed": 10 if done else 0, "failed": 0},
        "usage": _BATCH_USAGE if done else None,
    }


async def _main(port: int) -> None:
    upstream = FleetUpstream()
    upstream.stream_events = 5
    await upstream.start()
    assert upstream._runner is not None
    site = web.TCPSite(upstream._runner, "127.0.0.1", port)
    await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
