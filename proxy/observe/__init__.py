"""Observability: Prometheus metrics and ``/metrics``, rate-limit headroom, log formatting."""
