"""tiktoken encodings loaded with no network at all.

The BPE rank files come from the ``bpe-openai`` wheel (``bpe_openai/data/<name>.tiktoken.gz``, read
as plain files);
the encoding's ``pat_str`` and special tokens come from tiktoken's own constructor in
``tiktoken_ext.openai_public`` - we run that constructor with its ``load_tiktoken_bpe`` swapped for a
reader of the bundled file (a fresh function object over the same code, so nothing global is
patched). The constructor passes tiktoken's ``expected_hash``; the bytes must match it AND the
hash transcribed below (OpenAI API reference notes §5.3, tiktoken 0.14.0 ``openai_public.py``).

Model -> encoding follows ``tiktoken.model.encoding_name_for_model``; unknown names, and encodings
that are not bundled (p50k/r50k/gpt2, retired models only), use ``o200k_base`` like the cookbook.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import importlib
import importlib.util
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import tiktoken

# tiktoken itself is imported on first use (an estimate, ``encodings`` commands): an idle proxy that
# never estimates does not hold it (~2 MiB, issue 16's memory budget).

DEFAULT_ENCODING: Final = "o200k_base"

# name -> (upstream URL, expected sha256 of the decompressed file), from tiktoken 0.14.0.
BUNDLED: Final[dict[str, tuple[str, str]]] = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
# Same ranks and pattern as o200k_base; only extra special tokens, which encode_ordinary ignores.
_ALIASES: Final[dict[str, str]] = {"o200k_harmony": "o200k_base"}


def _openai_public() -> Any:
    """tiktoken's own constructors (pat_str, special tokens); untyped, so imported dynamically."""
    return importlib.import_module("tiktoken_ext.openai_public")


class EncodingUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class BpeFile:
    name: str
    url: str
    sha256: str
    data: bytes  # the decompressed ``.tiktoken`` file


def read_bundled(name: str) -> BpeFile:
    """The verified ``.tiktoken`` bytes of a bundled encoding (no network, no cache dir)."""
    if name not in BUNDLED:
        raise EncodingUnavailable(f"encoding {name!r} is not bundled (have: {sorted(BUNDLED)})")
    url, expected = BUNDLED[name]
    try:
        data = gzip.decompress((_bpe_openai_dir() / "data" / f"{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, OSError) as exc:
        raise EncodingUnavailable(f"bpe-openai does not carry {name}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise EncodingUnavailable(f"{name}: sha256 {actual} != expected {expected}")
    return BpeFile(name, url, actual, data)


def _bpe_openai_dir() -> Path:
    """Where the ``bpe_openai`` package lives, found WITHOUT importing it: its ``__init__`` eagerly
    builds its own tokenizers (seconds of CPU and hundreds of MB we do not need)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the bpe-openai package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """tiktoken's ``.tiktoken`` format: ``base64(token) rank`` per line."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bundled_loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    bpe = read_bundled(name)
    if expected_hash is not None and bpe.sha256 != expected_hash:
        raise EncodingUnavailable(f"{name}: tiktoken expects {expected_hash}, bundled {bpe.sha256}")
    return parse_ranks(bpe.data)


def load_offline(name: str) -> tiktoken.Encoding:
    """Build ``name`` from bundled bytes using tiktoken's own constructor definitions."""
    name = _ALIASES.get(name, name)
    import tiktoken

    openai_public = _openai_public()
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None or name not in BUNDLED:
        raise EncodingUnavailable(f"encoding {name!r} is not available offline")
    scope = dict(vars(openai_public))
    scope["load_tiktoken_bpe"] = _bundled_loader
    offline: Callable[[], dict[str, Any]] = types.FunctionType(constructor.__code__, scope, name)
    return _lean(tiktoken.Encoding(**offline()))


def _lean(encoding: tiktoken.Encoding) -> tiktoken.Encoding:
    """Drop the Python copy of the ranks once the Rust ``CoreBPE`` holds its own.

    ``tiktoken.Encoding`` keeps the ``bytes -> rank`` dict it was built from (~20 MiB of Python
    objects for o200k_base, ~17 MiB for cl100k_base) only for pickling; encoding, decoding,
    ``n_vocab`` and ``max_token_value`` never read it. Deleting the attribute (rather than emptying
    it) makes an attempt to pickle fail loudly instead of producing an encoding without ranks.
    """
    with contextlib.suppress(AttributeError):
        del encoding._mergeable_ranks
    return encoding


def encoding_name_for_model(model: str | None) -> str:
    """tiktoken's map, ``o200k_base`` for unknown names and for encodings we do not bundle."""
    if not model:
        return DEFAULT_ENCODING
    base = model
    if base.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org::id -> its base model
        base = base[3:].split(":", 1)[0]
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(base)
    except KeyError:
        return DEFAULT_ENCODING
    name = _ALIASES.get(name, name)
    return name if name in BUNDLED else DEFAULT_ENCODING


class Encodings:
    """Lazily built encodings, once per registry (create one per process and pass it in)."""

    def __init__(self, loader: Callable[[str], tiktoken.Encoding] = load_offline) -> None:
        self._loader = loader
        self._loaded: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tiktoken.Encoding:
        found = self._loaded.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(name)
            if found is None:
                found = self._loader(name)
                self._loaded[name] = found
            return found

    def for_model(self, model: str | None) -> tiktoken.Encoding:
        return self.get(encoding_name_for_model(model))

    def preload(self) -> None:
        """Load every bundled encoding now (call from a thread: ~0.5 s and ~35-70 MiB each).

        Only with ``metering.preload_encodings``: by default an encoding is built the first time
        an estimate needs it, in the worker thread that estimates (the meter never builds one on
        the event loop), so an idle proxy does not hold ~105 MiB it may never use."""
        for name in BUNDLED:
            self.get(name)

    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)
