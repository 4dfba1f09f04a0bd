"""Model name -> catalog model (pure).

Order: exact name (model, alias or listed snapshot) → ``ft:<base>:…`` (the base, resolved the same
way, at its fine-tuned rates) → dated snapshot (``-2024-07-18`` or compact ``-20251211``) → the
longest known prefix, cut at a ``-``, whose remainder only names a version (``0613``,
``preview``, ``latest``, ``v2``). A remainder naming a variant (``-mini``, ``-audio``, ``-search``,
``-realtime``, …) is another model with another price, so it never matches: unknown → no price.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_SNAPSHOT: Final = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_VERSION_WORDS: Final = frozenset({"preview", "latest"})
_VERSION_TOKEN: Final = re.compile(r"^(?:\d+|v\d+)$")


@dataclass(frozen=True, slots=True)
class Resolved:
    model: str
    fine_tuned: bool
    how: str  # exact | snapshot | prefix (of the base, for fine-tuned names)


def _is_version(tokens: list[str]) -> bool:
    return all(t in _VERSION_WORDS or _VERSION_TOKEN.match(t) for t in tokens)


def _resolve_plain(name: str, names: Mapping[str, str]) -> tuple[str, str] | None:
    model = names.get(name)
    if model is not None:
        return model, "exact"
    match = _SNAPSHOT.match(name)
    if match:
        model = names.get(match.group("base"))
        if model is not None:
            return model, "snapshot"
    parts = name.split("-")
    for cut in range(len(parts) - 1, 0, -1):
        model = names.get("-".join(parts[:cut]))
        if model is not None:
            rest = parts[cut:]
            # a date split by "-" is three numeric tokens: still a version
            return (model, "prefix") if _is_version(rest) else None
    return None


def resolve(name: str | None, names: Mapping[str, str]) -> Resolved | None:
    """``names`` maps every known name (model, alias, snapshot) to its catalog model."""
    if not name:
        return None
    name = name.strip().lower()
    exact = names.get(name)
    if exact is not None:  # includes configured names such as a whole ft:… id
        return Resolved(exact, False, "exact")
    if name.startswith("ft:"):
        base = name[3:].split(":", 1)[0]
        found = _resolve_plain(base, names)
        return Resolved(found[0], True, found[1]) if found else None
    if ".ft-" in name:  # legacy fine-tune ids: gpt-4o-mini-2024-07-18.ft-abc123
        found = _resolve_plain(name.split(".ft-", 1)[0], names)
        return Resolved(found[0], True, found[1]) if found else None
    found = _resolve_plain(name, names)
    return Resolved(found[0], False, found[1]) if found else None
