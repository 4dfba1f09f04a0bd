"""Virtual keys (``virtual_keys.enabled``): the proxy issues ``sk-meter-…`` keys per team and swaps
them for the real upstream key on the way out, so clients never hold the real key.

* :func:`new_key` / :func:`key_hash` -- pure; keys carry 256 random bits, so a plain SHA-256 is a
  safe at-rest hash (no slow KDF needed, and look-ups stay O(1)).
* :class:`VirtualKeyCache` -- the :class:`proxy.teams.attribution.KeySwap` the attribution stage uses.
  Live keys are loaded at start and re-loaded every ``refresh_interval_s`` (default 5 s): a
  revocation takes effect within that interval (plus one query). An unknown key triggers at most
  one re-load per ``miss_reload_s`` (default 1 s), so a key created a moment ago works at once
  while a flood of bad keys costs at most one query per second.

Keys that do not start with ``sk-meter-`` pass through untouched (and are attributed by their
fingerprint as usual).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

log = logging.getLogger("openai_meter.virtual_keys")

PREFIX: Final = "sk-meter-"
# (key_hash -> (key id, team)) for every live key
Loader = Callable[[], Awaitable[Mapping[str, tuple[str, str]]]]


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "vk_" + secrets.token_hex(8)


def key_hash(key: str) -> str:
    # surrogateescape: a header that was not UTF-8 hashes as the bytes sent, never raises.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class VirtualKeyError(ValueError):
    pass


class VirtualKeyCache:
    """In-memory live keys; ``resolve`` is a dict look-up on the request path."""

    def __init__(
        self,
        loader: Loader,
        upstream_api_key: str | None,
        *,
        refresh_interval_s: float = 5.0,
        miss_reload_s: float = 1.0,
    ) -> None:
        if not upstream_api_key:
            raise VirtualKeyError(
                "virtual_keys.enabled needs the real key in upstream.api_key "
                "(or env OPENAI_METER_UPSTREAM_API_KEY)"
            )
        self._loader = loader
        self._upstream_authorization = f"Bearer {upstream_api_key}"
        self.refresh_interval_s = refresh_interval_s
        self._miss_reload_s = miss_reload_s
        self._live: Mapping[str, tuple[str, str]] = {}
        self._loaded_monotonic = float("-inf")
        # Misses are rate-limited on their own clock: a periodic refresh a moment ago must not
        # make a key created since then wait for the next one.
        self._miss_reload_monotonic = float("-inf")
        self._lock = asyncio.Lock()
        self._failing = False

    def __repr__(self) -> str:  # never show the upstream key
        return f"VirtualKeyCache(live={len(self._live)})"

    def handles(self, key: str) -> bool:
        """Any case: ``SK-METER-...`` is looked up (and refused), never forwarded upstream."""
        return key[: len(PREFIX)].lower() == PREFIX

    async def resolve(self, key: str) -> tuple[str, str] | None:
        digest = key_hash(key)
        found = self._live.get(digest)
        now = time.monotonic()
        if found is None and now - self._miss_reload_monotonic >= self._miss_reload_s:
            self._miss_reload_monotonic = now
            await self._reload_once()
            found = self._live.get(digest)
        if found is None:
            return None
        return found[1], self._upstream_authorization

    async def load(self) -> None:
        """Replace the live set (raises on database errors; the old set keeps serving)."""
        live = await self._loader()
        self._live = dict(live)
        self._loaded_monotonic = time.monotonic()

    async def _reload_once(self) -> None:
        started = time.monotonic()
        async with self._lock:
            if self._loaded_monotonic >= started:  # someone else just re-loaded
                return
            try:
                await self.load()
            except Exception as exc:
                self._loaded_monotonic = time.monotonic()  # do not hammer a failing database
                log.warning("virtual key reload failed: %r", exc)

    async def run(self) -> None:
        """Re-load forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                async with self._lock:
                    await self.load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.warning("virtual key refresh failed, keeping the last set: %r", exc)
                self._failing = True
            else:
                self._failing = False
