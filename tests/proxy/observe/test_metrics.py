"""Metrics from ledger records: bounded labels, values, and what a Prometheus user sees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest

from proxy.http.exchange import Exchange
from proxy.observe.metrics import LabelBounds, Metrics, MetricsStage, call_overhead_s, status_class
from storage.record import UsageRecord

T0 = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


def record(**overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "id": "r1",
        "started_at": T0,
        "finished_at": T0,
        "method": "POST",
        "path": "/v1/chat/completions",
        "endpoint": "chat.completions",
        "status_code": 200,
        "outcome": "ok",
        "model_requested": "gpt-4o-mini",
        "model": "gpt-4o-mini-2024-07-18",
        "team": "search",
        "input_tokens": 100,
        "cached_input_tokens": 40,
        "output_tokens": 20,
        "reasoning_tokens": 5,
        "usage_source": "reported",
        "cost_usd": Decimal("0.0000228"),
        "latency_ms": 150.0,
    }
    values.update(overrides)
    return UsageRecord(**values)


def make(**kwargs: Any) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics(registry, models=MODELS, teams=("search", "ads"), **kwargs), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def label_values(registry: CollectorRegistry, sample: str, label: str) -> set[str]:
    return {
        s.labels[label]
        for metric in registry.collect()
        for s in metric.samples
        if s.name == sample and label in s.labels
    }


class TestLabelBounds:
    def test_unknown_model_becomes_other_and_snapshots_fold_to_their_catalog_base(self) -> None:
        bounds = LabelBounds(MODELS, ())
        assert bounds.model("gpt-4o-mini") == "gpt-4o-mini"
        assert bounds.model("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
        assert bounds.model("gpt-4o-0613") == "gpt-4o"
        assert bounds.model("my-finetune-xyz") == "other"
        assert bounds.model("gpt-5-2025-08-07") == "other"  # base not in the catalog
        assert bounds.model(None) == "other"

    def test_a_snapshot_listed_in_the_catalog_keeps_its_own_label(self) -> None:
        bounds = LabelBounds((*MODELS, "gpt-4o-2024-05-13"), ())
        assert bounds.model("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
        assert bounds.model("gpt-4o-2024-08-06") == "gpt-4o"

    def test_unknown_team_becomes_unassigned(self) -> None:
        bounds = LabelBounds(MODELS, ("search",))
        assert bounds.team("search") == "search"
        assert bounds.team("hackers") == "unassigned"
        assert bounds.team(None) == "unassigned"
        assert bounds.team("unassigned") == "unassigned"

    def test_endpoint_and_service_tier_are_bounded(self) -> None:
        bounds = LabelBounds(MODELS, ())
        assert bounds.endpoint("chat.completions") == "chat.completions"
        assert bounds.endpoint("/v1/whatever") == "other"
        assert bounds.service_tier(None) == "default"
        assert bounds.service_tier("flex") == "flex"
        assert bounds.service_tier("x" * 50) == "other"

    @pytest.mark.parametrize(
        ("code", "cls"), [(200, "2xx"), (201, "2xx"), (429, "4xx"), (502, "5xx"), (None, "none")]
    )
    def test_status_class(self, code: int | None, cls: str) -> None:
        assert status_class(code) == cls


class TestRecords:
    def test_one_record_moves_requests_tokens_cost_and_latency(self) -> None:
        metrics, reg = make()
        metrics.submit(record())
        labels = {"endpoint": "chat.completions", "model": "gpt-4o-mini", "team": "search"}
        assert value(reg, "openai_meter_requests_total", **labels, status_class="2xx") == 1
        assert value(reg, "openai_meter_tokens_total", **labels, type="input") == 100
        assert value(reg, "openai_meter_tokens_total", **labels, type="cached_input") == 40
        assert value(reg, "openai_meter_tokens_total", **labels, type="output") == 20
        assert value(reg, "openai_meter_tokens_total", **labels, type="reasoning") == 5
        assert value(reg, "openai_meter_tokens_total", **labels, type="audio_input") is None
        cost = value(
            reg,
            "openai_meter_cost_usd_total",
            model="gpt-4o-mini",
            team="search",
            service_tier="default",
        )
        assert cost == pytest.approx(0.0000228)
        duration = value(
            reg,
            "openai_meter_request_duration_seconds_sum",
            endpoint="chat.completions",
            model="gpt-4o-mini",
        )
        assert duration == pytest.approx(0.150)
        assert value(reg, "openai_meter_unpriced_requests_total", model="gpt-4o-mini") is None

    def test_unknown_model_and_team_land_in_bounded_series(self) -> None:
        metrics, reg = make()
        for i in range(50):
            metrics.submit(
                record(
                    id=f"r{i}", model=f"custom-{i}", model_requested=f"custom-{i}", team=f"team-{i}"
                )
            )
        assert label_values(reg, "openai_meter_requests_total", "model") == {"other"}
        assert label_values(reg, "openai_meter_requests_total", "team") == {"unassigned"}
        assert (
            value(
                reg,
                "openai_meter_requests_total",
                endpoint="chat.completions",
                model="other",
                team="unassigned",
                status_class="2xx",
            )
            == 50
        )

    def test_no_user_or_key_label_unless_enabled(self) -> None:
        metrics, reg = make()
        metrics.submit(record(user="alice@example.com", key_fingerprint="sha256:0123456789ab"))
        exposition = generate_latest(reg).decode()
        assert "alice" not in exposition
        assert "sha256:" not in exposition
        assert 'user="' not in exposition and 'key="' not in exposition

    def test_user_and_key_labels_when_enabled_are_capped(self) -> None:
        metrics, reg = make(user_labels=True, key_labels=True, max_identity_values=3)
        for i in range(10):
            metrics.submit(record(id=f"r{i}", user=f"u{i}", key_fingerprint="sha256:0123456789ab"))
        assert label_values(reg, "openai_meter_requests_total", "user") == {
            "u0", "u1", "u2", "other",
        }  # fmt: skip
        assert label_values(reg, "openai_meter_cost_usd_total", "key") == {"sha256:0123456789ab"}

    def test_unpriced_call_is_counted_and_adds_no_cost(self) -> None:
        metrics, reg = make()
        metrics.submit(
            record(
                model="mystery-model",
                model_requested="mystery-model",
                cost_usd=None,
                unpriced_reason="no_price",
            )
        )
        assert value(reg, "openai_meter_unpriced_requests_total", model="other") == 1
        assert label_values(reg, "openai_meter_cost_usd_total", "model") == set()

    def test_estimated_usage_counted_by_endpoint_and_reason(self) -> None:
        metrics, reg = make()
        metrics.submit(record(usage_source="estimated", estimate_reason="stream_cut"))
        metrics.submit(record(usage_source="reported"))
        assert (
            value(
                reg,
                "openai_meter_estimated_usage_total",
                endpoint="chat.completions",
                reason="stream_cut",
            )
            == 1
        )

    def test_ttft_only_for_streams(self) -> None:
        metrics, reg = make()
        metrics.submit(record(stream=False, ttft_ms=30.0))
        metrics.submit(record(stream=True, ttft_ms=80.0))
        name = "openai_meter_time_to_first_token_seconds_count"
        labels = {"endpoint": "chat.completions", "model": "gpt-4o-mini"}
        assert value(reg, name, **labels) == 1
        assert value(reg, "openai_meter_time_to_first_token_seconds_sum", **labels) == 0.08

    def test_genai_semconv_histograms(self) -> None:
        metrics, reg = make()
        metrics.submit(record(model_requested="gpt-4o-mini", model="gpt-4o-mini-2024-07-18"))
        common = {
            "gen_ai_operation_name": "chat",
            "gen_ai_request_model": "gpt-4o-mini",
            "gen_ai_response_model": "gpt-4o-mini",
            "gen_ai_provider_name": "openai",
        }
        tokens = "gen_ai_client_token_usage_sum"
        assert value(reg, tokens, **common, gen_ai_token_type="input") == 100
        assert value(reg, tokens, **common, gen_ai_token_type="output") == 20
        # 100 input tokens fall in the (64, 256] semconv bucket.
        assert (
            value(
                reg,
                "gen_ai_client_token_usage_bucket",
                **common,
                gen_ai_token_type="input",
                le="64.0",
            )
            == 0
        )
        assert (
            value(
                reg,
                "gen_ai_client_token_usage_bucket",
                **common,
                gen_ai_token_type="input",
                le="256.0",
            )
            == 1
        )
        assert value(reg, "gen_ai_client_operation_duration_seconds_count", **common) == 1

    def test_a_broken_record_never_raises_and_is_counted(self) -> None:
        metrics, reg = make()
        metrics.submit(record(input_tokens="many"))  # type: ignore[arg-type]
        assert value(reg, "openai_meter_metering_errors_total", stage="metrics") == 1


class TestOtherMoments:
    def test_overhead_buckets_span_a_tenth_of_a_millisecond_to_100ms(self) -> None:
        metrics, reg = make()
        metrics.observe_overhead(0.00005)
        metrics.observe_overhead(0.0003)
        assert value(reg, "openai_meter_proxy_overhead_seconds_bucket", le="0.0001") == 1
        assert value(reg, "openai_meter_proxy_overhead_seconds_bucket", le="0.1") == 2

    def test_ratelimit_headers_set_headroom_gauges_per_model(self) -> None:
        metrics, reg = make()
        headers = CIMultiDict({
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "1999985",
            "x-ratelimit-reset-tokens": "6m0s",
        })  # fmt: skip
        metrics.observe_ratelimit_headers(headers, model="gpt-4o-mini-2024-07-18")
        labels = {"model": "gpt-4o-mini"}
        remaining = "openai_meter_upstream_ratelimit_remaining"
        assert value(reg, remaining, kind="requests", **labels) == 4999
        assert value(reg, remaining, kind="tokens", **labels) == 1999985
        assert (
            value(reg, "openai_meter_upstream_ratelimit_limit", kind="requests", **labels) == 5000
        )
        assert (
            value(reg, "openai_meter_upstream_ratelimit_reset_seconds", kind="tokens", **labels)
            == 360
        )

    def test_usage_tier_limits_exported_for_catalog_models(self) -> None:
        _, reg = make(usage_tier="tier2")
        assert value(reg, "openai_meter_usage_tier_limit", model="gpt-4o-mini", kind="tpm") == 2e6
        assert value(reg, "openai_meter_usage_tier_limit", model="gpt-4o-mini", kind="rpd") is None

    def test_budget_gauges_use_bounded_team(self) -> None:
        metrics, reg = make()
        metrics.set_budget("search", "daily", Decimal("7.50"), Decimal("10"))
        metrics.set_budget("ghost", "monthly", Decimal("1"), None)
        assert value(reg, "openai_meter_budget_spent_usd", team="search", period="daily") == 7.5
        assert value(reg, "openai_meter_budget_limit_usd", team="search", period="daily") == 10
        assert value(reg, "openai_meter_budget_spent_usd", team="unassigned", period="monthly") == 1
        assert (
            value(reg, "openai_meter_budget_limit_usd", team="unassigned", period="monthly") is None
        )

    def test_metering_errors_by_stage(self) -> None:
        metrics, reg = make()
        metrics.metering_error("tap")
        metrics.metering_error("tap")
        assert value(reg, "openai_meter_metering_errors_total", stage="tap") == 2

    def test_two_instances_do_not_share_state(self) -> None:
        a, _ = make()
        _, reg_b = make()
        a.submit(record())
        assert label_values(reg_b, "openai_meter_requests_total", "model") == set()


class TestCanonicalResolver:
    def test_catalog_resolver_decides_the_model_label(self) -> None:
        aliases = {"gpt-4o-mini-2024-07-18": "gpt-4o-mini", "chatgpt-4o-latest": "gpt-4o"}
        bounds = LabelBounds(MODELS, (), canonical=aliases.get)
        assert bounds.model("chatgpt-4o-latest") == "gpt-4o"
        assert bounds.model("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
        assert bounds.model("gpt-4o-2024-08-06") == "other"  # the catalog does not know it

    def test_resolver_answer_outside_the_label_set_is_still_other(self) -> None:
        bounds = LabelBounds(MODELS, (), canonical=lambda m: "not-in-models")
        assert bounds.model("x") == "other"


class TestStage:
    def _exchange(self, **times: float | None) -> Exchange:
        exchange = Exchange(
            method="POST",
            path="/v1/chat/completions",
            query_string="",
            endpoint="chat.completions",
            request_headers={},
            started_monotonic=100.0,
        )
        for name, value in times.items():
            setattr(exchange, name, value)
        return exchange

    def test_overhead_is_the_proxys_own_time_not_the_upstreams(self) -> None:
        exchange = self._exchange(
            upstream_sent_monotonic=100.0003,
            upstream_done_monotonic=102.0,
            finished_monotonic=102.0002,
        )
        assert call_overhead_s(exchange) == pytest.approx(0.0005)
        assert call_overhead_s(self._exchange()) is None  # never reached the upstream

    async def test_stage_feeds_ratelimit_headers_and_overhead(self) -> None:
        metrics, reg = make()
        exchange = self._exchange(
            upstream_sent_monotonic=100.0002, upstream_done_monotonic=101.0,
            finished_monotonic=101.0001,
        )  # fmt: skip
        exchange.response_headers = CIMultiDict({"x-ratelimit-remaining-requests": "7"})
        stage = MetricsStage(metrics)
        assert await stage.on_request(exchange) is None
        stage.on_record(exchange, record())
        assert value(reg, "openai_meter_upstream_ratelimit_remaining", kind="requests",
                     model="gpt-4o-mini") == 7  # fmt: skip
        assert value(reg, "openai_meter_proxy_overhead_seconds_count") == 1
        assert value(reg, "openai_meter_proxy_overhead_seconds_sum") == pytest.approx(0.0003)

    def test_on_error_adapter_counts_by_stage(self) -> None:
        metrics, reg = make()
        metrics.on_error("tap", RuntimeError("boom"))
        assert value(reg, "openai_meter_metering_errors_total", stage="tap") == 1
        # Known stages are exported at 0 from the start: "no errors" is 0, not "no data".
        assert value(reg, "openai_meter_metering_errors_total", stage="metrics") == 0
