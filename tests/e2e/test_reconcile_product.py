"""End to end: traffic through the proxy, then ``openai-meter reconcile`` against a fake of OpenAI's
Admin API on the upstream's origin (the configured upstream, as in production).

What OpenAI "billed" is built from what the fake upstream actually served, priced with OpenAI's
published gpt-4o-mini prices written here (not read from our catalog), plus planted differences:
traffic that went around the proxy, a model the catalog lacks, a day still being restated, a 429
with Retry-After and pagination (the fake pages two buckets at a time).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.teams.attribution import key_fingerprint
from tests.support.fake_admin_api import Billed, FakeAdminApi
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings

ADMIN_KEY = "sk-admin-" + "Q7" * 24
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
# OpenAI's published gpt-4o-mini standard prices, USD per token (seed 004).
INPUT_RATE = Decimal("0.15") / 1_000_000
OUTPUT_RATE = Decimal("0.60") / 1_000_000


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class World:
    admin: FakeAdminApi
    upstream: FakeUpstream
    tmp_path: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.tmp_path}/l.db"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    admin = FakeAdminApi(admin_key=ADMIN_KEY)
    upstream = FakeUpstream()
    upstream.extra_routes.append(admin.add_routes)
    async with upstream:
        yield World(admin, upstream, tmp_path)


async def _traffic(world: World, calls: dict[str, int], model: str | None = None) -> None:
    """``calls`` per project through the proxy; then the product stops (ledger drained)."""
    if model is not None:
        world.upstream.model = model
    async with Product(world.upstream.url, world.tmp_path) as product:
        for project, count in calls.items():
            client = product.sdk("sk-proj-client", project=project)
            for _ in range(count):
                await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _bill_served(world: World, *, markup: Decimal = Decimal(1)) -> None:
    """OpenAI's side of every chat call the fake upstream served (what it billed)."""
    usage = world.upstream.usage
    for seen in world.upstream.requests:
        if seen.path != "/v1/chat/completions":
            continue
        cost = usage.input_tokens * INPUT_RATE + usage.output_tokens * OUTPUT_RATE
        world.admin.calls.append(
            Billed(
                at=datetime.now(UTC),
                project_id=seen.headers.get("OpenAI-Project", ""),
                model=world.upstream.model,
                cost=cost * markup,
                counts={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            )
        )


async def _reconcile(world: World, *args: str, restate_days: int = 0) -> tuple[int, str, str]:
    argv = [
        "reconcile",
        "--database-url",
        world.database_url,
        "--upstream",
        world.upstream.url,
        *args,
    ]
    return await asyncio.to_thread(_run_cli, argv, restate_days)


def _run_cli(argv: list[str], restate_days: int) -> tuple[int, str, str]:
    import contextlib
    import io
    import os

    out, err = io.StringIO(), io.StringIO()
    os.environ["OPENAI_METER_RECONCILE__RESTATE_DAYS"] = str(restate_days)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        del os.environ["OPENAI_METER_RECONCILE__RESTATE_DAYS"]
    return code, out.getvalue(), err.getvalue()


async def test_traffic_through_the_proxy_matches_the_bill_to_the_token(world: World) -> None:
    await _traffic(world, {"proj_main": 3, "proj_search": 2})
    _bill_served(world)

    code, out, err = await _reconcile(world, "--since", "1d", "--format", "json")

    assert code == 0, err + out
    report = json.loads(out)
    assert report["ok"] is True
    assert report["total"]["captured_ratio"] == "1.0000"
    assert report["total"]["billed_usd"] == report["total"]["ledger_usd"] == "0.000024"
    assert report["admin_key"] == key_fingerprint(ADMIN_KEY)
    rows = {row["project"]: row for row in report["usage"]}
    assert set(rows) == {"proj_main", "proj_search"}
    for project, calls in (("proj_main", 3), ("proj_search", 2)):
        assert rows[project]["model"] == "gpt-4o-mini-2024-07-18"
        assert rows[project]["ledger"] == rows[project]["openai"]
        assert rows[project]["openai"]["requests"] == calls
        assert rows[project]["openai"]["input_tokens"] == 12 * calls
        assert rows[project]["causes"] == []
    # paged (two buckets a page) with the documented parameters, the key only in the header
    usage_requests = [r for r in world.admin.requests if r.path.endswith("/usage/completions")]
    assert len(usage_requests) == 1  # 2 days (yesterday, today) fit one page of two
    query = usage_requests[0].query
    assert ("bucket_width", "1d") in query and ("limit", "31") in query
    assert ("group_by", "project_id") in query and ("group_by", "model") in query
    assert all(r.authorization == f"Bearer {ADMIN_KEY}" for r in world.admin.requests)
    assert ADMIN_KEY not in out + err


async def test_each_planted_difference_is_named_with_its_cause(world: World) -> None:
    await _traffic(world, {"proj_main": 3})
    _bill_served(world)
    await _traffic(world, {"proj_main": 1}, model="gpt-mystery-1")  # the catalog lacks it
    # OpenAI's side of that call, at OpenAI's own price for it
    world.admin.calls.append(
        Billed(
            at=datetime.now(UTC),
            project_id="proj_main",
            model="gpt-mystery-1",
            cost=Decimal("0.0125"),
            counts={"input_tokens": 12, "output_tokens": 5},
        )
    )
    # five days ago, a project the proxy never saw spent money (its traffic went around the proxy)
    around = datetime.now(UTC) - timedelta(days=5)
    world.admin.calls.append(
        Billed(
            at=around,
            project_id="proj_shadow",
            model="gpt-4o-mini-2024-07-18",
            api_key_id="key_shadow",
            requests=40,
            cost=Decimal("0.75"),
            counts={"input_tokens": 9000, "output_tokens": 2500},
        )
    )
    today = datetime.now(UTC).date()
    world.admin.pending[today] = Decimal("0.5")  # OpenAI has counted half of today so far
    world.admin.throttle(1, retry_after="0")

    code, out, err = await _reconcile(world, "--since", "7d", "--format", "json", restate_days=3)

    assert code == 3, err + out
    report = json.loads(out)
    assert report["ok"] is False
    causes = {
        (row["day"], row["project"], row["model"]): {c["code"] for c in row["causes"]}
        for row in report["usage"]
    }
    assert causes[(around.date().isoformat(), "proj_shadow", "gpt-4o-mini-2024-07-18")] == {
        "around_proxy"
    }
    assert "restating" in causes[(today.isoformat(), "proj_main", "gpt-4o-mini-2024-07-18")]
    cost = {(row["day"], row["project"]): row for row in report["cost"]}
    shadow = cost[(around.date().isoformat(), "proj_shadow")]
    assert shadow["within_tolerance"] is False and shadow["captured_ratio"] == "0.0000"
    assert shadow["billed_usd"] == "0.750000"
    texts = " ".join(c["text"] for c in shadow["causes"])
    assert "never went through the proxy" in texts and "key_shadow" in texts
    main_today = cost[(today.isoformat(), "proj_main")]
    assert {"unpriced", "restating"} <= {c["code"] for c in main_today["causes"]}
    assert "gpt-mystery-1" in " ".join(c["text"] for c in main_today["causes"])
    assert main_today["within_tolerance"] is True  # restating days never fail
    # the 429 was honoured (retried) and every endpoint paged through 8 days, two at a time
    completions = [r for r in world.admin.requests if r.path.endswith("/usage/completions")]
    assert len(completions) == 5  # the 429, its retry with the same query, 3 more pages
    assert completions[0].query == completions[1].query
    assert len([r for r in world.admin.requests if r.path.endswith("/costs")]) == 4
    assert len([r for r in world.admin.requests if r.path.endswith("/embeddings")]) == 4
    pages = [
        dict(r.query).get("page") for r in world.admin.requests if r.path.endswith("/embeddings")
    ]
    assert pages[0] is None and all(pages[1:])

    # Once today settles, the only thing left today is the unpriced model: still a mismatch
    del world.admin.pending[today]
    world.admin.calls = [c for c in world.admin.calls if c.project_id != "proj_shadow"]
    code, out, err = await _reconcile(world, "--since", "1d", "--format", "table")
    assert code == 3, err + out
    assert "[unpriced]" in out and "gpt-mystery-1" in out and "DOES NOT MATCH" in out


@pytest.mark.parametrize(("tolerance", "expected"), [("1", 0), ("0.1", 3)])
async def test_the_exit_status_follows_the_tolerance(
    world: World, tolerance: str, expected: int
) -> None:
    await _traffic(world, {"proj_main": 4})
    _bill_served(world, markup=Decimal("1.005"))  # OpenAI billed 0.5% more than the ledger

    code, out, err = await _reconcile(world, "--since", "1d", "--tolerance", tolerance)

    assert code == expected, err + out
    assert "99.50%" in out  # captured ratio: ledger / billed


async def test_a_failing_admin_call_never_shows_the_key(world: World) -> None:
    await _traffic(world, {"proj_main": 1})  # a ledger: without one, the Admin API is not asked
    world.admin.fail(401, f"Incorrect API key provided: {ADMIN_KEY}. You can find your key at ...")

    code, out, err = await _reconcile(world, "--since", "1d")

    assert code == 1
    assert ADMIN_KEY not in out + err
    assert ADMIN_KEY[9:30] not in out + err
    assert key_fingerprint(ADMIN_KEY) in err and "HTTP 401" in err


async def test_no_admin_key_is_a_usage_error(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_ADMIN_KEY")
    code, _out, err = await _reconcile(world, "--since", "1d")
    assert code == 2 and "OPENAI_ADMIN_KEY" in err and not world.admin.requests


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday-ish"], "cannot read"),
        (["--since", "2020-01-01", "--until", "2026-01-01"], "366 days"),
        (["--since", "2d", "--until", "3d"], "after until"),
        (["--tolerance", "nan"], "tolerance"),
        (["--tolerance", "-1"], "tolerance"),
        (["--tolerance", "101"], "tolerance"),
        (["--tolerance", "lots"], "tolerance"),
        (["--by", "team"], "cannot group by"),
    ],
)
async def test_bad_arguments_are_usage_errors(world: World, args: list[str], message: str) -> None:
    code, _out, err = await _reconcile(world, *args)
    assert code == 2 and message in err and not world.admin.requests
