"""Key fingerprints and key-like values: what the ledger stores instead of anything shaped like an
API key, and the tag-key grammar that filters and groupings share with ``X-Meter-Tags``.

Pure and light (no aiohttp): ``openai-meter report`` imports it through :mod:`proxy.admin.reporting`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

MAX_TAG_KEY_CHARS: Final = 64
TAG_KEY_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_FINGERPRINT_RE: Final = re.compile(r"sha256:[0-9a-f]{12}")
# What an OpenAI key (sk-..., sk-proj-..., sk-admin-...) or a virtual key (sk-meter-...) looks like,
# in any case, anywhere in a value: "sk-" at the start of a word and 8+ key characters.
_KEY_LIKE_RE: Final = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{8,}", re.IGNORECASE)


# Fingerprints of recent keys: a client sends the same few keys again and again, and a SHA-256
# through OpenSSL cost ~4.5 µs a call with the CPU's caches cold (one client, issue 16) vs ~1 µs for
# the look-up. Bounded (cleared when full), so many distinct keys cannot grow it.
_RECENT_FINGERPRINTS: dict[str, str] = {}
_RECENT_FINGERPRINTS_MAX: Final = 1024


def key_fingerprint(key: str) -> str:
    """``sha256:`` + the first 12 hex digits of SHA-256(key): safe to store, log and configure.

    Header values that were not UTF-8 arrive with lone surrogates (aiohttp's ``surrogateescape``):
    they hash as the bytes that were sent, never raise."""
    fingerprint = _RECENT_FINGERPRINTS.get(key)
    if fingerprint is None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        fingerprint = "sha256:" + digest[:12]
        if len(_RECENT_FINGERPRINTS) >= _RECENT_FINGERPRINTS_MAX:
            _RECENT_FINGERPRINTS.clear()
        _RECENT_FINGERPRINTS[key] = fingerprint
    return fingerprint


def looks_like_key(value: str) -> bool:
    """True when ``value`` carries something shaped like an OpenAI or virtual key (any case)."""
    return _KEY_LIKE_RE.search(value) is not None


def scrubbed(value: str) -> str:
    """``value``, or its fingerprint when it looks like a key (never store a key verbatim)."""
    return key_fingerprint(value) if looks_like_key(value) else value


def is_fingerprint(value: str) -> bool:
    return _FINGERPRINT_RE.fullmatch(value) is not None


def stored_tag_key(key: str) -> str | None:
    """A tag key as the ledger stores it, for filters and groupings (``tag=KEY=VALUE``,
    ``by=tag:KEY``): a key of the ``X-Meter-Tags`` grammar -- fingerprinted if it looks like an
    API key, as attribution stored it -- or such a ``sha256:`` fingerprint itself. None for
    anything else."""
    if is_fingerprint(key):
        return key
    if len(key) > MAX_TAG_KEY_CHARS or TAG_KEY_RE.fullmatch(key) is None:
        return None
    return scrubbed(key)
