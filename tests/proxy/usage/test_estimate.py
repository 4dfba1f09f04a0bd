from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pricing.usage import Usage
from proxy.usage.encodings import BUNDLED, Encodings, encoding_name_for_model, read_bundled
from proxy.usage.estimate import count_messages, count_tools, estimate_usage

# The cookbook's example (openai-cookbook How_to_count_tokens_with_tiktoken, commit c81359c):
# the API reported 124 prompt tokens on gpt-4o (o200k_base) and 129 on gpt-4 (cl100k_base).
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]  # fmt: skip
# The cookbook's tools example: 101 on gpt-4o, 105 on gpt-4.
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    }
]  # fmt: skip
TOOLS_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]  # fmt: skip


def _block_network(mp: pytest.MonkeyPatch, cache_dir: Path) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network access is blocked in this test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    mp.delenv("DATA_GYM_CACHE_DIR", raising=False)


@pytest.fixture(scope="module")
def encodings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encodings]:
    cache = tmp_path_factory.mktemp("empty-tiktoken-cache")
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp, cache)
        registry = Encodings()
        registry.preload()  # loads with the network blocked and an empty cache
    assert list(cache.iterdir()) == []  # nothing written to (or read from) a cache dir
    yield registry


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _block_network(monkeypatch, tmp_path)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))


def test_cookbook_counts_offline(encodings: Encodings, offline: None) -> None:
    assert count_messages(encodings.for_model("gpt-4o"), COOKBOOK_MESSAGES) == 124
    assert count_messages(encodings.for_model("gpt-4"), COOKBOOK_MESSAGES) == 129


def test_cookbook_tool_counts_offline(encodings: Encodings, offline: None) -> None:
    o200k, cl100k = encodings.get("o200k_base"), encodings.get("cl100k_base")
    assert (
        count_messages(o200k, TOOLS_MESSAGES) + count_tools(o200k, COOKBOOK_TOOLS, o200k=True)
        == 101
    )
    assert (
        count_messages(cl100k, TOOLS_MESSAGES) + count_tools(cl100k, COOKBOOK_TOOLS, o200k=False)
        == 105
    )


def test_fresh_registry_loads_offline(offline: None) -> None:
    assert Encodings().get("cl100k_base").n_vocab == 100277


def test_bundled_files_match_tiktokens_hashes() -> None:
    for name, (_url, expected) in BUNDLED.items():
        bpe = read_bundled(name)
        assert hashlib.sha256(bpe.data).hexdigest() == expected


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-5.4-mini", "o200k_base"),
        ("o3-2025-04-16", "o200k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo-instruct", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc", "o200k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::abc", "cl100k_base"),
        ("gpt-realtime", "o200k_base"),  # unknown to tiktoken
        ("some-future-model", "o200k_base"),
        (None, "o200k_base"),
    ],
)
def test_model_to_encoding(model: str | None, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_special_token_text_is_counted_not_rejected(encodings: Encodings) -> None:
    usage = estimate_usage(
        encodings,
        "chat.completions",
        "gpt-4o",
        {"messages": [{"role": "user", "content": "<|endoftext|>"}]},
        "",
    )
    assert usage.input_tokens > 7


def test_responses_input_string_and_items(encodings: Encodings) -> None:
    as_string = estimate_usage(
        encodings, "responses", "gpt-5.4", {"input": "Tell me a joke"}, "Why?"
    )
    as_items = estimate_usage(
        encodings,
        "responses",
        "gpt-5.4",
        {"input": [{"role": "user", "content": "Tell me a joke"}]},
        "Why?",
    )
    assert as_string == as_items
    assert as_string.output_tokens == 2  # "Why" "?"
    with_instructions = estimate_usage(
        encodings,
        "responses",
        "gpt-5.4",
        {"instructions": "Be brief.", "input": "Tell me a joke"},
        "",
    )
    assert with_instructions.input_tokens > as_string.input_tokens


@pytest.mark.parametrize(
    ("value", "tokens"),
    [([1, 2, 3, 4], 4), ([[1, 2], [3, 4, 5]], 5), ("hello world", 2), (["hello", "world"], 2)],
)
def test_embeddings_input_shapes(encodings: Encodings, value: object, tokens: int) -> None:
    usage = estimate_usage(encodings, "embeddings", "text-embedding-3-small", {"input": value}, "")
    assert usage == Usage(input_tokens=tokens)


def test_loaded_encodings_drop_the_python_ranks_but_encode_as_tiktoken(
    encodings: Encodings, offline: None
) -> None:
    import pickle

    text = "Hello, wörld! <|endoftext|> 12345 \U0001f600 " * 50
    for name, n_vocab in (("o200k_base", 200019), ("cl100k_base", 100277)):
        enc = encodings.get(name)
        assert not hasattr(enc, "_mergeable_ranks")  # ~37 MiB of Python dicts freed
        tokens = enc.encode_ordinary(text)
        assert enc.decode(tokens) == text
        assert enc.n_vocab == n_vocab and enc.max_token_value == n_vocab - 1
        with pytest.raises(AttributeError):  # pickling would lose the ranks: loud, not silent
            pickle.dumps(enc)
    assert len(encodings.get("o200k_base").encode_ordinary("hello world")) == 2
