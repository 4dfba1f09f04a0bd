"""The usage meter: ``MeteringHooks`` that turn one forwarded call into exactly one ``UsageRecord``.

* ``on_request`` parses the JSON body once, fills ``model_requested`` / ``stream`` /
  ``service_tier_requested``, runs the policy stages (first refusal wins) and, for chat / legacy
  completions streams that did not ask for usage, injects ``stream_options.include_usage``.
* ``on_response`` picks the tap for the endpoint and content type (``proxy.usage.plan``) and, when
  usage was injected, the rewriter that hides the usage-only chunk from the client.
* ``on_finish`` turns the tap's observation into a record: estimation when usage is missing,
  dedupe of retrievals, pricing with the *response's* model and tier, then sinks and stages.
  It never raises: failures are reported through ``on_error(stage, exc)`` and a record is still
  emitted.

Already-metered retrievals (a second ``GET`` of the same ``resp_…``/``chatcmpl-…``/``batch_…``) are
still recorded - one record per forwarded call - but with usage zeroed, ``usage_source = "none"``,
``cost_usd = 0`` and ``price_ref = "already_metered:<kind>"``, so spend and tokens count once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import orjson
from aiohttp import web

from pricing.cost import Cost, Pricer
from pricing.usage import Usage
from proxy.http.exchange import Exchange, RequestStage, ResponsePlan
from proxy.http.observation import NullTap, Observation
from proxy.http.upload_copy import UploadCopy
from proxy.usage.audio import AUDIO_ENDPOINTS, measured
from proxy.usage.audio_duration import install_upload_copy, probe_upload, take_upload_copy
from proxy.usage.dedupe import DedupeStore
from proxy.usage.encodings import Encodings, encoding_name_for_model
from proxy.usage.estimate import estimate_usage
from proxy.usage.form import form_fields
from proxy.usage.plan import Call, choose_tap
from proxy.usage.realtime import query_model
from proxy.usage.rewrite import UsageChunkStripper, inject_include_usage, needs_injection
from proxy.usage.sse import DEFAULT_MAX_EVENT_BYTES
from proxy.usage.taps import JsonBodyTap
from storage.record import RecordSink, UsageRecord, UsageSource

ErrorHook = Callable[[str, BaseException], None]
EstimatedHook = Callable[[str, str], None]

_INJECTABLE: Final = frozenset({"chat.completions", "completions"})
_FORM_KEY: Final = "usage.form"
# Endpoints billed even when the response never started (client gone / timeout before headers).
_BILLABLE_POSTS: Final = frozenset({"chat.completions", "completions", "responses", "embeddings"})
_ZERO: Final = Decimal(0)
# Calls whose request body + seen output exceed this are estimated in a worker thread (~2 ms of
# tiktoken on the loop at this size; a 10 MB prompt would hold it for ~0.5 s).
_LONG_ESTIMATE_CHARS: Final = 128 * 1024
_NO_USAGE: Final = Usage()  # read-only stand-in when a call has no usage


def _is_empty(usage: Usage) -> bool:
    # Every field of TOKEN_FIELDS, spelled out: attribute reads, not a getattr loop (hot path).
    return not (
        usage.units
        or usage.input_tokens
        or usage.cached_input_tokens
        or usage.cache_write_tokens
        or usage.output_tokens
        or usage.reasoning_tokens
        or usage.audio_input_tokens
        or usage.audio_output_tokens
        or usage.image_input_tokens
        or usage.image_output_tokens
        or usage.accepted_prediction_tokens
        or usage.rejected_prediction_tokens
    )


def _tier_from_request(tier: str | None) -> str | None:
    """A request tier is only a fallback: ``auto`` says nothing, ``fast`` is ``priority``."""
    if tier is None or tier == "auto":
        return None
    return "priority" if tier == "fast" else tier


class UsageMeter:
    def __init__(
        self,
        *,
        pricer: Pricer,
        sinks: Sequence[RecordSink],
        encodings: Encodings,
        dedupe: DedupeStore,
        stages: Sequence[RequestStage] = (),
        inject_stream_usage: bool = True,
        on_error: ErrorHook | None = None,
        on_estimated: EstimatedHook | None = None,
        max_json_body_bytes: int = 64 * 1024 * 1024,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._pricer = pricer
        self._sinks = tuple(sinks)
        self._encodings = encodings
        self._dedupe = dedupe
        self._stages = tuple(stages)
        self._inject = inject_stream_usage
        self._on_error = on_error
        self._on_estimated = on_estimated
        self._max_json = max_json_body_bytes
        self._max_event = max_event_bytes
        self._pending: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        try:
            self._read_request(exchange)
        except Exception as exc:
            self._report("request", exc)
        for stage in self._stages:
            try:
                refusal = await stage.on_request(exchange)
            except Exception as exc:
                self._report("stage", exc)
                continue
            if refusal is not None:
                return refusal
        try:
            self._maybe_inject(exchange)
        except Exception as exc:
            self._report("inject", exc)
        if exchange.endpoint in AUDIO_ENDPOINTS:  # priced per minute: may need the upload's length
            try:
                install_upload_copy(exchange, self._request_fields(exchange))
            except Exception as exc:
                self._report("upload_copy", exc)
        return None

    def on_response(self, exchange: Exchange) -> ResponsePlan:
        try:
            content_type = exchange.response_content_type or (
                (exchange.response_headers or {}).get("Content-Type", "")
            )
            call = Call(
                endpoint=exchange.endpoint,
                method=exchange.method,
                path=exchange.path,
                status=exchange.status_code,
                content_type=content_type,
                request=self._request_fields(exchange),
                model_requested=exchange.model_requested,
                max_json_bytes=self._max_json,
                max_event_bytes=self._max_event,
            )
            tap = choose_tap(call)
            rewriter = None
            status = exchange.status_code or 0
            if exchange.usage_injected and status < 400 and not isinstance(tap, JsonBodyTap):
                # An injected stream (also one mislabelled text/plain): hide what we asked for.
                rewriter = UsageChunkStripper()
            # A JSON body the tap reads whole anyway goes to the client whole, with its length.
            whole = self._max_json if isinstance(tap, JsonBodyTap) and status < 300 else 0
            return ResponsePlan(tap=tap, rewriter=rewriter, buffer_limit=whole)
        except Exception as exc:
            self._report("response", exc)
            return ResponsePlan(tap=NullTap())

    def on_finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None:
        try:
            self._finish(exchange, plan)
        except Exception as exc:  # last resort: still one record for this call
            self._report("finish", exc)
            self._emit(exchange, self._bare_record(exchange))

    async def drain(self) -> None:
        """Wait for records still waiting on an async dedupe store (call at shutdown)."""
        while self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    # --- request side -------------------------------------------------------------------------

    def _read_request(self, exchange: Exchange) -> None:
        if exchange.request_json is None and exchange.request_body:
            body = exchange.request_body
            ct = exchange.content_type.lower()
            if "json" in ct or (not ct and body.lstrip()[:1] == b"{"):
                parsed = orjson.loads(body)
                if isinstance(parsed, dict):
                    exchange.request_json = parsed
        fields = self._request_fields(exchange)
        model = fields.get("model")
        if isinstance(model, str) and model and exchange.model_requested is None:
            exchange.model_requested = model
        elif exchange.model_requested is None and exchange.endpoint == "realtime":
            exchange.model_requested = query_model(exchange.query_string)  # ?model= of the WS URL
        stream = fields.get("stream")
        if stream is True or stream == "true" or "stream=true" in exchange.query_string:
            exchange.stream = True
        tier = fields.get("service_tier")
        if isinstance(tier, str) and tier and exchange.service_tier_requested is None:
            exchange.service_tier_requested = tier

    def _request_fields(self, exchange: Exchange) -> Mapping[str, Any]:
        if exchange.request_json is not None:
            return exchange.request_json
        cached = exchange.extras.get(_FORM_KEY)
        if isinstance(cached, dict):
            return cached
        fields: dict[str, Any] = {}
        # The full header carries the boundary (aiohttp's ``content_type`` drops parameters).
        content_type = exchange.request_headers.get("Content-Type") or exchange.content_type
        body = exchange.request_body or exchange.request_body_head
        if body and content_type.lower().startswith("multipart/"):
            fields = dict(form_fields(body, content_type))
        exchange.extras[_FORM_KEY] = fields
        return fields

    def _maybe_inject(self, exchange: Exchange) -> None:
        request = exchange.request_json
        if (
            not self._inject
            or exchange.endpoint not in _INJECTABLE
            or exchange.method.upper() != "POST"
            or request is None
            or exchange.request_body is None
            or not needs_injection(request)
        ):
            return
        base = (
            exchange.upstream_body if exchange.upstream_body is not None else exchange.request_body
        )
        exchange.upstream_body = inject_include_usage(base, request)
        exchange.usage_injected = True

    # --- finish side --------------------------------------------------------------------------

    def _finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None:
        if exchange.finished_monotonic is None:
            exchange.finished_monotonic = time.monotonic()
        if exchange.finished_at is None:
            exchange.finished_at = datetime.now(UTC)
        obs = self._observe(exchange, plan)
        if self._needs_estimate(exchange, plan, obs):
            if self._estimate_is_long(exchange, obs):
                self._estimate_later(exchange, obs)
                return
            obs = self._estimate(exchange, obs)
        self._conclude(exchange, obs)

    def _conclude(self, exchange: Exchange, obs: Observation) -> None:
        if exchange.upload_tee is not None:
            copy = take_upload_copy(exchange, obs)
            if copy is not None:
                self._measure_later(exchange, obs, copy)
                return
        if obs.source == "reported" and obs.dedupe_id and obs.dedupe_kind:
            seen = self._dedupe.first_time(obs.dedupe_kind, obs.dedupe_id)
            if inspect.isawaitable(seen):
                self._later(exchange, obs, seen)
                return
            if not seen:
                obs = self._already_metered(obs)
        self._emit(exchange, self._record(exchange, obs))

    def _observe(self, exchange: Exchange, plan: ResponsePlan | None) -> Observation:
        """What the tap saw (not yet estimated)."""
        complete = exchange.outcome == "ok"
        if plan is not None:
            try:
                return plan.tap.finish(complete=complete)
            except Exception as exc:
                self._report("tap", exc)
                return Observation(usage=None, source="none", usage_expected=True)
        billable = (
            exchange.method.upper() == "POST"
            and exchange.endpoint in _BILLABLE_POSTS
            and exchange.outcome in ("client_disconnect", "upstream_timeout")
        )
        return Observation(usage=None, source="none", usage_expected=billable)

    @staticmethod
    def _needs_estimate(exchange: Exchange, plan: ResponsePlan | None, obs: Observation) -> bool:
        if obs.source == "reported" or not obs.usage_expected:
            return False
        status = exchange.status_code
        # An upstream error is not billed. With no plan no response headers ever came: the
        # proxy's own 504 says nothing about whether upstream ran (and billed) the call.
        return plan is None or status is None or status < 400

    def _estimate_is_long(self, exchange: Exchange, obs: Observation) -> bool:
        size = len(exchange.request_body or b"") + len(obs.output_text)
        if size > _LONG_ESTIMATE_CHARS:
            return True
        # An encoding not loaded yet (start-up preload still running) would be built - or waited
        # for, behind the preload's lock - on the loop: seconds. Let a worker thread wait instead.
        name = encoding_name_for_model(obs.model or exchange.model_requested)
        return name not in self._encodings.loaded()

    def _estimate_later(self, exchange: Exchange, obs: Observation) -> None:
        """Count a large call's tokens in a worker thread (tiktoken encodes outside the GIL, in
        pieces): the event loop keeps serving while it runs; ``drain`` waits for it."""

        async def finish() -> None:
            try:
                estimated = await asyncio.to_thread(self._estimate, exchange, obs)
            except Exception as exc:  # never lose the record
                self._report("estimate", exc)
                estimated = obs
            try:
                self._conclude(exchange, estimated)
            except Exception as exc:  # as on_finish: still one record for this call
                self._report("finish", exc)
                self._emit(exchange, self._bare_record(exchange))

        try:
            task = asyncio.get_running_loop().create_task(finish())
        except RuntimeError:  # no loop (a synchronous caller): estimate here
            self._conclude(exchange, self._estimate(exchange, obs))
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _estimate(self, exchange: Exchange, obs: Observation) -> Observation:
        reason = exchange.outcome if exchange.outcome != "ok" else obs.estimate_reason or "no_usage"
        model = obs.model or exchange.model_requested
        try:
            usage = estimate_usage(
                self._encodings,
                exchange.endpoint,
                model,
                exchange.request_json or self._request_fields(exchange),
                obs.output_text,
            )
        except Exception as exc:
            self._report("estimate", exc)
            return replace(obs, estimate_reason=reason)
        if obs.usage is not None and obs.usage.units:
            usage = replace(usage, units={**usage.units, **obs.usage.units})
        if self._on_estimated is not None:
            try:
                self._on_estimated(exchange.endpoint, reason)
            except Exception as exc:
                self._report("metrics", exc)
        return replace(obs, usage=usage, source="estimated", estimate_reason=reason)

    @staticmethod
    def _already_metered(obs: Observation) -> Observation:
        return replace(
            obs,
            usage=None,
            source="none",
            extra={**obs.extra, "already_metered": obs.dedupe_kind or ""},
        )

    def _later(self, exchange: Exchange, obs: Observation, seen: Awaitable[bool]) -> None:
        async def finish() -> None:
            current = obs
            try:
                if not await seen:
                    current = self._already_metered(obs)
            except Exception as exc:
                self._report("dedupe", exc)
            self._emit(exchange, self._record(exchange, current))

        try:
            task = asyncio.get_running_loop().create_task(finish())
        except RuntimeError as exc:  # no loop: cannot ask the store; meter it (never lose it)
            self._report("dedupe", exc)
            if inspect.iscoroutine(seen):
                seen.close()
            self._emit(exchange, self._record(exchange, obs))
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _measure_later(self, exchange: Exchange, obs: Observation, copy: UploadCopy) -> None:
        """Price from the uploaded audio's duration, probed in a worker thread (drain waits)."""
        content_type = exchange.request_headers.get("Content-Type", "")

        async def finish() -> None:
            try:
                seconds, reason = await asyncio.to_thread(probe_upload, copy, content_type)
            except Exception as exc:
                self._report("audio_duration", exc)
                seconds, reason = None, "audio_duration_unknown: probe failed"
            finally:
                copy.close()
            self._emit(exchange, self._measured_record(exchange, obs, seconds, reason))

        try:
            task = asyncio.get_running_loop().create_task(finish())
        except RuntimeError as exc:  # no loop: record it unpriced (never lose it, never $0)
            self._report("audio_duration", exc)
            copy.close()
            reason = "audio_duration_unknown: no event loop"
            self._emit(exchange, self._measured_record(exchange, obs, None, reason))
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _measured_record(
        self, exchange: Exchange, obs: Observation, seconds: Decimal | None, reason: str | None
    ) -> UsageRecord:
        if seconds is not None:
            return self._record(exchange, measured(obs, seconds, exchange.model_requested))
        unpriced = self._record(exchange, obs)
        return replace(unpriced, cost_usd=None, price_ref=None, unpriced_reason=reason)

    def _price(
        self, usage: Usage | None, model: str | None, tier: str | None, at: datetime
    ) -> Cost:
        if usage is None or _is_empty(usage):
            return Cost(total=_ZERO, price_ref=None)
        try:
            return self._pricer.price(usage, model, tier, at)
        except Exception as exc:
            self._report("price", exc)
            return Cost(total=None, price_ref=None, unpriced_reason="pricing_error")

    def _record(self, exchange: Exchange, obs: Observation) -> UsageRecord:
        model = obs.model or exchange.model_requested
        tier = obs.service_tier or _tier_from_request(exchange.service_tier_requested)
        usage = obs.usage if obs.source != "none" else None
        already = obs.extra.get("already_metered")
        cost = self._price(usage, model, tier, exchange.started_at)
        price_ref = f"already_metered:{already}" if already is not None else cost.price_ref
        u = usage or _NO_USAGE
        units = u.units
        source: UsageSource = obs.source if usage is not None else "none"
        attribution = exchange.attribution
        tags = attribution.tags
        return UsageRecord(
            id=exchange.id,
            started_at=exchange.started_at,
            finished_at=exchange.finished_at or datetime.now(UTC),
            method=exchange.method,
            path=exchange.path,
            endpoint=exchange.endpoint,
            status_code=exchange.status_code,
            outcome=exchange.outcome,
            request_id=exchange.request_id,
            response_id=obs.response_id,
            model_requested=exchange.model_requested,
            model=model,
            service_tier=tier,
            stream=exchange.stream,
            team=attribution.team,
            project=attribution.project,
            organization=attribution.organization,
            key_fingerprint=attribution.key_fingerprint,
            user=attribution.user,
            tags=dict(tags) if tags else {},
            input_tokens=u.input_tokens,
            cached_input_tokens=u.cached_input_tokens,
            cache_write_tokens=u.cache_write_tokens,
            output_tokens=u.output_tokens,
            reasoning_tokens=u.reasoning_tokens,
            audio_input_tokens=u.audio_input_tokens,
            audio_output_tokens=u.audio_output_tokens,
            image_input_tokens=u.image_input_tokens,
            image_output_tokens=u.image_output_tokens,
            accepted_prediction_tokens=u.accepted_prediction_tokens,
            rejected_prediction_tokens=u.rejected_prediction_tokens,
            units=dict(units) if units else {},
            usage_source=source,
            estimate_reason=obs.estimate_reason if source == "estimated" else None,
            cost_usd=cost.total,
            price_ref=price_ref,
            unpriced_reason=cost.unpriced_reason,
            latency_ms=exchange.latency_ms,
            ttft_ms=exchange.ttft_ms,
        )

    def _bare_record(self, exchange: Exchange) -> UsageRecord:
        return UsageRecord(
            id=exchange.id,
            started_at=exchange.started_at,
            finished_at=exchange.finished_at or datetime.now(UTC),
            method=exchange.method,
            path=exchange.path,
            endpoint=exchange.endpoint,
            status_code=exchange.status_code,
            outcome=exchange.outcome,
            request_id=exchange.request_id,
            model_requested=exchange.model_requested,
            model=exchange.model_requested,
            stream=exchange.stream,
            team=exchange.attribution.team,
            key_fingerprint=exchange.attribution.key_fingerprint,
            usage_source="none",
            cost_usd=None,
            unpriced_reason="metering_error",
            latency_ms=exchange.latency_ms,
        )

    def _emit(self, exchange: Exchange, record: UsageRecord) -> None:
        for sink in self._sinks:
            try:
                sink.submit(record)
            except Exception as exc:
                self._report("sink", exc)
        for stage in self._stages:
            try:
                stage.on_record(exchange, record)
            except Exception as exc:
                self._report("stage", exc)

    def _report(self, stage: str, exc: BaseException) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(stage, exc)
