"""Fallback token counting when no usage arrived (pure, given an encoding).

Chat recipe from the OpenAI cookbook "How to count tokens with tiktoken" (commit c81359c):
3 tokens per message, +1 per ``name``, +3 to prime the reply; tools per ``num_tokens_for_tools``
(func_init 7 on o200k models, 10 on cl100k models; prop_init 3, prop_key 3, enum_init -3,
enum_item 3, func_end 12). Always ``encode_ordinary`` (user text may contain ``<|endoftext|>``).

These are lower bounds for reasoning models (hidden reasoning and cache hits cannot be seen).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import orjson

from pricing.usage import Usage
from proxy.usage.extract import dalle_image_units, speech_characters

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER = 3
IMAGE_PART_TOKENS = 85  # a ``detail: low`` image; a lower bound for larger ones


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class EncoderSource(Protocol):
    def for_model(self, model: str | None) -> Encoder: ...


# Long texts are encoded in pieces cut before a space (where the tokenizer's own pre-split cuts
# anyway): the same count, and each piece releases the GIL (tiktoken encodes outside it) and holds
# it again only briefly - so an estimate run in a worker thread never stalls the event loop.
TEXT_PIECE_CHARS = 1 << 16


def count_text(enc: Encoder, text: str) -> int:
    if not text:
        return 0
    size = len(text)
    if size <= TEXT_PIECE_CHARS:
        return len(enc.encode_ordinary(text))
    total = 0
    start = 0
    while start < size:
        end = start + TEXT_PIECE_CHARS
        if end < size:
            cut = text.rfind(" ", start + TEXT_PIECE_CHARS // 2, end)
            if cut > start:
                end = cut
        total += len(enc.encode_ordinary(text[start:end]))
        start = end
    return total


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def _count_content(enc: Encoder, content: Any) -> int:
    """String content, or a list of parts (text counted, images at the low-detail floor)."""
    if isinstance(content, str):
        return count_text(enc, content)
    if not isinstance(content, list):
        return count_text(enc, _as_text(content))
    total = 0
    for part in content:
        if not isinstance(part, dict):
            total += count_text(enc, _as_text(part))
            continue
        kind = part.get("type")
        if kind in ("image_url", "input_image", "image"):
            total += IMAGE_PART_TOKENS
        elif "text" in part:
            total += count_text(enc, _as_text(part.get("text")))
        elif kind in ("refusal", "output_text"):
            total += count_text(enc, _as_text(part.get(kind) or part.get("text")))
    return total


def count_messages(enc: Encoder, messages: Iterable[Any]) -> int:
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                total += _count_content(enc, value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        total += count_text(enc, _as_text(fn.get("name")))
                        total += count_text(enc, _as_text(fn.get("arguments")))
            else:
                total += count_text(enc, _as_text(value))
                if key == "name":
                    total += TOKENS_PER_NAME
    return total + REPLY_PRIMER


def count_tools(enc: Encoder, tools: Iterable[Any], *, o200k: bool) -> int:
    """The cookbook's ``num_tokens_for_tools`` (function tools; nested schemas not handled)."""
    func_init = 7 if o200k else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total = 0
    seen = False
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if not isinstance(fn, dict) or "name" not in fn:
            continue
        seen = True
        total += func_init
        desc = _as_text(fn.get("description")).removesuffix(".")
        total += count_text(enc, f"{_as_text(fn.get('name'))}:{desc}")
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if isinstance(props, dict) and props:
            total += prop_init
            for key, spec in props.items():
                total += prop_key
                spec = spec if isinstance(spec, dict) else {}
                enum = spec.get("enum")
                if isinstance(enum, list):
                    total += enum_init
                    for item in enum:
                        total += enum_item + count_text(enc, _as_text(item))
                pdesc = _as_text(spec.get("description")).removesuffix(".")
                total += count_text(enc, f"{key}:{_as_text(spec.get('type'))}:{pdesc}")
    return total + func_end if seen else 0


def count_responses_input(enc: Encoder, request: Mapping[str, Any]) -> int:
    """Responses ``input`` (string or items) plus ``instructions``, message recipe per item."""
    total = 0
    instructions = request.get("instructions")
    if isinstance(instructions, str) and instructions:
        total += TOKENS_PER_MESSAGE + count_text(enc, instructions)
    items = request.get("input")
    if isinstance(items, str):
        total += TOKENS_PER_MESSAGE + count_text(enc, items)
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            total += TOKENS_PER_MESSAGE
            if "content" in item:
                total += _count_content(enc, item.get("content"))
            elif item.get("type") == "function_call":
                total += count_text(enc, _as_text(item.get("name")))
                total += count_text(enc, _as_text(item.get("arguments")))
            elif item.get("type") == "function_call_output":
                total += count_text(enc, _as_text(item.get("output")))
            else:
                total += count_text(enc, _as_text(item))
    return total + REPLY_PRIMER


def count_embeddings_input(enc: Encoder, value: Any) -> int:
    """A string, a list of strings, a token array, or a list of token arrays."""
    if isinstance(value, str):
        return count_text(enc, value)
    if isinstance(value, list):
        if value and all(isinstance(x, int) for x in value):
            return len(value)
        return sum(count_embeddings_input(enc, x) for x in value)
    return 0


def estimate_usage(
    encoders: EncoderSource,
    endpoint: str,
    model: str | None,
    request: Mapping[str, Any] | None,
    output_text: str,
) -> Usage:
    """The estimated usage of one call from its request and whatever output was seen."""
    req: Mapping[str, Any] = request or {}
    if endpoint == "audio.speech":
        if model is None or model.startswith("tts-1"):
            return Usage(units=speech_characters(req))
        text = _as_text(req.get("input")) + _as_text(req.get("instructions"))
        return Usage(input_tokens=count_text(encoders.for_model(model), text))
    if endpoint in ("images.generations", "images.edits", "images.variations"):
        return Usage(units=dalle_image_units(req, None))
    enc = encoders.for_model(model)
    output = count_text(enc, output_text)
    if endpoint == "chat.completions":
        messages = req.get("messages")
        prompt = count_messages(enc, messages if isinstance(messages, list) else [])
        tools = req.get("tools") or req.get("functions")
        if isinstance(tools, list) and tools:
            o200k = getattr(enc, "name", "o200k_base") != "cl100k_base"
            prompt += count_tools(enc, tools, o200k=o200k)
        return Usage(input_tokens=prompt, output_tokens=output)
    if endpoint == "responses":
        prompt = count_responses_input(enc, req)
        tools = req.get("tools")
        if isinstance(tools, list) and tools:
            prompt += count_tools(enc, tools, o200k=True)
        return Usage(input_tokens=prompt, output_tokens=output)
    if endpoint == "completions":
        return Usage(
            input_tokens=count_embeddings_input(enc, req.get("prompt")), output_tokens=output
        )
    if endpoint == "embeddings":
        return Usage(input_tokens=count_embeddings_input(enc, req.get("input")))
    if endpoint == "audio.transcriptions" or endpoint == "audio.translations":
        return Usage(output_tokens=output)
    return Usage(output_tokens=output)
