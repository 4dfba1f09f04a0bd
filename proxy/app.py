"""The one place that wires concrete pieces together into the aiohttp application.

``build_app`` is a sequence of small blocks; each owns its ``AppKey`` and its ``cleanup_ctx``:

1. settings + readiness registry
2. upstream HTTP client (one pooled keep-alive ``ClientSession``) -> forwarder
3. admin routes under ``/meter/*`` (token-protected by ``proxy.admin.admin_auth``)
4. health routes, then the ``/v1/`` catch-all forwarding route

``build_app`` alone forwards with whatever ``hooks`` it is given (tests use it bare).
:func:`create_app` is the product: it adds the price book, the metrics registry and ``/metrics``,
and a ``cleanup_ctx`` that opens the ledger (engine, migrations, writer + spool, dedupe), builds
the stages (attribution, virtual keys, budgets, rate-limit/overhead metrics) and the
:class:`~proxy.usage.meter.UsageMeter`, and installs it on the forwarder before the first request.

Cleanup runs in reverse order of ``cleanup_ctx`` registration, after in-flight requests finished
(``AppRunner(shutdown_timeout=...)``), so anything that must see the last records (the ledger
writer) should be appended *before* the upstream session block... it is torn down *after* it.

Serve the app with ``handler_cancellation=True`` (``web.run_app`` / ``AppRunner`` kwarg): that is
how a client disconnect cancels the upstream request promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import yarl
from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.book import PriceBook
from proxy.admin.admin_api import ADMIN_CLOCK_KEY, ADMIN_ENGINE_KEY, records_handler, spend_handler
from proxy.admin.admin_auth import admin_auth_middleware
from proxy.admin.page.data import BudgetView
from proxy.admin.page.views import add_page_routes
from proxy.admin.prices_api import PRICEBOOK_KEY, prices_handler
from proxy.admin.reconcile.run import ReconcileConfigError, admin_key
from proxy.admin.reconcile.service import Reconciler, interval_seconds, reconcile_handler
from proxy.http.exchange import MeteringHooks
from proxy.http.forward import Forwarder, MeteringErrorCallback, NullHooks
from proxy.http.health import Readiness, healthz, readyz_handler
from proxy.http.upstream_session import open_upstream_session
from proxy.observe.metrics import Metrics, MetricsStage, ReconcileMetrics
from proxy.observe.metrics_api import (
    METRICS_KEY,
    METRICS_TOKEN_KEY,
    REGISTRY_KEY,
    metrics_handler,
    metrics_server_ctx,
)
from proxy.observe.savings import record_savings
from proxy.settings import Settings
from proxy.teams.attribution import AttributionStage, TeamConfigError, TeamDirectory
from proxy.teams.budgets import (
    BudgetStage,
    BudgetTracker,
    Clock,
    Limit,
    limits_from_settings,
    utc_now,
)
from proxy.teams.notify import BudgetNotifier, NotifyConfigError, Webhook, webhooks_from_settings
from proxy.teams.virtual_keys import VirtualKeyCache
from proxy.usage.ceiling import CostCeiling
from proxy.usage.dedupe import LayeredDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from storage.budget_counters import SharedReservations
from storage.budget_notifications import SqlNotificationStore
from storage.reports import spent_by_team
from storage.service import Ledger, LedgerConfig, open_ledger
from storage.urls import masked, problem, to_async_url
from storage.virtual_keys import active_teams_by_hash

if TYPE_CHECKING:
    from proxy.observe.otel import OtelExport

log = logging.getLogger("openai_meter.app")

SETTINGS_KEY = web.AppKey("settings", Settings)
READINESS_KEY = web.AppKey("readiness", Readiness)
FORWARDER_KEY = web.AppKey("forwarder", Forwarder)
UPSTREAM_SESSION_KEY = web.AppKey("upstream_session", ClientSession)

# Server kwargs every runner of this app must use (``web.run_app(app, **SERVER_KWARGS)``).
SERVER_KWARGS: dict[str, object] = {"handler_cancellation": True, "access_log": None}


def upstream_session_ctx(
    settings: Settings, forwarder: Forwarder, readiness: Readiness
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """One keep-alive connection pool to the upstream for the app's lifetime."""

    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = open_upstream_session(settings.upstream, forwarder.timeout)
        app[UPSTREAM_SESSION_KEY] = session
        forwarder.session = session
        readiness.add("upstream_session", lambda: not session.closed)
        try:
            yield
        finally:
            forwarder.session = None
            await session.close()

    return ctx


def build_app(
    settings: Settings,
    *,
    hooks: MeteringHooks | None = None,
    on_metering_error: MeteringErrorCallback | None = None,
) -> web.Application:
    """The proxy application for ``settings``.

    ``hooks`` is the meter (``proxy.http.forward.NullHooks`` when None); ``on_metering_error(stage, exc)``
    is told about every guarded metering failure (wire it to ``metering_errors_total{stage}``).
    """
    # 1. settings + readiness -----------------------------------------------------------------
    # Without a token the middleware is a no-op; not installing it saves a call on every request.
    token = settings.admin.token
    app = web.Application(middlewares=[admin_auth_middleware(token)] if token else [])
    app[SETTINGS_KEY] = settings
    readiness = Readiness()
    app[READINESS_KEY] = readiness

    # 2. upstream client + forwarder ---------------------------------------------------------
    forwarder = Forwarder(settings, hooks, on_metering_error=on_metering_error)
    app[FORWARDER_KEY] = forwarder
    app.cleanup_ctx.append(upstream_session_ctx(settings, forwarder, readiness))

    # 3. admin routes under /meter/* (protected by admin_auth_middleware when a token is set)
    _add_admin_routes(app)

    # 4. health + forwarding -----------------------------------------------------------------
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz_handler(readiness))
    app.router.add_route("*", "/v1/{tail:.*}", forwarder.handle)
    return app


def _add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/meter/prices", prices_handler)


# --------------------------------------------------------------------------------------------
# The product: everything wired


METER_KEY = web.AppKey("meter", UsageMeter)
LEDGER_KEY = web.AppKey("ledger", Ledger)
NOTIFIER_KEY = web.AppKey("budget_notifier", BudgetNotifier)


class StartupError(ValueError):
    """A configuration problem found while wiring the app (one line, names what is wrong)."""


def ledger_config(settings: Settings) -> LedgerConfig:
    return LedgerConfig(
        url=settings.database.url,
        auto_upgrade=settings.database.auto_upgrade,
        spool_dir=settings.ledger.spool_dir,
        batch_size=settings.ledger.batch_size,
        flush_interval_ms=settings.ledger.flush_interval_ms,
        queue_size=settings.ledger.queue_size,
        fsync_interval_ms=settings.ledger.fsync_interval_ms,
        retention_days=settings.ledger.retention_days,
        stall_timeout_s=settings.ledger.stall_timeout_s,
        journal=settings.ledger.journal,
        writer_process=settings.ledger.writer_process,
    )


def create_app(
    settings: Settings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> web.Application:
    """The whole product for ``settings``; raises :class:`StartupError` on bad configuration.

    ``environ`` (default ``os.environ``) is where the admin key for ``reconcile.interval`` is read.
    """
    try:
        book = PriceBook.load(
            overrides=settings.pricing.overrides,
            discount_percent=settings.pricing.discount_percent,
            model_discount_percent=settings.pricing.model_discount_percent,
        )
        teams = TeamDirectory.from_settings(settings.teams)
        webhooks = webhooks_from_settings(settings.budgets.notify, os.environ)
    except (ValueError, TeamConfigError, NotifyConfigError) as exc:
        raise StartupError(str(exc)) from exc
    try:
        to_async_url(settings.database.url)
    except ValueError as exc:
        raise StartupError(f"database.url {masked(settings.database.url)}: {exc}") from None
    if settings.virtual_keys.enabled and not settings.upstream.api_key:
        raise StartupError(
            "virtual_keys.enabled needs upstream.api_key (or env OPENAI_METER_UPSTREAM_API_KEY)"
        )

    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        models=book.models(),
        teams=settings.teams.keys(),
        user_labels=settings.metrics.user_labels,
        key_labels=settings.metrics.key_labels,
        usage_tier=settings.metrics.usage_tier,
        canonical=book.canonical,
        savings=record_savings(book),
    )
    otel = _otel_export(settings, metrics)
    app = build_app(settings, on_metering_error=metrics.on_error)
    app[PRICEBOOK_KEY] = book
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", metrics_handler)
    if settings.metrics.token:
        app[METRICS_TOKEN_KEY] = settings.metrics.token
    if settings.metrics.port is not None:
        app.cleanup_ctx.append(
            metrics_server_ctx(
                registry, settings.listen.host, settings.metrics.port, settings.metrics.token
            )
        )
    app.router.add_get("/meter/spend", spend_handler)
    app.router.add_get("/meter/records", records_handler)
    app.router.add_get("/meter/reconcile", reconcile_handler)
    add_page_routes(
        app,
        settings.admin.token,
        BudgetView(tuple(limits_from_settings(settings.teams)), settings.budgets.timezone),
    )
    if clock is not None:
        app[ADMIN_CLOCK_KEY] = clock
    # Registered after the upstream session: torn down before it, once in-flight calls finished.
    app.cleanup_ctx.append(
        _metering_ctx(settings, book, metrics, registry, teams, clock, webhooks, otel)
    )
    if settings.reconcile.interval:
        try:
            key = admin_key(settings.reconcile, os.environ if environ is None else environ)
        except ReconcileConfigError as exc:
            raise StartupError(f"reconcile.interval is set but {exc}") from exc
        app.cleanup_ctx.append(_reconcile_ctx(settings, key, ReconcileMetrics(registry), clock))
    return app


async def _shared_reservations(
    settings: Settings, dialect: str, limits: list[Limit]
) -> SharedReservations | None:
    """Budget reservations shared by every replica: PostgreSQL and a team with a block limit."""
    if not settings.budgets.shared_reservations or dialect != "postgresql":
        return None
    if not any(limit.action == "block" for limit in limits):
        return None
    try:
        return await SharedReservations.connect(settings.database.url)
    except Exception:
        log.exception("shared budget reservations unavailable; each replica reserves alone")
        return None


def _otel_export(settings: Settings, metrics: Metrics) -> OtelExport | None:
    """OpenTelemetry export when ``otel.enabled`` (imported only then: it is an optional extra)."""
    if not settings.otel.enabled:
        return None
    try:
        from proxy.observe.otel import OtelExport
    except ImportError as exc:
        raise StartupError(
            f"otel.enabled needs the otel extra (pip install 'openai-meter[otel]'): {exc}"
        ) from exc
    return OtelExport(
        settings.otel, metrics.bounds, server_address=yarl.URL(settings.upstream.url).host
    )


def _notifier(
    settings: Settings,
    webhooks: list[Webhook],
    engine: AsyncEngine,
    registry: CollectorRegistry,
    clock: Clock | None,
) -> BudgetNotifier | None:
    """Budget alerts (``budgets.notify``), deduplicated across replicas through the ledger database."""
    if not webhooks:
        return None
    return BudgetNotifier(
        webhooks,
        SqlNotificationStore(engine),
        timezone=settings.budgets.timezone,
        clock=clock,
        actions={t: s.budget.action for t, s in settings.teams.items() if s.budget is not None},
        registry=registry,
    )


RECONCILER_KEY = web.AppKey("reconciler", Reconciler)


def _reconcile_ctx(
    settings: Settings, key: str, metrics: ReconcileMetrics, clock: Clock | None
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """The scheduled reconciliation (after the ledger opened; stopped before it closes)."""

    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        forwarder = app[FORWARDER_KEY]
        reconciler = Reconciler(
            settings=settings.reconcile,
            admin_key=key,
            upstream_url=settings.upstream.url,
            session=lambda: forwarder.session,
            proxy=forwarder.egress_proxy,
            engine=app[ADMIN_ENGINE_KEY],
            metrics=metrics,
            clock=clock,
        )
        app[RECONCILER_KEY] = reconciler
        interval = interval_seconds(settings.reconcile.interval or "")
        task = asyncio.create_task(reconciler.run(interval), name="reconcile")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return ctx


def _metering_ctx(
    settings: Settings,
    book: PriceBook,
    metrics: Metrics,
    registry: CollectorRegistry,
    teams: TeamDirectory,
    clock: Clock | None,
    webhooks: list[Webhook],
    otel: OtelExport | None = None,
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        forwarder = app[FORWARDER_KEY]
        async with contextlib.AsyncExitStack() as opened:
            ledger = await _open_ledger(opened, settings, registry)
            if not settings.database.auto_upgrade:
                await _check_database(ledger, settings, app[READINESS_KEY])
            engine = ledger.engine
            app[LEDGER_KEY] = ledger
            app[ADMIN_ENGINE_KEY] = engine
            keys: VirtualKeyCache | None = None
            if settings.virtual_keys.enabled and settings.upstream.api_key:
                keys = VirtualKeyCache(
                    lambda: active_teams_by_hash(engine), settings.upstream.api_key
                )
            limits = limits_from_settings(settings.teams)
            shared = await _shared_reservations(settings, engine.dialect.name, limits)
            notifier = _notifier(settings, webhooks, engine, registry, clock)
            tracker = BudgetTracker(
                limits,
                lambda t, w, u: spent_by_team(engine, t, w, u),
                timezone=settings.budgets.timezone,
                on_gauge=metrics.set_budget,
                on_state=notifier.on_state if notifier is not None else None,
                clock=clock if clock is not None else utc_now,
                shared=shared,
            )
            ceiling = CostCeiling(
                book,
                settings.budgets.max_output_tokens,
                settings.budgets.model_max_output_tokens,
            )
            encodings = Encodings()
            meter = UsageMeter(
                pricer=book,
                sinks=[ledger.writer, metrics],
                encodings=encodings,
                dedupe=LayeredDedupe(ledger.dedupe),
                stages=[
                    # First: a call refused by a later stage still gets its span.
                    *([otel.stage] if otel is not None else []),
                    AttributionStage(teams, keys),
                    BudgetStage(tracker, ceiling),
                    MetricsStage(metrics),
                ],
                inject_stream_usage=settings.metering.inject_stream_usage,
                on_error=metrics.on_error,
                # on_estimated stays None: Metrics counts estimates from the records themselves.
                max_json_body_bytes=settings.metering.max_json_body_bytes,
                max_event_bytes=settings.metering.max_event_bytes,
            )
            app[METER_KEY] = meter
            tasks: list[asyncio.Task[None]] = []
            try:
                if notifier is not None:
                    app[NOTIFIER_KEY] = notifier
                    await notifier.start()
                if keys is not None:
                    await keys.load()
                    tasks.append(asyncio.create_task(keys.run(), name="virtual-keys"))
                try:
                    await tracker.refresh()
                except Exception:
                    log.exception("budget refresh failed at start; budgets use what they can")
                tasks.append(asyncio.create_task(tracker.run(), name="budgets"))
                if settings.metering.preload_encodings:
                    # Off the loop. Without it the first estimate builds its encoding (in the
                    # estimating worker thread; ~105 MiB idle RSS saved; docs/performance.md).
                    tasks.append(asyncio.create_task(asyncio.to_thread(encodings.preload)))
                if otel is not None:
                    otel.start()
                forwarder.hooks = meter
                # Ready = metering installed. A database outage does not make the proxy unready:
                # records spool and are replayed (principle 1: the client comes first).
                app[READINESS_KEY].add("metering", lambda: forwarder.hooks is meter)
                # 'ledger': records are not stuck in memory (see Ledger.progressing; README).
                app[READINESS_KEY].add("ledger", ledger.progressing)
                freeze_startup_objects()
                yield
            finally:
                gc.unfreeze()  # several apps in one process (tests): later collections see all
                forwarder.hooks = NullHooks()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await meter.drain()
                if notifier is not None:  # alerts the last records raised get a short grace
                    await notifier.close(min(settings.server.shutdown_grace_s, 5.0))
                await tracker.drain()
                if shared is not None:
                    await shared.close()
                if otel is not None:  # flushes the last spans and metrics (blocking: a thread)
                    await asyncio.to_thread(otel.shutdown)
        # leaving open_ledger drained the writer (queue + spool replay) and disposed the engine

    return ctx


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive after start-up out of the collector's sight.

    Start-up leaves ~100k long-lived container objects (modules, classes, SQLAlchemy and pydantic
    metadata, the price book); a full collection walks all of them on the event loop - a ~45 ms
    stall on this project's bench machine, paid again whenever enough new objects survive into
    the oldest generation. Frozen, they are never scanned again (``gc.freeze``; objects freed by
    reference counting are still freed), so a full collection only walks what requests created.
    """
    gc.collect()
    gc.freeze()


async def _open_ledger(
    stack: contextlib.AsyncExitStack, settings: Settings, registry: CollectorRegistry
) -> Ledger:
    """The ledger, or a :class:`StartupError` naming the database (password masked) and why."""
    try:
        return await stack.enter_async_context(
            open_ledger(ledger_config(settings), registry=registry)
        )
    except Exception as exc:
        url = settings.database.url
        raise StartupError(
            f"cannot open the ledger database {masked(url)}: {problem(exc, url)}"
        ) from exc


async def _check_database(ledger: Ledger, settings: Settings, readiness: Readiness) -> None:
    """With ``database.auto_upgrade`` false nothing touched the database on start: ask it once.

    If it does not answer, say so and add a ``database`` readiness check that stays failing until
    the database has answered once (later outages spool as usual and do not make /readyz fail).
    """
    url = masked(settings.database.url)
    if await ledger.ready():
        return
    log.warning(
        "the ledger database %s does not answer; serving anyway (--no-db-upgrade): records are "
        "spooled to %s until it does, and /readyz reports 'database' not ready",
        url,
        settings.ledger.spool_dir,
    )
    answered = False

    async def database_answered() -> bool:
        nonlocal answered
        if not answered and await ledger.ready():
            answered = True
            log.info("the ledger database %s answers now", url)
        return answered

    readiness.add("database", database_answered)
