from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.commands.encodings import cache_file_name


def test_cache_names_match_tiktoken() -> None:
    # sha1(url) values from the OpenAI API reference notes, §5.3 (tiktoken 0.14.0)
    base = "https://openaipublic.blob.core.windows.net/encodings/"
    assert (
        cache_file_name(base + "o200k_base.tiktoken") == "fb374d419588a4632f3f557e76b4b70aebbca790"
    )
    assert (
        cache_file_name(base + "cl100k_base.tiktoken") == "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    )


def test_seed_writes_a_cache_dir_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network blocked")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert main(["encodings", "seed", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "o200k_base: sha256 446a9538cb6c348e" in out and "n_vocab 200019" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "fb374d419588a4632f3f557e76b4b70aebbca790",
    ]
    assert main(["encodings", "seed", "--dir", str(tmp_path)]) == 0
    assert "already present and verified" in capsys.readouterr().out
    # A fresh interpreter with sockets disabled: tiktoken must read only the seeded cache.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network blocked')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "import tiktoken\n"
        "print(tiktoken.get_encoding('cl100k_base').n_vocab)\n"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "100277"
