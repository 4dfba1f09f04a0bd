"""Reading catalog files: YAML text -> validated :class:`CatalogFile`, errors naming file and entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from importlib import resources
from itertools import pairwise
from typing import Any

import yaml
from pydantic import ValidationError

from pricing.schema import (
    MAX_RATE_DECIMALS_PER_1M,
    CatalogFile,
    Entry,
    FineTuned,
    TierRates,
    TokenRates,
)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogError(ValueError):
    """A catalog file is invalid. The message names the file and the entry."""


def shipped_catalog_texts() -> list[tuple[str, str]]:
    """``(file name, YAML text)`` of every catalog file shipped in ``pricing/catalog/``."""
    folder = resources.files("pricing").joinpath("catalog")
    return sorted(
        (item.name, item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".yaml")
    )


def parse_catalog(texts: Iterable[tuple[str, str]]) -> tuple[CatalogFile, ...]:
    """Validate every file; the first problem raises :class:`CatalogError`."""
    files = tuple(_parse_one(name, text) for name, text in texts)
    _check_names_unique(files)
    return files


def _parse_one(file_name: str, text: str) -> CatalogFile:
    try:
        raw = yaml.load(text, Loader=_LOADER)  # a safe loader (C-accelerated when available)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file_name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{file_name}: expected a mapping with 'entries' and/or 'tools'")
    try:
        parsed = CatalogFile.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_describe(file_name, raw, exc)) from None
    for index, entry in enumerate(parsed.entries):
        problem = _entry_problem(entry)
        if problem:
            raise CatalogError(f"{file_name}: entries[{index}] ({entry.model}): {problem}")
    for index, tool in enumerate(parsed.tools):
        if tool.effective_until is not None and tool.effective_until <= tool.effective_from:
            raise CatalogError(
                f"{file_name}: tools[{index}] ({tool.unit}): effective_until must be after effective_from"
            )
    return parsed


def _describe(file_name: str, raw: Mapping[str, Any], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        where = ".".join(str(part) for part in loc)
        label = ""
        if len(loc) >= 2 and loc[0] in ("entries", "tools") and isinstance(loc[1], int):
            items = raw.get(str(loc[0])) or []
            item = items[loc[1]] if loc[1] < len(items) else None
            if isinstance(item, dict):
                label = f" ({item.get('model') or item.get('unit') or '?'})"
            where = f"{loc[0]}[{loc[1]}]{label}" + "".join(f".{part}" for part in loc[2:])
        lines.append(f"{file_name}: {where}: {error['msg']}")
    return "\n".join(lines)


def per_1m_factor(entry: Entry) -> Decimal:
    """What a rate in the entry's ``token_unit`` is multiplied by to give USD per 1M tokens."""
    return Decimal(1000) if entry.token_unit == "per_1k_tokens" else Decimal(1)


def _entry_problem(entry: Entry) -> str | None:
    if entry.effective_until is not None and entry.effective_until <= entry.effective_from:
        return "effective_until must be after effective_from"
    factor = per_1m_factor(entry)
    blocks: list[tuple[str, TokenRates | None]] = [
        ("standard", entry.standard),
        ("batch", entry.batch),
        ("flex", entry.flex),
        ("priority", entry.priority),
        ("scale", entry.scale),
        ("fine_tuned", entry.fine_tuned),
    ]
    if entry.long_context is not None:
        blocks.append(("long_context.standard", entry.long_context.standard))
        blocks.append(("long_context.priority", entry.long_context.priority))
    for label, block in blocks:
        if block is None:
            continue
        rates = dict(block.token_items())
        if isinstance(block, FineTuned) and block.training_tokens is not None:
            rates["training_tokens"] = block.training_tokens
        for dimension, rate in rates.items():
            per_1m = (rate * factor).normalize()
            if max(0, -int(per_1m.as_tuple().exponent)) > MAX_RATE_DECIMALS_PER_1M:
                return (
                    f"{label}.{dimension} = {rate} is {per_1m} per 1M tokens: more than "
                    f"{MAX_RATE_DECIMALS_PER_1M} decimals would not fit NUMERIC(20,10) per token"
                )
    if not entry.standard.token_items() and not _has_unit_prices(entry.standard):
        return "standard has no price at all"
    return None


def _has_unit_prices(block: TierRates) -> bool:
    return (
        bool(block.per_image) or block.per_minute is not None or block.per_1m_characters is not None
    )


def _check_names_unique(files: tuple[CatalogFile, ...]) -> None:
    """A name (model, alias or snapshot) belongs to one model; periods of a model never overlap."""
    owner: dict[str, str] = {}
    periods: dict[str, list[Entry]] = {}
    for catalog in files:
        for entry in catalog.entries:
            for name in (entry.model, *entry.aliases, *entry.snapshots):
                previous = owner.setdefault(name, entry.model)
                if previous != entry.model:
                    raise CatalogError(
                        f"name {name!r} is claimed by both {previous!r} and {entry.model!r}"
                    )
            periods.setdefault(entry.model, []).append(entry)
    for model, entries in periods.items():
        ordered = sorted(entries, key=lambda e: e.effective_from)
        for earlier, later in pairwise(ordered):
            if earlier.effective_until is None or earlier.effective_until > later.effective_from:
                raise CatalogError(
                    f"{model}: entries {earlier.key} and {later.key} overlap "
                    f"(give the earlier one an effective_until)"
                )
