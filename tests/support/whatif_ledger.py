"""A small ledger with hand-computed what-if and savings figures (issue 14).

Window ``[2025-06-09, 2025-06-11)`` spans o3's price cut of 2025-06-10 (10 / 2.50 / 40 per 1M
before, 2 / 0.50 / 8 from that day: pricing/catalog/reasoning.yaml). Prices used below, USD per 1M
tokens (input / cached input / output), from the shipped catalog:

* gpt-4o-mini       standard 0.15 / 0.075 / 0.60; batch (listed) 0.075 / 0.075 / 0.30 (flex =
  batch); priority 0.25 / 0.125 / 1.00; web search 25.00 per 1000 calls
* gpt-4.1-nano      standard 0.10 / 0.025 / 0.40; batch = flex = 50%; priority 0.20 / 0.05 / 0.80
* o3 (to 06-09)     10.00 / 2.50 / 40.00, no priority; (from 06-10) 2.00 / 0.50 / 8.00, priority
  3.50 / 0.875 / 14.00
* gpt-4o-audio-preview  text 2.50 / 10.00, audio input 40.00, audio output 80.00
* text-embedding-3-small  0.02 (batch 0.01)
* ft:gpt-4o-mini    0.30 / 0.15 / 1.20

Each record's ``cost`` is written out by hand (the test checks the engine agrees).
"""

from __future__ import annotations

from decimal import Decimal

from storage.record import UsageRecord
from tests.support.spend_ledger import at, make_record

WINDOW = (at("2025-06-09T00:00:00Z"), at("2025-06-11T00:00:00Z"))


def whatif_records() -> list[UsageRecord]:
    return [
        # R1 800k x 0.15 + 200k x 0.075 + 100k x 0.60 = 0.12 + 0.015 + 0.06 (above the
        # long-context floor: priced one by one)
        make_record(
            "2025-06-09T10:00:00Z",
            team="search",
            model="gpt-4o-mini-2024-07-18",
            cost="0.195",
            input_tokens=1_000_000,
            cached_input_tokens=200_000,
            output_tokens=100_000,
            service_tier="default",
        ),
        # R2 o3 before the cut: 10k x 10 + 1k x 40 = 0.1 + 0.04
        make_record(
            "2025-06-09T12:00:00Z",
            team="search",
            model="o3-2025-04-16",
            cost="0.14",
            input_tokens=10_000,
            output_tokens=1_000,
            endpoint="responses",
            path="/v1/responses",
        ),
        # R3 o3 after the cut, same usage: 10k x 2 + 1k x 8 = 0.02 + 0.008
        make_record(
            "2025-06-10T12:00:00Z",
            team="search",
            model="o3-2025-04-16",
            cost="0.028",
            input_tokens=10_000,
            output_tokens=1_000,
            endpoint="responses",
            path="/v1/responses",
            service_tier="default",
        ),
        # R11 o3 after the cut (summed with R3): 4k x 2 + 1k x 0.5 + 500 x 8
        make_record(
            "2025-06-10T18:00:00Z",
            team="search",
            model="o3-2025-04-16",
            cost="0.0125",
            input_tokens=5_000,
            cached_input_tokens=1_000,
            output_tokens=500,
            endpoint="responses",
            path="/v1/responses",
            service_tier="default",
        ),
        # R8 audio: 200 x 2.5 + 800 x 40 + 100 x 10 + 400 x 80 = 0.0005 + 0.032 + 0.001 + 0.032
        make_record(
            "2025-06-09T13:00:00Z",
            team="search",
            model="gpt-4o-audio-preview",
            cost="0.0655",
            input_tokens=1_000,
            audio_input_tokens=800,
            output_tokens=500,
            audio_output_tokens=400,
        ),
        # R9 web search (units: priced one by one): 1k x 0.15 + 100 x 0.60 + 2 x 25/1000
        make_record(
            "2025-06-10T09:00:00Z",
            team="search",
            model="gpt-4o-mini",
            cost="0.05021",
            input_tokens=1_000,
            output_tokens=100,
            units={"web_search_calls": Decimal(2)},
            endpoint="responses",
            path="/v1/responses",
        ),
        # R4 batch: 2M x 0.075 + 500k x 0.30
        make_record(
            "2025-06-10T01:00:00Z",
            team="ads",
            model="gpt-4o-mini",
            cost="0.30",
            input_tokens=2_000_000,
            output_tokens=500_000,
            service_tier="batch",
            endpoint="batches",
            path="/v1/batches/batch_abc",
        ),
        # R5 embeddings: 1M x 0.02
        make_record(
            "2025-06-10T03:00:00Z",
            team="ads",
            model="text-embedding-3-small",
            cost="0.02",
            input_tokens=1_000_000,
            endpoint="embeddings",
            path="/v1/embeddings",
        ),
        # R6 unpriced
        make_record(
            "2025-06-10T04:00:00Z",
            team="ads",
            model="brand-new-model",
            cost=None,
            unpriced_reason="unknown model 'brand-new-model'",
            input_tokens=100,
            output_tokens=10,
        ),
        # R7 flex (= batch rates): 60k x 0.075 + 40k x 0.075 + 10k x 0.30
        make_record(
            "2025-06-10T02:00:00Z",
            team="ads",
            model="gpt-4o-mini",
            cost="0.0105",
            input_tokens=100_000,
            cached_input_tokens=40_000,
            output_tokens=10_000,
            service_tier="flex",
        ),
        # R10 fine-tuned: 10k x 0.30 + 1k x 1.20
        make_record(
            "2025-06-10T05:00:00Z",
            team="ads",
            model="ft:gpt-4o-mini-2024-07-18:acme::abc123",
            cost="0.0042",
            input_tokens=10_000,
            output_tokens=1_000,
        ),
        # outside the window
        make_record("2025-06-11T00:00:00Z", team="search", cost="100", input_tokens=1),
        make_record("2025-06-08T23:59:59.999999Z", team="ads", cost="100", input_tokens=1),
    ]


# Hand-computed per team: what-if cost / actual of the same calls / repriced / not re-priced.
EXPECTED_WHAT_IF = {
    "model=gpt-4.1-nano": {
        # R1 0.08+0.005+0.04; R2 = R3 0.001+0.0004; R11 0.0004+0.000025+0.0002
        "search": (
            "0.128425",
            "0.3755",
            "-0.247075",
            4,
            {
                "no audio_input price for gpt-4.1-nano (standard)": 1,
                "no price for unit web_search_calls on gpt-4.1-nano (standard)": 1,
            },
        ),
        # R4 at nano batch 0.1+0.1; R7 at nano flex 0.003+0.0005+0.002
        "ads": (
            "0.2055",
            "0.3105",
            "-0.105",
            2,
            {
                "a fine-tuned model has no drop-in substitute": 1,
                "embedding model; gpt-4.1-nano is text": 1,
                "unpriced in the ledger (unknown model 'brand-new-model')": 1,
            },
        ),
    },
    "tier=batch": {
        # R1 0.06+0.015+0.03; R2 0.05+0.02; R3 0.01+0.004; R11 0.004+0.00025+0.002;
        # R8 0.00025+0.016+0.0005+0.016; R9 0.000075+0.00003+0.05
        "search": ("0.278105", "0.49121", "-0.213105", 6, {}),
        # R4 0.30 (already batch); R5 0.01; R7 0.0105; R10 0.0015+0.0006
        "ads": (
            "0.3226",
            "0.3347",
            "-0.0121",
            4,
            {
                "unpriced in the ledger (unknown model 'brand-new-model')": 1,
            },
        ),
    },
    "tier=flex": {
        "search": ("0.278105", "0.49121", "-0.213105", 6, {}),
        "ads": (
            "0.0126",
            "0.0147",
            "-0.0021",
            2,
            {
                "flex processing does not serve batches": 1,
                "flex processing does not serve embeddings": 1,
                "unpriced in the ledger (unknown model 'brand-new-model')": 1,
            },
        ),
    },
    "tier=priority": {
        # R1 0.2+0.025+0.1; R3 0.035+0.014; R11 0.014+0.000875+0.007; R9 0.00025+0.0001+0.05
        "search": (
            "0.446225",
            "0.28571",
            "0.160515",
            4,
            {
                "no priority-tier price for gpt-4o-audio-preview": 1,
                "no priority-tier price for o3": 1,
            },
        ),
        # R7 0.015+0.005+0.01
        "ads": (
            "0.03",
            "0.0105",
            "0.0195",
            1,
            {
                "no priority-tier price for fine-tuned gpt-4o-mini": 1,
                "priority processing does not serve batches": 1,
                "priority processing does not serve embeddings": 1,
                "unpriced in the ledger (unknown model 'brand-new-model')": 1,
            },
        ),
    },
}

# Savings per (team, model): cached_input, batch, flex, cached share of input tokens.
EXPECTED_SAVINGS = {
    # R1 200k x (0.15-0.075); share 200k / (1M + 1k)
    ("search", "gpt-4o-mini-2024-07-18"): ("0.015", "0", "0", "0.2000"),
    ("search", "gpt-4o-mini"): ("0", "0", "0", "0.0000"),
    # R11 1k x (2-0.5); share 1k / 25k
    ("search", "o3-2025-04-16"): ("0.0015", "0", "0", "0.0400"),
    # R4 2M x 0.075 + 500k x 0.30; R7 standard 0.009+0.003+0.006 - 0.0105; cached at flex 0
    ("ads", "gpt-4o-mini"): ("0", "0.30", "0.0075", "0.0190"),
}
