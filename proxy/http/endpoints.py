"""Path -> endpoint name (the ``endpoint`` ledger column and metric label). Pure."""

from __future__ import annotations

from typing import Final

# Longest prefix first is not needed: we match on the first one or two path segments after /v1/.
_TWO_SEGMENT: Final[dict[tuple[str, str], str]] = {
    ("chat", "completions"): "chat.completions",
    ("audio", "transcriptions"): "audio.transcriptions",
    ("audio", "translations"): "audio.translations",
    ("audio", "speech"): "audio.speech",
    ("images", "generations"): "images.generations",
    ("images", "edits"): "images.edits",
    ("images", "variations"): "images.variations",
    ("fine_tuning", "jobs"): "fine_tuning.jobs",
}

_ONE_SEGMENT: Final[dict[str, str]] = {
    "responses": "responses",
    "completions": "completions",
    "embeddings": "embeddings",
    "moderations": "moderations",
    "files": "files",
    "uploads": "uploads",
    "batches": "batches",
    "vector_stores": "vector_stores",
    "realtime": "realtime",
    "models": "models",
    "conversations": "conversations",
    "containers": "containers",
    "assistants": "assistants",
    "threads": "threads",
}

ENDPOINTS: Final[tuple[str, ...]] = (
    *sorted(set(_TWO_SEGMENT.values()) | set(_ONE_SEGMENT.values())),
    "other",
)


def classify(path: str) -> str:
    """``/v1/chat/completions`` -> ``chat.completions``; anything unknown -> ``other``."""
    parts = path.split("/")
    # ["", "v1", a, b, ...]
    if len(parts) < 3 or parts[1] != "v1":
        return "other"
    first = parts[2]
    if len(parts) >= 4:
        two = _TWO_SEGMENT.get((first, parts[3]))
        if two is not None:
            return two
    return _ONE_SEGMENT.get(first, "other")
