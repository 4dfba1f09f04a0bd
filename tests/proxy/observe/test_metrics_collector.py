"""The collector-based metrics export exactly what prometheus_client's own metrics exported, and
keep their single-thread contract."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal

import pytest
from prometheus_client import Counter, generate_latest
from prometheus_client.registry import REGISTRY

from tests.proxy.observe.exposition_scenario import OPENMETRICS, TEXT, exposition
from tests.proxy.observe.test_metrics import make, record, value


def test_exposition_is_byte_identical_to_the_prometheus_client_metrics_it_replaced() -> None:
    text, openmetrics = exposition()
    assert text.decode() == TEXT.read_text()
    assert openmetrics.decode() == OPENMETRICS.read_text()


def test_created_series_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import metrics as prometheus_metrics

    metrics, reg = make()
    metrics.submit(record())
    assert b"openai_meter_requests_created{" in generate_latest(reg)
    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    exposition = generate_latest(reg)
    assert b"_created" not in exposition
    assert b"openai_meter_requests_total{" in exposition


def test_names_are_reserved_on_the_registry() -> None:
    _, reg = make()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("openai_meter_requests", "again", registry=reg)
    assert not any(name.startswith("openai_meter_") for name in REGISTRY._names_to_collectors)


def test_negative_amounts_are_refused_like_a_counter_and_counted() -> None:
    metrics, reg = make()
    metrics.submit(record(cost_usd=Decimal("-1")))
    assert value(reg, "openai_meter_metering_errors_total", stage="metrics") == 1
    labels = {"model": "gpt-4o-mini", "team": "search", "service_tier": "default"}
    assert value(reg, "openai_meter_cost_usd_total", **labels) == 0


def test_a_nan_observation_lands_in_no_bucket_like_prometheus_client() -> None:
    metrics, reg = make()
    metrics.observe_overhead(float("nan"))
    assert value(reg, "openai_meter_proxy_overhead_seconds_count") == 0
    assert value(reg, "openai_meter_proxy_overhead_seconds_bucket", le="+Inf") == 0


def _in_thread(fn: object) -> None:
    assert callable(fn)
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


def test_updates_from_a_second_thread_are_refused_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, reg = make()
    metrics.submit(record())  # this thread now owns the metrics
    with caplog.at_level(logging.ERROR, logger="proxy.observe.metrics"):
        _in_thread(lambda: metrics.submit(record()))
    labels = {"endpoint": "chat.completions", "model": "gpt-4o-mini", "team": "search"}
    assert value(reg, "openai_meter_requests_total", **labels, status_class="2xx") == 1
    assert "second thread" in caplog.text
    with pytest.raises(RuntimeError, match="second thread"):
        _raise_in_thread(lambda: metrics.set_budget("search", "daily", Decimal(1), None))


def _raise_in_thread(fn: object) -> None:
    assert callable(fn)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    _in_thread(run)
    if errors:
        raise errors[0]


def test_the_first_updating_thread_owns_the_metrics_not_the_constructing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, reg = make()
    _in_thread(lambda: metrics.submit(record()))  # e.g. an event loop in another thread
    with caplog.at_level(logging.ERROR, logger="proxy.observe.metrics"):
        metrics.submit(record())  # the constructing thread is now the second one: refused
    labels = {"endpoint": "chat.completions", "model": "gpt-4o-mini", "team": "search"}
    assert value(reg, "openai_meter_requests_total", **labels, status_class="2xx") == 1
    assert "second thread" in caplog.text
    # Counting the refusal would itself be an update from the wrong thread: it is only logged.
    assert value(reg, "openai_meter_metering_errors_total", stage="metrics") == 0


def test_a_scrape_from_another_thread_still_works_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, reg = make()
    metrics.submit(record())
    bodies: list[bytes] = []
    with caplog.at_level(logging.WARNING, logger="proxy.observe.metrics"):
        _in_thread(lambda: bodies.append(generate_latest(reg)))
        _in_thread(lambda: bodies.append(generate_latest(reg)))
    assert bodies[0] == bodies[1] == generate_latest(reg)
    assert caplog.text.count("scraped from a thread other") == 1


def test_registry_without_records_exports_the_fixed_series_only() -> None:
    _, reg = make()
    exposition = generate_latest(reg).decode()
    assert 'openai_meter_metering_errors_total{stage="metrics"} 0.0' in exposition
    assert "openai_meter_proxy_overhead_seconds_count 0.0" in exposition
    assert "openai_meter_requests_total{" not in exposition
