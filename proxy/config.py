"""Loading settings: YAML file < ``OPENAI_METER_*`` environment < CLI flags, validated by
:class:`proxy.settings.Settings`.

Environment names:

* the named ones in :data:`NAMED_ENV` (``OPENAI_METER_UPSTREAM_URL``, ``OPENAI_METER_PORT``, ...);
* ``OPENAI_METER_CONFIG`` -- the YAML file's path (a ``--config`` flag wins);
* the generic ``OPENAI_METER_<SECTION>__<KEY>[__<KEY>...]`` for every other key, e.g.
  ``OPENAI_METER_LEDGER__BATCH_SIZE=200`` or ``OPENAI_METER_TEAMS__SEARCH__KEYS='["sha256:..."]'``
  (values starting with ``[`` or ``{`` are parsed as YAML/JSON).

Other ``OPENAI_METER_*`` variables without ``__`` (test switches and the like) are not settings and
are ignored. Any problem -- unknown key, invalid value, unreadable file -- raises
:class:`ConfigError` whose one-line message names the key and where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError
from yarl import URL

from proxy.settings import Settings

ENV_PREFIX: Final[str] = "OPENAI_METER_"
CONFIG_ENV: Final[str] = "OPENAI_METER_CONFIG"

NAMED_ENV: Final[dict[str, tuple[str, ...]]] = {
    "OPENAI_METER_UPSTREAM_URL": ("upstream", "url"),
    "OPENAI_METER_UPSTREAM_API_KEY": ("upstream", "api_key"),
    "OPENAI_METER_DATABASE_URL": ("database", "url"),
    "OPENAI_METER_HOST": ("listen", "host"),
    "OPENAI_METER_PORT": ("listen", "port"),
    "OPENAI_METER_ADMIN_TOKEN": ("admin", "token"),
}

Path_ = tuple[str, ...]


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is one line naming the key and its source."""


def _dotted(path: Path_) -> str:
    return ".".join(path)


def _set(tree: dict[str, Any], path: Path_, value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _leaf_paths(tree: Mapping[str, Any], prefix: Path_ = ()) -> list[Path_]:
    paths: list[Path_] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            paths.extend(_leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    return data


def _env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped.startswith(("[", "{")):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return raw
    return raw


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Path_, str]]:
    """Settings from the environment and, per key path, the variable it came from."""
    tree: dict[str, Any] = {}
    sources: dict[Path_, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name in NAMED_ENV:
            path = NAMED_ENV[name]
        elif "__" in name:
            rest = name[len(ENV_PREFIX) :]
            parts = tuple(p.lower() for p in rest.split("__"))
            if any(not p for p in parts):
                raise ConfigError(f"environment variable {name}: empty key segment")
            path = parts
        else:
            continue
        value: Any = _env_value(environ[name])
        _set(tree, path, value)
        sources[path] = f"environment {name}"
    return tree, sources


def _source_for(loc: Path_, sources: Mapping[Path_, str]) -> str | None:
    for length in range(len(loc), 0, -1):
        found = sources.get(loc[:length])
        if found is not None:
            return found
    return None


# Values under these keys may be secrets: an error names the key, never echoes the value.
_SECRET_KEYS: Final[tuple[Path_, ...]] = (
    ("admin", "token"),
    ("upstream", "api_key"),
    ("database", "url"),
    ("otel", "headers"),
    ("metrics", "token"),
)


def _describe(exc: ValidationError, sources: Mapping[Path_, str]) -> str:
    error = exc.errors()[0]
    loc = tuple(str(p) for p in error["loc"])
    key = _dotted(loc) or "(top level)"
    source = _source_for(loc, sources)
    where = f" (from {source})" if source else ""
    if error["type"] == "extra_forbidden":
        return f"unknown config key {key}{where}"
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem(s)" if more > 0 else ""
    value = error.get("input")
    secret = any(loc[: len(prefix)] == prefix for prefix in _SECRET_KEYS)
    shown = (
        f" (got {value!r})" if isinstance(value, str | int | float | bool) and not secret else ""
    )
    return f"invalid value for {key}{where}: {error['msg']}{shown}{tail}"


def _check_upstream_url(settings: Settings, sources: Mapping[Path_, str]) -> None:
    url = settings.upstream.url
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or parsed.query_string
        or parsed.fragment
    ):
        source = _source_for(("upstream", "url"), sources)
        where = f" (from {source})" if source else ""
        raise ConfigError(
            f"invalid value for upstream.url{where}: must be http(s)://host[:port][/path] (got {url!r})"
        )


def load_settings(
    *,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, tuple[Path_, Any]] | None = None,
) -> Settings:
    """Build :class:`Settings` with precedence CLI > environment > file > default.

    ``config_path`` (the ``--config`` flag) wins over ``OPENAI_METER_CONFIG``; ``cli`` maps a flag
    (``"--port"``) to ``(key path, value)``, a None value meaning "flag not given".
    """
    environ = environ if environ is not None else {}
    sources: dict[Path_, str] = {}
    tree: dict[str, Any] = {}

    path = config_path or environ.get(CONFIG_ENV) or None
    if path:
        file_tree = read_yaml(path)
        for leaf in _leaf_paths(file_tree):
            sources[leaf] = f"config file {path}"
        tree = _merge(tree, file_tree)

    env_tree, env_sources = env_overrides(environ)
    tree = _merge(tree, env_tree)
    sources.update(env_sources)

    for flag, (key_path, value) in (cli or {}).items():
        if value is None:
            continue
        _set(tree, key_path, value)
        sources[key_path] = f"command line {flag}"

    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None
    _check_upstream_url(settings, sources)
    return settings
