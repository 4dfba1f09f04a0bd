"""Configuration overrides (negotiated prices) and discounts, applied to catalog entries.

``pricing.overrides`` maps a model name to ``{dimension: USD}``. Dimensions:

* token prices, USD per 1M tokens: ``input``, ``cached_input``, ``cache_write``, ``output``,
  ``audio_input``, ``cached_audio_input``, ``audio_output``, ``image_input``,
  ``cached_image_input``, ``image_output``;
* ``per_minute`` (audio), ``per_1m_characters`` (speech);
* ``training_tokens`` (per 1M) and ``training_hours`` (fine-tuning training);
* any of the above prefixed by a tier – ``batch.``, ``flex.``, ``priority.``, ``scale.`` – or by
  ``fine_tuned.`` (token prices only) to set that tier's or fine-tuned inference's price.

A plain dimension replaces the standard price; the catalog's batch/flex price for the same
dimension is then dropped, so batch and flex follow the negotiated price (50%) unless also
overridden. A snapshot or alias name overrides its whole catalog model (every dated entry:
a negotiated price has no date in the configuration). A model not in the catalog becomes a new
entry priced only by its overrides.
Every price made by an override carries ``+override`` in ``price_ref``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pricing.resolve import resolve
from pricing.schema import MAX_RATE_DECIMALS_PER_1M, TOKEN_DIMENSIONS, Entry, FineTuned, TierRates

_UNIT_DIMENSIONS: Final = ("per_minute", "per_1m_characters")
_TIER_PREFIXES: Final = ("batch", "flex", "priority", "scale")
OVERRIDE_SOURCE: Final = "configuration: pricing.overrides"
_EPOCH: Final = date(1970, 1, 1)


def valid_dimensions() -> frozenset[str]:
    plain = {*TOKEN_DIMENSIONS, *_UNIT_DIMENSIONS, "training_tokens", "training_hours"}
    tiered = {f"{t}.{d}" for t in _TIER_PREFIXES for d in (*TOKEN_DIMENSIONS, *_UNIT_DIMENSIONS)}
    fine = {f"fine_tuned.{d}" for d in TOKEN_DIMENSIONS}
    return frozenset(plain | tiered | fine)


def check_percent(name: str, value: Decimal | str | int) -> Decimal:
    try:
        pct = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if not pct.is_finite() or pct < 0 or pct > 100:
        raise ValueError(f"{name}: a discount is a percentage from 0 to 100, got {value}")
    return pct


def _rate(model: str, key: str, value: Decimal | str | int) -> Decimal:
    if isinstance(value, float):
        raise ValueError(f"pricing.overrides.{model}.{key}: write prices as strings, not floats")
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"pricing.overrides.{model}.{key}: not a number: {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"pricing.overrides.{model}.{key}: must be a non-negative number")
    dimension = key.rsplit(".", 1)[-1]
    places = max(0, -int(rate.normalize().as_tuple().exponent))
    if dimension in (*TOKEN_DIMENSIONS, "training_tokens") and places > MAX_RATE_DECIMALS_PER_1M:
        raise ValueError(
            f"pricing.overrides.{model}.{key}: at most {MAX_RATE_DECIMALS_PER_1M} decimals "
            f"per 1M tokens (costs are kept exact in 10 decimal places), got {value}"
        )
    return rate


def _update(block: Any, values: Mapping[str, Decimal | None], kind: type[Any]) -> Any:
    if block is None:
        return kind(**{k: v for k, v in values.items() if v is not None})
    return block.model_copy(update=dict(values))


def _apply(entry: Entry, dims: Mapping[str, Decimal]) -> Entry:
    factor = Decimal(1000) if entry.token_unit == "per_1k_tokens" else Decimal(1)

    def in_unit(key: str, rate: Decimal) -> Decimal:
        # overrides are per 1M tokens; a per-1K entry stores per 1K
        name = key.rsplit(".", 1)[-1]
        return rate / factor if name in (*TOKEN_DIMENSIONS, "training_tokens") else rate

    update: dict[str, Any] = {}
    standard = {
        k: in_unit(k, v) for k, v in dims.items() if "." not in k and not k.startswith("training")
    }
    if standard:
        update["standard"] = _update(entry.standard, standard, TierRates)
        for tier in ("batch", "flex"):
            block = getattr(entry, tier)
            if block is not None:
                update[tier] = block.model_copy(update=dict.fromkeys(standard))
    for tier in _TIER_PREFIXES:
        values = {
            k.split(".", 1)[1]: in_unit(k, v) for k, v in dims.items() if k.startswith(f"{tier}.")
        }
        if values:
            update[tier] = _update(update.get(tier, getattr(entry, tier)), values, TierRates)
    fine = {
        k.split(".", 1)[1]: in_unit(k, v) for k, v in dims.items() if k.startswith("fine_tuned.")
    }
    fine.update({k: in_unit(k, v) for k, v in dims.items() if k.startswith("training")})
    if fine:
        update["fine_tuned"] = _update(entry.fine_tuned, fine, FineTuned)
    return entry.model_copy(update=update)


def apply_overrides(
    entries: Iterable[Entry], overrides: Mapping[str, Mapping[str, Decimal | str | int]]
) -> tuple[list[Entry], frozenset[str]]:
    """Entries with overrides applied, and the catalog models that were overridden."""
    entries = list(entries)
    names = {n: e.model for e in entries for n in (e.model, *e.aliases, *e.snapshots)}
    allowed = valid_dimensions()
    touched: set[str] = set()
    for model_name, raw_dims in overrides.items():
        for key in raw_dims:
            if key not in allowed:
                raise ValueError(
                    f"pricing.overrides.{model_name}: unknown dimension {key!r} "
                    f"(known: {', '.join(sorted(allowed - {k for k in allowed if '.' in k}))}, "
                    f"or one prefixed by batch./flex./priority./scale./fine_tuned.)"
                )
        dims = {k: _rate(model_name, k, v) for k, v in raw_dims.items()}
        if not dims:
            continue
        found = resolve(model_name, names)
        if found is not None and not found.fine_tuned:
            target = found.model
            entries = [_apply(e, dims) if e.model == target else e for e in entries]
        else:
            target = model_name.strip().lower()
            fresh = Entry(
                model=target,
                effective_from=_EPOCH,
                source=OVERRIDE_SOURCE,
                checked=_EPOCH,
                standard=TierRates(),
            )
            entries.append(_apply(fresh, dims))
            names[target] = target
        touched.add(target)
    return entries, frozenset(touched)
