"""Who spent: key fingerprint, project, organization, team (from config only), user, tags.

The pure parts (fingerprints -- :mod:`proxy.teams.fingerprints` --, the ``X-Meter-Tags`` grammar,
the team directory) do no I/O;
:class:`AttributionStage` is the :class:`proxy.http.exchange.RequestStage` that applies them to an
exchange. A client can never choose its team: the team comes from configuration (key fingerprints,
OpenAI project ids) or from the virtual key it presented, never from a header or a tag.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from proxy.http.errors import bad_request, error_response
from proxy.http.exchange import Attribution, Exchange
from proxy.settings import TeamSettings
from proxy.teams.fingerprints import MAX_TAG_KEY_CHARS, TAG_KEY_RE
from proxy.teams.fingerprints import is_fingerprint as is_fingerprint
from proxy.teams.fingerprints import key_fingerprint as key_fingerprint
from proxy.teams.fingerprints import looks_like_key as looks_like_key
from proxy.teams.fingerprints import scrubbed as scrubbed
from storage.record import UsageRecord

UNASSIGNED: Final = "unassigned"
TAGS_HEADER: Final = "X-Meter-Tags"
# Bounds on X-Meter-Tags: the values land in every ledger row, so keep them small.
MAX_TAGS: Final = 10
MAX_TAGS_HEADER_CHARS: Final = 1024
MAX_TAG_VALUE_CHARS: Final = 128
# Free-form client-chosen strings copied into the ledger are capped too.
MAX_FIELD_CHARS: Final = 256

VIRTUAL_KEY_PREFIX: Final = "sk-meter-"
API_KEY_HEADER: Final = "api-key"
# Headers that decide who pays: each must come at most once (attribution reads one value).
_ONCE_HEADERS: Final = (
    "Authorization",
    "api-key",
    "OpenAI-Project",
    "OpenAI-Organization",
    TAGS_HEADER,
)
_TAG_VALUE_BAD_RE: Final = re.compile(r"[\x00-\x1f\x7f,]")


def is_virtual_key_like(value: str | None) -> bool:
    """``sk-meter-...`` in any case (what only this proxy issues; never sent upstream)."""
    return value is not None and value.strip()[: len(VIRTUAL_KEY_PREFIX)].lower() == (
        VIRTUAL_KEY_PREFIX
    )


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    key = key.strip()
    return key or None


class TagsError(ValueError):
    """A malformed ``X-Meter-Tags`` header; the message is shown to the client."""


def parse_tags(header: str | None, *, stored_keys: bool = False) -> dict[str, str]:
    """Parse ``key=value,key=value``. Empty items are ignored; anything else malformed raises.

    Keys: 1-64 of ``A-Z a-z 0-9 _ . -``; values: 1-128 characters, no commas or control
    characters (``=`` inside a value is kept); at most 10 tags, 1024 characters in all.
    ``stored_keys`` (filters over the ledger, not the header): a key may also be the ``sha256:``
    fingerprint a key-like key is stored as (:func:`stored_tag_key`).
    """
    if header is None:
        return {}
    if len(header) > MAX_TAGS_HEADER_CHARS:
        raise TagsError(f"{TAGS_HEADER} is longer than {MAX_TAGS_HEADER_CHARS} characters")
    tags: dict[str, str] = {}
    for raw_item in header.split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise TagsError(f"{TAGS_HEADER} item {scrubbed(item)!r} is not of the form key=value")
        if not (stored_keys and is_fingerprint(key)) and (
            len(key) > MAX_TAG_KEY_CHARS or TAG_KEY_RE.fullmatch(key) is None
        ):
            raise TagsError(
                f"{TAGS_HEADER} key {scrubbed(key[:MAX_TAG_KEY_CHARS])!r} must be 1-{MAX_TAG_KEY_CHARS} "
                "characters of letters, digits, '_', '.' or '-'"
                + (
                    " (or the sha256: fingerprint a key-like key is stored as)"
                    if stored_keys
                    else ""
                )
            )
        if len(value) > MAX_TAG_VALUE_CHARS or _TAG_VALUE_BAD_RE.search(value):
            raise TagsError(
                f"{TAGS_HEADER} value for {scrubbed(key)!r} must be 1-{MAX_TAG_VALUE_CHARS} characters "
                "without commas or control characters"
            )
        if key in tags:
            raise TagsError(f"{TAGS_HEADER} repeats the key {scrubbed(key)!r}")
        tags[key] = value
        if len(tags) > MAX_TAGS:
            raise TagsError(f"{TAGS_HEADER} carries more than {MAX_TAGS} tags")
    return tags


class TeamConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TeamDirectory:
    """Configured teams: key fingerprint -> team, OpenAI project id -> team."""

    by_key: Mapping[str, str]
    by_project: Mapping[str, str]

    @classmethod
    def from_settings(cls, teams: Mapping[str, TeamSettings]) -> TeamDirectory:
        by_key: dict[str, str] = {}
        by_project: dict[str, str] = {}
        for team, settings in teams.items():
            for index, fingerprint in enumerate(settings.keys):
                if not is_fingerprint(fingerprint):
                    # Never echo the value: it may be a raw key pasted by mistake.
                    raise TeamConfigError(
                        f"teams.{team}.keys[{index}] is not a key fingerprint "
                        "('sha256:' + 12 hex digits; run `openai-meter keys fingerprint`)"
                    )
                other = by_key.setdefault(fingerprint, team)
                if other != team:
                    raise TeamConfigError(
                        f"key fingerprint {fingerprint} is listed by teams {other!r} and {team!r}"
                    )
            for project in settings.projects:
                other = by_project.setdefault(project, team)
                if other != team:
                    raise TeamConfigError(
                        f"project {project!r} is listed by teams {other!r} and {team!r}"
                    )
        return cls(by_key=by_key, by_project=by_project)

    def team_for(self, fingerprint: str | None, project: str | None) -> str:
        """The key's team wins over the project's; neither matched -> ``unassigned``."""
        if fingerprint is not None:
            team = self.by_key.get(fingerprint)
            if team is not None:
                return team
        if project is not None:
            team = self.by_project.get(project)
            if team is not None:
                return team
        return UNASSIGNED


def _capped(value: Any) -> str | None:
    """A client-chosen string for the ledger: capped, and fingerprinted if it looks like a key."""
    if not isinstance(value, str) or not value:
        return None
    return scrubbed(value)[:MAX_FIELD_CHARS]


def scrub_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags with key-like keys or values replaced by their fingerprints."""
    if not any(looks_like_key(k) or looks_like_key(v) for k, v in tags.items()):
        return tags
    return {scrubbed(k): scrubbed(v) for k, v in tags.items()}


def body_user(request_json: Mapping[str, Any] | None) -> str | None:
    """``user`` from the JSON body, else ``safety_identifier`` (its successor)."""
    if not request_json:
        return None
    return _capped(request_json.get("user")) or _capped(request_json.get("safety_identifier"))


def attribute(
    headers: Mapping[str, str],
    request_json: Mapping[str, Any] | None,
    teams: TeamDirectory,
) -> Attribution:
    """Pure attribution of one request (raises :class:`TagsError` on a malformed tags header)."""
    key = bearer_key(headers.get("Authorization"))
    fingerprint = key_fingerprint(key) if key is not None else None
    project = _capped(headers.get("OpenAI-Project"))
    return Attribution(
        team=teams.team_for(fingerprint, project),
        project=project,
        organization=_capped(headers.get("OpenAI-Organization")),
        key_fingerprint=fingerprint,
        user=body_user(request_json),
        tags=scrub_tags(parse_tags(headers.get(TAGS_HEADER))),
    )


class KeySwap(Protocol):
    """Virtual keys: maps a presented key to (team, upstream Authorization) or refuses it."""

    def handles(self, key: str) -> bool: ...

    async def resolve(self, key: str) -> tuple[str, str] | None:
        """``(team, upstream_authorization)`` for a live virtual key, ``None`` if unknown/revoked."""
        ...


def _not_a_live_virtual_key(key: str) -> web.Response:
    return error_response(
        401,
        f"Incorrect API key provided: {key_fingerprint(key.strip())} is not an active "
        "openai-meter virtual key (send it as Authorization: Bearer <key>).",
        "invalid_request_error",
        code="invalid_api_key",
    )


class AttributionStage:
    """RequestStage: fills ``exchange.attribution`` (and swaps virtual keys when enabled)."""

    __slots__ = ("_keys", "_teams")

    def __init__(self, teams: TeamDirectory, key_swap: KeySwap | None = None) -> None:
        self._teams = teams
        self._keys = key_swap

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        # Who pays is read from one value; upstream would get them all: refuse, never guess.
        getall = getattr(exchange.request_headers, "getall", None)  # a multidict from aiohttp
        if getall is not None:
            for name in _ONCE_HEADERS:
                if len(getall(name, ())) > 1:
                    return bad_request(
                        f"Send the {name} header once; this request has it more than once.",
                        code="duplicate_header",
                        param=name,
                    )
        try:
            attribution = attribute(exchange.request_headers, exchange.request_json, self._teams)
        except TagsError as exc:
            return error_response(400, str(exc), "invalid_request_error", param=TAGS_HEADER)
        exchange.attribution = attribution
        headers = exchange.request_headers
        if is_virtual_key_like(headers.get(API_KEY_HEADER)):
            # Only Authorization carries a virtual key; anywhere else it would reach OpenAI as is.
            return _not_a_live_virtual_key(headers.get(API_KEY_HEADER, ""))
        if self._keys is None:
            return None
        key = bearer_key(headers.get("Authorization"))
        if key is None or not (self._keys.handles(key) or is_virtual_key_like(key)):
            return None
        resolved = await self._keys.resolve(key)
        if resolved is None:
            return _not_a_live_virtual_key(key)
        attribution.team, exchange.upstream_authorization = resolved
        return None

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        return None
