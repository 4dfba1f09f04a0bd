"""Benchmarks. ``python -m bench`` runs them all; results are written up in docs/performance.md."""
