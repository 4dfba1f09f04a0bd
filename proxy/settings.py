"""The settings schema (one pydantic model per config section).

Loading and precedence (CLI flag > ``OPENAI_METER_*`` env > YAML file > default) live in
``proxy.config``; this module only says what a valid configuration is. Every model forbids unknown
keys so a typo stops start-up with a message naming the key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class UpstreamSettings(_Section):
    # The origin (optionally with a path prefix) the proxy forwards /v1/... to. A base URL ending in
    # /v1 -- what users copy from OPENAI_BASE_URL -- is accepted and the /v1 dropped, so calls go to
    # {origin}/v1/..., never /v1/v1/...
    url: str = "https://api.openai.com"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # Never shorter than the openai SDK's own 600 s default: long generations must not be cut.
    read_timeout_s: float = Field(default=900.0, gt=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    # The real OpenAI key used when virtual keys are enabled (prefer env OPENAI_METER_UPSTREAM_API_KEY).
    api_key: str | None = None
    max_connections: int = Field(default=0, ge=0)  # 0 = unlimited

    @field_validator("url")
    @classmethod
    def _without_v1(cls, url: str) -> str:
        trimmed = url.rstrip("/")
        return trimmed[: -len("/v1")] if trimmed.endswith("/v1") else url


class DatabaseSettings(_Section):
    url: str = "sqlite:///openai-meter.db"
    auto_upgrade: bool = True


class AdminSettings(_Section):
    token: str | None = None


class MeteringSettings(_Section):
    inject_stream_usage: bool = True
    # JSON request bodies up to this size are read whole (to inject include_usage and estimate);
    # larger or non-JSON bodies stream through untouched.
    max_json_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # One SSE line or event larger than this is forwarded untouched but not buffered for metering
    # (the call is then estimated, estimate_reason = oversized_event). Bounds memory per stream.
    max_event_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Build the tiktoken encodings at start-up (in a thread) instead of on the first estimate.
    # They are ~105 MiB of RSS (o200k_base ~70, cl100k_base ~35) that only estimates use; loaded
    # lazily, the first estimate per encoding waits ~0.5 s for it in a worker thread (never on the
    # event loop; bundled files, no network).
    preload_encodings: bool = False


class LedgerSettings(_Section):
    spool_dir: str = "./spool"
    batch_size: int = Field(default=500, gt=0)
    flush_interval_ms: int = Field(default=200, gt=0)
    queue_size: int = Field(default=10_000, gt=0)
    fsync_interval_ms: int = Field(default=100, gt=0)
    retention_days: int | None = Field(default=None, gt=0)
    stall_timeout_s: float = Field(default=30.0, gt=0)
    journal: bool = True
    writer_process: bool = True


class PricingSettings(_Section):
    overrides: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    discount_percent: Decimal = Decimal("0")
    model_discount_percent: dict[str, Decimal] = Field(default_factory=dict)


class BudgetSettings(_Section):
    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    action: Literal["block", "alert"] = "block"
    warn_at_percent: Decimal = Field(default=Decimal("80"), ge=0, le=100)


class TeamSettings(_Section):
    keys: list[str] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    budget: BudgetSettings | None = None


NotifyEvent = Literal["warn", "exceeded", "reset"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("warn", "exceeded", "reset")


class WebhookSettings(_Section):
    """One budget-alert webhook (``budgets.notify[]``). The URL usually carries a secret: give it
    by ``url_env`` (the name of an environment variable) to keep it out of the file; it is held
    as a ``SecretStr`` so a printed settings object never shows it."""

    url: SecretStr | None = None
    url_env: str | None = Field(default=None, min_length=1)
    format: Literal["json", "slack"] = "json"
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS), min_length=1)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_attempts: int = Field(default=8, ge=1, le=100)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSettings:
        # The message must not echo the URL (it is a secret); pydantic shows only this text.
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        return self


class BudgetsSettings(_Section):
    timezone: str = "UTC"
    notify: list[WebhookSettings] = Field(default_factory=list)
    # A budgeted call reserves the most it can cost (proxy.usage.ceiling): its output is bounded by
    # the request's max_tokens-style cap, else by this ceiling (per model, else the default).
    max_output_tokens: int = Field(default=128_000, gt=0, le=10_000_000)
    model_max_output_tokens: dict[str, int] = Field(default_factory=dict)
    # On PostgreSQL, reservations of teams with a block limit are shared by every replica.
    shared_reservations: bool = True


class VirtualKeySettings(_Section):
    enabled: bool = False


class MetricsSettings(_Section):
    port: int | None = Field(default=None, ge=0, le=65535)
    # When set, /metrics (main and separate port) needs Authorization: Bearer <token>.
    token: str | None = None
    user_labels: bool = False
    key_labels: bool = False
    usage_tier: Literal["free", "tier1", "tier2", "tier3", "tier4", "tier5"] | None = None


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class OtelSettings(_Section):
    """OpenTelemetry export over OTLP/HTTP (needs the ``otel`` extra); off by default."""

    enabled: bool = False
    # The collector's OTLP/HTTP base URL; /v1/traces and /v1/metrics are appended.
    endpoint: str = Field(default="http://127.0.0.1:4318", pattern=r"^https?://[^\s/?#]+[^\s?#]*$")
    # Sent with every export (e.g. an auth header; from the environment as
    # OPENAI_METER_OTEL__HEADERS__AUTHORIZATION); values are never logged.
    headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "openai-meter"
    traces: bool = True
    # Share of new traces (client sent no traceparent) that are recorded and exported; a client's
    # sampled flag is followed. The upstream traceparent is sent either way.
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    metrics: bool = True
    metrics_interval_ms: int = Field(default=15_000, gt=0)
    # Per export (retries included), in the export thread, never on a call; a collector that is
    # down holds the shutdown about this long at most.
    timeout_s: float = Field(default=5.0, gt=0)
    # Finished spans waiting for export; beyond it new spans are dropped (never blocking a call).
    max_queue_size: int = Field(default=2048, gt=0)


class ServerSettings(_Section):
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # A new connection's first request head must arrive within this (slowloris guard; 0 = off).
    header_timeout_s: float = Field(default=10.0, ge=0)
    # A connection waiting for its next request is closed after this (above a load balancer's
    # own idle timeout, e.g. 60 s, so the balancer closes first). Never cuts a running call.
    idle_timeout_s: float = Field(default=75.0, gt=0)
    # Run on uvloop when it is installed (a dependency except on Windows); false = asyncio's loop.
    uvloop: bool = True
    # Processes serving the one listen port (SO_REUSEPORT); "auto" = one per CPU core.
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1


class ReconcileSettings(_Section):
    """``openai-meter reconcile`` and the server's scheduled comparison with OpenAI's Admin API."""

    # How often the server re-reads the last ``restate_days`` days ("6h", "30m", "1d"); null = off.
    interval: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,5}[smhd]$")
    # OpenAI restates usage and costs buckets for a few days: differences there are "restating".
    restate_days: int = Field(default=3, ge=0, le=31)
    # The environment variable holding the admin key (sk-admin-...); never put the key in a file.
    admin_key_env: str = Field(default="OPENAI_ADMIN_KEY", min_length=1)
    # Beyond this difference in cost (percent of OpenAI's billed USD) the comparison fails.
    tolerance_percent: Decimal = Field(default=Decimal("1"), ge=0, le=100)
    # The project OpenAI bills calls sent without an OpenAI-Project header to (the key's project).
    default_project: str | None = None


class Settings(_Section):
    listen: ListenSettings = ListenSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    metering: MeteringSettings = MeteringSettings()
    ledger: LedgerSettings = LedgerSettings()
    pricing: PricingSettings = PricingSettings()
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    budgets: BudgetsSettings = BudgetsSettings()
    virtual_keys: VirtualKeySettings = VirtualKeySettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    server: ServerSettings = ServerSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    otel: OtelSettings = OtelSettings()
