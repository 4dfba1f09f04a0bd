"""``python -m bench`` (``make bench``): run every benchmark and print its figures (copy them to
docs/performance.md); ``python -m bench compare_bench memory_bench`` runs only those named.

``compare_bench`` prints the issue-16 table (direct, the uvloop floor, openai-meter and the LiteLLM
proxy, installed into ``.bench/litellm`` on first use; ``BENCH_LITELLM=0`` leaves it out)."""

from __future__ import annotations

import importlib
import sys

MODULES = (
    "bench.proxy_bench",
    "bench.meter_bench",
    "bench.otel_bench",
    "bench.usage_bench",
    "bench.ledger_bench",
    "bench.budget_bench",
    "bench.notify_bench",
    "bench.stream_bench",
    "bench.memory_bench",
    "bench.ablation_bench",
    "bench.compare_bench",
)


def main(argv: list[str]) -> int:
    wanted = argv or [m.rsplit(".", 1)[1] for m in MODULES]
    for name in MODULES:
        short = name.rsplit(".", 1)[1]
        if short not in wanted:
            continue
        module = importlib.import_module(name)
        print(f"## {short}")
        for key, value in module.run().items():
            print(f"{key:52s} {value:12.3f}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
