"""What a tap observed in one response body, and the tap protocol itself (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pricing.usage import Usage
from storage.record import UsageSource


# Built once per call: not frozen (cheaper to construct); treat as immutable.
@dataclass(slots=True)
class Observation:
    usage: Usage | None
    source: UsageSource
    model: str | None = None  # the response's model (resolved snapshot) when it said one
    service_tier: str | None = None  # the response's service_tier when it said one
    response_id: str | None = None
    estimate_reason: str | None = None  # why usage was estimated (stream_cut, no_usage, ...)
    # Set when this response is a retrieval of an already-billed object (stored completion,
    # background response, batch, fine-tuning job): meter once per id.
    dedupe_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    # Kind of object ``dedupe_id`` names (``chat.completion``, ``response``, ``batch``).
    dedupe_kind: str | None = None
    # True when this response should have carried usage (a billable call that succeeded or was
    # cut): with no usage, the meter estimates. False for free endpoints, errors and queued work.
    usage_expected: bool = False
    # Generated text seen in a stream (content, tool-call arguments, refusals): estimation input.
    output_text: str = ""


class Tap(Protocol):
    """Reads a copy of the response body as it streams; never alters what the client gets."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self, *, complete: bool) -> Observation:
        """``complete`` is False when the body was cut (client gone, upstream error, timeout)."""
        ...


class NullTap:
    """The tap for responses nothing is learned from."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> None:
        return None

    def finish(self, *, complete: bool) -> Observation:
        return Observation(usage=None, source="none")
