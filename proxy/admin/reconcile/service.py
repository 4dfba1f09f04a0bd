"""Reconciliation inside the server: on a schedule (``reconcile.interval``, off by default), the
last ``reconcile.restate_days`` days and today are compared again (OpenAI restates recent
buckets), the result is kept in the ``reconciliation`` table, exported as
``openai_meter_reconcile_*{project}`` gauges and served by ``GET /meter/reconcile`` (admin token).

The Admin API is read through the app's upstream session (the forwarder's own pool: same TLS
settings) and the forwarder's egress proxy. A failed run is logged (the key never appears) and the
next one comes at the next interval; it never touches traffic.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import ClientSession, web
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from proxy.admin.admin_api import ADMIN_ENGINE_KEY
from proxy.admin.reconcile.client import AdminClient
from proxy.admin.reconcile.compare import Reconciliation, ratio
from proxy.admin.reconcile.render import to_json_obj
from proxy.admin.reconcile.run import recent_days, reconcile
from proxy.http.errors import error_response
from proxy.observe.metrics import ReconcileMetrics
from proxy.settings import ReconcileSettings
from storage.reconcile import latest_reconciliation, save_reconciliation

log = logging.getLogger("openai_meter.reconcile")

Clock = Callable[[], datetime]
_SPAN: Final = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(text: str) -> float:
    """``"6h"`` -> 21600.0 (the settings check the shape)."""
    found = _SPAN.fullmatch(text)
    if found is None:
        raise ValueError(f"reconcile.interval {text!r}: use e.g. 30m, 6h, 1d")
    return float(int(found.group(1)) * _SECONDS[found.group(2)])


def stored_row(rec: Reconciliation) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "run_at": rec.generated_at,
        "since": rec.since,
        "until": rec.until,
        "billed_usd": rec.billed_usd,
        "ledger_usd": rec.ledger_usd,
        "captured_ratio": rec.captured_ratio,
        "ok": rec.ok,
        "result": to_json_obj(rec),
    }


class Reconciler:
    def __init__(
        self,
        *,
        settings: ReconcileSettings,
        admin_key: str,
        upstream_url: str,
        session: Callable[[], ClientSession | None],
        proxy: URL | None,
        engine: AsyncEngine,
        metrics: ReconcileMetrics,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._key = admin_key
        self._upstream_url = upstream_url
        self._session = session
        self._proxy = proxy
        self._engine = engine
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))
        self.runs = 0
        self.failures = 0

    async def run_once(self) -> Reconciliation:
        session = self._session()
        if session is None or session.closed:
            raise RuntimeError("the upstream session is not open")
        client = AdminClient(session, self._upstream_url, self._key, proxy=self._proxy)
        now = self._clock()
        rec = await reconcile(
            client, self._engine, recent_days(now, self._settings.restate_days), self._settings, now
        )
        await save_reconciliation(self._engine, stored_row(rec))
        for project, (billed, ledger) in sorted(rec.by_project().items(), key=lambda i: str(i[0])):
            self._metrics.set(project, billed, ratio(ledger, billed))
        self.runs += 1
        return rec

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                rec = await self.run_once()
                log.info(
                    "reconciled %s..%s: billed %s, ledger %s, captured %s, ok=%s",
                    rec.since,
                    rec.until,
                    rec.billed_usd,
                    rec.ledger_usd,
                    rec.captured_ratio,
                    rec.ok,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                # The client's errors are scrubbed of the key; scrub anything else too.
                message = str(exc).replace(self._key, "…")[:300]
                log.warning("reconciliation failed: %s: %s", type(exc).__name__, message)
            await asyncio.sleep(interval_s)


async def reconcile_handler(request: web.Request) -> web.StreamResponse:
    """``GET /meter/reconcile``: the latest stored reconciliation, as ``reconcile --format json``."""
    if request.query:
        names = ", ".join(sorted(request.query))
        return error_response(
            400,
            f"unknown query parameter(s): {names}",
            "invalid_request_error",
            code="unknown_parameter",
        )
    engine = request.app.get(ADMIN_ENGINE_KEY)
    row = await latest_reconciliation(engine) if engine is not None else None
    if row is None:
        return error_response(
            404,
            "no reconciliation yet: set reconcile.interval and OPENAI_ADMIN_KEY "
            "(or run 'openai-meter reconcile')",
            "not_found_error",
            code="no_reconciliation",
        )
    body = dict(row["result"])
    body["run_id"] = row["id"]
    return web.Response(body=orjson.dumps(body), content_type="application/json")
