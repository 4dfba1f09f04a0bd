"""One ledger row per forwarded call, and the sink protocol records are handed to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

# ``refused``: answered by the proxy itself without calling upstream (budget exceeded, malformed
# X-Meter-Tags, unknown virtual key) -- recorded so refusals are visible, never billed.
Outcome = Literal[
    "ok", "upstream_error", "client_disconnect", "upstream_timeout", "proxy_error", "refused"
]
UsageSource = Literal["reported", "estimated", "none"]


# Not frozen on purpose: one is built per call, and a frozen 40-field dataclass costs ~7x more to
# construct (object.__setattr__ per field). Treat instances as immutable: sinks only read them.
@dataclass(slots=True)
class UsageRecord:
    """DESIGN's ledger columns. Token columns follow OpenAI's totals (details are subsets)."""

    id: str
    started_at: datetime
    finished_at: datetime
    method: str
    path: str
    endpoint: str
    status_code: int | None
    outcome: Outcome
    request_id: str | None = None
    response_id: str | None = None
    model_requested: str | None = None
    model: str | None = None
    service_tier: str | None = None
    stream: bool = False
    team: str = "unassigned"
    project: str | None = None
    organization: str | None = None
    key_fingerprint: str | None = None
    user: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    image_input_tokens: int = 0
    image_output_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    units: Mapping[str, Decimal] = field(default_factory=dict)
    usage_source: UsageSource = "none"
    estimate_reason: str | None = None
    cost_usd: Decimal | None = None
    price_ref: str | None = None
    unpriced_reason: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None


class RecordSink(Protocol):
    """Takes finished records. ``submit`` must never block and never raise into the request path."""

    def submit(self, record: UsageRecord) -> None: ...
