"""`openai-meter encodings seed [--dir D]`: verify and pre-load the offline tiktoken encodings.

Without ``--dir``: checks the bundled ``bpe-openai`` files against tiktoken's SHA-256 and builds the
encodings (a start-up smoke test). With ``--dir D``: also writes them into ``D`` in tiktoken's cache
layout (file name = sha1 of the upstream URL), so plain ``tiktoken.get_encoding`` works offline
with ``TIKTOKEN_CACHE_DIR=D`` (used by the Dockerfile at build time). Never touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "encodings", help="verify / pre-seed the offline tiktoken encodings (no network)"
    )
    actions = parser.add_subparsers(dest="encodings_action", metavar="ACTION", required=True)
    seed = actions.add_parser(
        "seed", help="verify the bundled encodings (and write a tiktoken cache dir with --dir)"
    )
    seed.add_argument(
        "--dir",
        dest="cache_dir",
        default=None,
        help="write the files here in tiktoken's cache layout (for TIKTOKEN_CACHE_DIR)",
    )
    seed.set_defaults(func=_seed)


def cache_file_name(url: str) -> str:
    """tiktoken's cache key: ``sha1(url)`` (tiktoken/load.py ``read_file_cached``)."""
    return hashlib.sha1(url.encode()).hexdigest()


def seed(cache_dir: Path | None) -> list[str]:
    """Verify, load and optionally write every bundled encoding; returns lines describing it."""
    from proxy.usage.encodings import BUNDLED, Encodings, read_bundled

    lines: list[str] = []
    registry = Encodings()
    for name, (url, expected) in BUNDLED.items():
        bpe = read_bundled(name)  # raises unless sha256 == expected
        started = time.perf_counter()
        encoding = registry.get(name)
        took = time.perf_counter() - started
        lines.append(
            f"{name}: sha256 {bpe.sha256[:16]}… ok, n_vocab {encoding.n_vocab}, built in {took:.2f}s"
        )
        if cache_dir is None:
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / cache_file_name(url)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            lines.append(f"  {target} already present and verified")
            continue
        partial = target.with_name(target.name + f".{os.getpid()}.tmp")
        partial.write_bytes(bpe.data)
        os.replace(partial, target)
        lines.append(f"  wrote {target} ({len(bpe.data)} bytes)")
    return lines


def _seed(args: argparse.Namespace) -> int:
    from proxy.usage.encodings import EncodingUnavailable

    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    try:
        for line in seed(cache_dir):
            print(line)
    except (EncodingUnavailable, OSError) as exc:
        print(f"openai-meter encodings seed: {exc}")
        return 1
    if cache_dir is not None:
        print(f"set TIKTOKEN_CACHE_DIR={cache_dir} to let plain tiktoken use them offline")
    return 0
