"""Recorded transcripts (tests/data) and helpers to feed them split at arbitrary byte positions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

DATA = Path(__file__).resolve().parent.parent / "data"

# The reference notes' §3.8 example ``response.done`` usage (Realtime keys).
REALTIME_REFERENCE_USAGE: dict[str, Any] = {
    "total_tokens": 253,
    "input_tokens": 132,
    "output_tokens": 121,
    "input_token_details": {
        "text_tokens": 119,
        "audio_tokens": 13,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def as_json(name: str) -> Any:
    return orjson.loads(raw(name))


def compact(name: str) -> bytes:
    """A JSON transcript as an upstream would send it (compact, UTF-8)."""
    return orjson.dumps(as_json(name))


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces: list[bytes] = []
    last = 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def cuts(max_cuts: int = 12) -> st.SearchStrategy[list[int]]:
    """Cut positions; the test clamps them to the data length."""
    return st.lists(st.integers(min_value=1, max_value=20_000), max_size=max_cuts)


def chunked(data: bytes, positions: Sequence[int]) -> list[bytes]:
    return split_at(data, [p % (len(data) or 1) for p in positions])


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]
