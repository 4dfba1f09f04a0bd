"""Attribution: who spent, from each source; a client cannot pick its team."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.http.exchange import Exchange
from proxy.settings import TeamSettings
from proxy.teams.attribution import (
    MAX_TAGS,
    AttributionStage,
    TagsError,
    TeamConfigError,
    TeamDirectory,
    bearer_key,
    key_fingerprint,
    parse_tags,
)

SEARCH_KEY = "sk-proj-search-0000000000000000"
ADS_KEY = "sk-proj-ads-1111111111111111"


def make_exchange(headers: dict[str, str], body: dict[str, Any] | None = None) -> Exchange:
    return Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers=CIMultiDict(headers),
        request_json=body,
    )


@pytest.fixture
def stage() -> AttributionStage:
    teams = TeamDirectory.from_settings(
        {
            "search": TeamSettings(keys=[key_fingerprint(SEARCH_KEY)], projects=["proj_search"]),
            "ads": TeamSettings(keys=[key_fingerprint(ADS_KEY)], projects=["proj_ads"]),
        }
    )
    return AttributionStage(teams)


async def attributed(
    stage: AttributionStage, headers: dict[str, str], body: Any = None
) -> Exchange:
    exchange = make_exchange(headers, body)
    assert await stage.on_request(exchange) is None
    return exchange


def test_fingerprint_is_sha256_prefix_and_never_the_key() -> None:
    expected = "sha256:" + hashlib.sha256(SEARCH_KEY.encode()).hexdigest()[:12]
    assert key_fingerprint(SEARCH_KEY) == expected
    assert SEARCH_KEY not in key_fingerprint(SEARCH_KEY)


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer sk-abc", "sk-abc"),
        ("bearer   sk-abc  ", "sk-abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_key(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


async def test_team_from_key_fingerprint(stage: AttributionStage) -> None:
    exchange = await attributed(stage, {"Authorization": f"Bearer {SEARCH_KEY}"})
    assert exchange.attribution.team == "search"
    assert exchange.attribution.key_fingerprint == key_fingerprint(SEARCH_KEY)


async def test_team_from_project_header(stage: AttributionStage) -> None:
    exchange = await attributed(
        stage,
        {
            "Authorization": "Bearer sk-someone-else",
            "OpenAI-Project": "proj_ads",
            "OpenAI-Organization": "org_123",
        },
    )
    a = exchange.attribution
    assert (a.team, a.project, a.organization) == ("ads", "proj_ads", "org_123")


async def test_key_wins_over_project(stage: AttributionStage) -> None:
    exchange = await attributed(
        stage, {"Authorization": f"Bearer {SEARCH_KEY}", "OpenAI-Project": "proj_ads"}
    )
    assert exchange.attribution.team == "search"
    assert exchange.attribution.project == "proj_ads"


async def test_unknown_key_is_unassigned(stage: AttributionStage) -> None:
    exchange = await attributed(stage, {"Authorization": "Bearer sk-unknown"})
    assert exchange.attribution.team == "unassigned"
    assert exchange.attribution.key_fingerprint == key_fingerprint("sk-unknown")


async def test_no_key_at_all(stage: AttributionStage) -> None:
    exchange = await attributed(stage, {})
    assert exchange.attribution.team == "unassigned"
    assert exchange.attribution.key_fingerprint is None


@pytest.mark.parametrize(
    "spoof",
    [
        {"X-Meter-Team": "search"},
        {"OpenAI-Team": "search"},
        {"X-Team": "search"},
        {"X-Meter-Tags": "team=search"},
        {"OpenAI-Organization": "search"},
        {"OpenAI-Project": "search"},
    ],
)
async def test_a_client_cannot_claim_a_team_by_header(
    stage: AttributionStage, spoof: dict[str, str]
) -> None:
    plain = await attributed(stage, {"Authorization": f"Bearer {ADS_KEY}"})
    spoofed = await attributed(stage, {"Authorization": f"Bearer {ADS_KEY}", **spoof})
    assert plain.attribution.team == spoofed.attribution.team == "ads"
    anonymous = await attributed(stage, {"Authorization": "Bearer sk-x", **spoof})
    assert anonymous.attribution.team == "unassigned"


async def test_team_tag_is_only_a_tag(stage: AttributionStage) -> None:
    exchange = await attributed(stage, {"X-Meter-Tags": "team=search,env=prod"})
    assert exchange.attribution.team == "unassigned"
    assert exchange.attribution.tags == {"team": "search", "env": "prod"}


@pytest.mark.parametrize(
    ("body", "user"),
    [
        ({"user": "alice"}, "alice"),
        ({"safety_identifier": "hash-of-bob"}, "hash-of-bob"),
        ({"user": "alice", "safety_identifier": "bob"}, "alice"),
        ({"user": 42}, None),
        ({"user": ""}, None),
        ({}, None),
        (None, None),
    ],
)
async def test_user_from_body(stage: AttributionStage, body: Any, user: str | None) -> None:
    exchange = await attributed(stage, {}, body)
    assert exchange.attribution.user == user


async def test_long_user_is_capped(stage: AttributionStage) -> None:
    exchange = await attributed(stage, {}, {"user": "u" * 10_000})
    assert exchange.attribution.user == "u" * 256


def test_parse_tags() -> None:
    assert parse_tags("a=1, b = two ,c.d-e_f=x=y,") == {"a": "1", "b": "two", "c.d-e_f": "x=y"}
    assert parse_tags("") == {}
    assert parse_tags(None) == {}


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("novalue", "key=value"),
        ("k=", "key=value"),
        ("=v", "key=value"),
        ("bad key=v", "letters, digits"),
        ("k=v,k=w", "repeats"),
        ("k=" + "v" * 129, "1-128"),
        ("k" * 65 + "=v", "1-64"),
        (",".join(f"k{i}=v" for i in range(MAX_TAGS + 1)), "more than"),
        ("k=" + "v" * 1100, "longer than"),
        ("k=a\tb", "control"),
    ],
)
def test_malformed_tags_are_refused_with_a_reason(header: str, fragment: str) -> None:
    with pytest.raises(TagsError, match=fragment):
        parse_tags(header)


async def test_malformed_tags_header_gets_openai_shaped_400(stage: AttributionStage) -> None:
    exchange = make_exchange({"X-Meter-Tags": "oops"})
    response = await stage.on_request(exchange)
    assert isinstance(response, web.Response)
    assert response.status == 400
    assert response.body is not None
    error = orjson.loads(bytes(response.body))["error"]  # type: ignore[arg-type]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "X-Meter-Tags"
    assert "X-Meter-Tags" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


_key = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
_value = st.from_regex(r"[A-Za-z0-9 _.:/@+=\-]{1,128}", fullmatch=True).map(str.strip).filter(bool)


@given(st.dictionaries(_key, _value, max_size=MAX_TAGS))
def test_tags_round_trip(tags: dict[str, str]) -> None:
    header = ",".join(f"{k}={v}" for k, v in tags.items())
    if len(header) <= 1024:
        assert parse_tags(header) == tags


@given(st.text(max_size=300))
def test_any_header_either_parses_or_is_refused_cleanly(header: str) -> None:
    try:
        tags = parse_tags(header)
    except TagsError:
        return
    assert len(tags) <= MAX_TAGS
    assert all(len(k) <= 64 and len(v) <= 128 for k, v in tags.items())


def test_config_refuses_raw_keys_without_echoing_them() -> None:
    with pytest.raises(TeamConfigError) as info:
        TeamDirectory.from_settings({"search": TeamSettings(keys=[SEARCH_KEY])})
    assert SEARCH_KEY not in str(info.value)
    assert "teams.search.keys[0]" in str(info.value)


def test_config_refuses_a_key_in_two_teams() -> None:
    fp = key_fingerprint(SEARCH_KEY)
    with pytest.raises(TeamConfigError, match="listed by teams"):
        TeamDirectory.from_settings({"a": TeamSettings(keys=[fp]), "b": TeamSettings(keys=[fp])})


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=50))
def test_remembered_fingerprints_equal_fresh_ones_even_past_the_bound(keys: list[str]) -> None:
    """The recent-keys memo never changes a fingerprint: many distinct keys (more than it holds),
    repeats, non-UTF-8 values (lone surrogates) all hash as SHA-256 of the bytes sent."""
    from proxy.teams import fingerprints

    keys = keys + [f"sk-proj-{n}" for n in range(fingerprints._RECENT_FINGERPRINTS_MAX + 5)]
    keys.append("sk-\udcff\udcfe")
    for key in keys + keys[:10]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        assert key_fingerprint(key) == "sha256:" + digest[:12]
    assert len(fingerprints._RECENT_FINGERPRINTS) <= fingerprints._RECENT_FINGERPRINTS_MAX
