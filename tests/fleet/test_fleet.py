"""Three ``openai-meter serve`` replicas on one PostgreSQL behind a real HAProxy (round-robin, health
checks on ``/readyz``), the official SDK as the client: the fleet works as one meter.

The scenario runs in order on one fleet (starting it costs seconds); each step tags its calls with
``X-Meter-Tags: phase=…`` and checks only its own rows:

1. mixed traffic through the load balancer -> every call exactly one ledger row, every replica used;
2. a background Response and a batch created on one replica, retrieved on the others (one after
   another, then all at once) -> metered exactly once;
3. ``/meter/spend`` from every replica -> byte-identical reports;
4. a real Prometheus scraping all three -> sums across replicas equal the ledger;
5. a virtual key revoked once -> refused by every replica within the stated refresh interval;
6. one replica SIGTERMed and another ``kill -9``ed mid-load, both restarted -> every call that got a
   response has its row, none twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from proxy.teams.attribution import key_fingerprint
from tests.fleet.harness import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    FakeUpstreamProcess,
    Replica,
    ledger,
    phase_rows,
    run_cli,
    wait_phase_rows,
    write_config,
)
from tests.support.haproxy import HAProxy
from tests.support.postgres import PostgresDatabases
from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

REVOCATION_BOUND_S = 5.0 + 1.0  # virtual key refresh interval (5 s) + one query, as documented
CAPPED_KEY = "sk-fleet-capped-team-key"
CAPPED_LIMIT = Decimal("0.0005")  # ~100 of the fake's calls (12 in / 5 out on gpt-4o-mini)
# The most one budget call can reserve (docs/budgets.md): its body's bytes at the input price plus
# max_completion_tokens at the output price; the SDK's body for the call below is < 400 bytes.
MAX_TOKENS = 20
RESERVATION_BOUND = (400 * Decimal("0.15") + MAX_TOKENS * Decimal("0.60")) / 1_000_000


@dataclass
class Fleet:
    database_url: str
    upstream: FakeUpstreamProcess
    replicas: list[Replica]
    lb: HAProxy
    workdir: Path
    prometheus: PrometheusServer | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def client(self, phase: str, base: str | None = None, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=(base or self.lb.url) + "/v1",
            api_key=kwargs.pop("api_key", CLIENT_KEY),
            default_headers={"X-Meter-Tags": f"phase={phase}"},
            max_retries=kwargs.pop("max_retries", 0),
            timeout=30,
            **kwargs,
        )


@pytest.fixture(scope="module")
def fleet(
    pg_databases: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    database_url = pg_databases.create()
    # The migration Job's step: replicas start with --no-db-upgrade.
    migrated = run_cli("db", "upgrade", "--database-url", database_url)
    assert migrated.returncode == 0, migrated.stderr
    upstream = FakeUpstreamProcess(workdir)
    config = write_config(
        workdir / "config.yaml",
        {
            "teams": {
                "capped": {
                    "keys": [key_fingerprint(CAPPED_KEY)],
                    "budget": {"daily_usd": str(CAPPED_LIMIT), "action": "block"},
                }
            }
        },
    )
    replicas = [
        Replica(f"r{i}", workdir / f"r{i}", config, database_url, upstream.url) for i in range(3)
    ]
    lb = HAProxy(workdir)
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        lb.start([r.port for r in replicas])
        yield Fleet(database_url, upstream, replicas, lb, workdir)
    finally:
        lb.stop()
        for replica in replicas:
            replica.stop()
        upstream.stop()


def _call_mix(client: openai.OpenAI, n: int) -> list[str]:
    """One round of mixed calls; returns the upstream request ids the client received."""
    seen: list[str] = []
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {n}"}]
    )
    raw.parse()
    seen.append(raw.headers["x-request-id"])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
    )
    seen.append(stream.response.headers["x-request-id"])
    for _ in stream:
        pass
    emb = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")
    emb.parse()
    seen.append(emb.headers["x-request-id"])
    resp = client.responses.with_raw_response.create(model="gpt-4o-mini", input="hello")
    resp.parse()
    seen.append(resp.headers["x-request-id"])
    rstream = client.responses.create(model="gpt-4o-mini", input="stream", stream=True)
    seen.append(rstream.response.headers["x-request-id"])
    for _ in rstream:
        pass
    return seen


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_mixed_traffic_through_the_balancer_is_one_row_per_call(fleet: Fleet) -> None:
    threads, rounds = 4, 12
    seen: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = fleet.client("mixed")
        try:
            for n in range(rounds):
                ids = _call_mix(client, index * 1000 + n)
                with lock:
                    seen.extend(ids)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    expected = threads * rounds * 5
    assert len(seen) == expected and len(set(seen)) == expected
    rows = wait_phase_rows(fleet.database_url, "mixed", expected)
    assert len(rows) == expected
    assert Counter(r["request_id"] for r in rows) == Counter(seen)
    assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in rows)
    # Round-robin really spread the calls: every replica metered some of them.
    per_replica = [
        _metric_sum(r.get("/metrics", admin=False).decode(), "openai_meter_requests_total")
        for r in fleet.replicas
    ]
    assert all(n > 0 for n in per_replica), per_replica
    assert sum(per_replica) == expected
    fleet.notes["mixed_per_replica"] = per_replica


def _retrieve(client: openai.OpenAI, kind: str, object_id: str) -> None:
    if kind == "response":
        client.responses.retrieve(object_id)
    else:
        client.batches.retrieve(object_id)


def test_retrievals_on_other_replicas_are_metered_once(fleet: Fleet) -> None:
    r0, r1, r2 = fleet.replicas
    clients = [fleet.client("dedupe", base=r.url) for r in (r0, r1, r2)]
    created: dict[str, str] = {}
    for label in ("seq", "par"):
        created[f"response-{label}"] = (
            clients[0].responses.create(model="gpt-4o-mini", input="later", background=True).id
        )
        created[f"batch-{label}"] = (
            clients[0]
            .batches.create(
                input_file_id="file-fleet",
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            .id
        )
    # One after another on the other replicas, twice each...
    for key in ("response-seq", "batch-seq"):
        kind = key.split("-")[0]
        for client in (clients[1], clients[2], clients[1], clients[0]):
            _retrieve(client, kind, created[key])
    # ...and all three replicas at the same moment.
    for key in ("response-par", "batch-par"):
        kind = key.split("-")[0]
        barrier = threading.Barrier(6)

        def at_once(
            client: openai.OpenAI,
            kind: str = kind,
            key: str = key,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            _retrieve(client, kind, created[key])

        pool = [threading.Thread(target=at_once, args=(c,)) for c in clients * 2]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    rows = wait_phase_rows(fleet.database_url, "dedupe", 4 + 2 * 4 + 2 * 6)
    assert len(rows) == 4 + 2 * 4 + 2 * 6
    for key, object_id in created.items():
        mine = [r for r in rows if r["response_id"] == object_id]
        priced = [r for r in mine if r["cost_usd"] and r["cost_usd"] > 0]
        assert len(priced) == 1, (key, [(r["method"], r["price_ref"], r["cost_usd"]) for r in mine])
        assert priced[0]["method"] == "GET"  # queued/validating on create: billed when done
        gets = [r for r in mine if r["method"] == "GET"]
        assert len(gets) == (4 if key.endswith("seq") else 6)
        already = [r for r in gets if (r["price_ref"] or "").startswith("already_metered")]
        assert len(already) == len(gets) - 1  # every retrieval but the one that billed it


def test_reports_are_identical_from_every_replica(fleet: Fleet) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    query = f"/meter/spend?by=team,model,tag:phase&since={today}&until={tomorrow}"
    bodies = [r.get(query) for r in fleet.replicas]
    assert bodies[0] == bodies[1] == bodies[2]
    report = orjson.loads(bodies[0])
    costs = [Decimal(r["cost_usd"]) for r in ledger(fleet.database_url) if r["cost_usd"]]
    assert Decimal(report["total"]["cost_usd"]) == sum(costs, Decimal(0))


def test_prometheus_scraping_all_replicas_sums_to_the_ledger(fleet: Fleet, tmp_path: Path) -> None:
    prometheus = PrometheusServer(prometheus_binary(), tmp_path)
    prometheus.start(targets=[f"127.0.0.1:{r.port}" for r in fleet.replicas], rule_files=[])
    try:
        rows = ledger(fleet.database_url)
        cost = float(sum((r["cost_usd"] for r in rows if r["cost_usd"]), Decimal(0)))
        input_tokens = sum(r["input_tokens"] or 0 for r in rows)

        async def check() -> None:
            async with aiohttp.ClientSession() as session:
                await prometheus.wait_for(
                    session,
                    "sum(openai_meter_requests_total)",
                    lambda res: res and float(res[0]["value"][1]) == len(rows),
                )
                await prometheus.wait_for(
                    session,
                    'count(up{job="openai-meter"} == 1)',
                    lambda res: res and float(res[0]["value"][1]) == 3,
                )
                await prometheus.wait_for(
                    session,
                    'sum(openai_meter_tokens_total{type="input"})',
                    lambda res: res and float(res[0]["value"][1]) == input_tokens,
                )
                await prometheus.wait_for(
                    session,
                    "sum(openai_meter_cost_usd_total)",
                    lambda res: (
                        res and abs(float(res[0]["value"][1]) - cost) <= 1e-9 * max(1, cost)
                    ),
                )

        asyncio.run(check())
    finally:
        prometheus.stop()


def test_a_revoked_virtual_key_is_refused_by_every_replica(fleet: Fleet) -> None:
    created = run_cli("keys", "create", "--team", "fleet", "--database-url", fleet.database_url)
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line)
    key, key_id = fields["key"].strip(), fields["id"].strip()
    clients = [fleet.client("vkey", base=r.url, api_key=key) for r in fleet.replicas]
    for client in clients:  # a key created a moment ago works at once everywhere
        client.embeddings.create(model="text-embedding-3-small", input="x")
    revoked = run_cli("keys", "revoke", key_id, "--database-url", fleet.database_url)
    assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()
    refused_after: dict[int, float] = {}
    while len(refused_after) < 3 and time.monotonic() - revoked_at < 3 * REVOCATION_BOUND_S:
        for index, client in enumerate(clients):
            if index in refused_after:
                continue
            try:
                client.embeddings.create(model="text-embedding-3-small", input="x")
            except openai.AuthenticationError:
                refused_after[index] = time.monotonic() - revoked_at
        time.sleep(0.1)
    assert len(refused_after) == 3, refused_after
    fleet.notes["revocation_s"] = refused_after
    assert max(refused_after.values()) <= REVOCATION_BOUND_S + 2.0, refused_after


def test_a_budget_crossed_from_all_replicas_overshoots_by_at_most_one_reservation(
    fleet: Fleet,
) -> None:
    """Twelve clients through the balancer spend a team's daily budget on all three replicas at
    once. Reservations are shared atomically in PostgreSQL when made, so the spend past the limit
    is bounded by what was in flight at the crossing -- here at most one call's reservation,
    since admission needs spent + reserved below the limit across the fleet."""
    admitted: list[str] = []
    refused = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal refused
        client = fleet.client("budget", api_key=CAPPED_KEY)
        refusals = 0
        while refusals < 3:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "spend"}],
                    max_completion_tokens=MAX_TOKENS,
                )
                raw.parse()
                with lock:
                    admitted.append(raw.headers["x-request-id"])
            except openai.RateLimitError as exc:
                assert exc.response.headers.get("x-should-retry") == "false"
                refusals += 1
                with lock:
                    refused += 1

    pool = [threading.Thread(target=worker) for _ in range(12)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    rows = wait_phase_rows(fleet.database_url, "budget", len(admitted) + refused)
    spent = sum(
        (r["cost_usd"] for r in rows if r["team"] == "capped" and r["cost_usd"]), Decimal(0)
    )
    over = spent - CAPPED_LIMIT
    print(
        f"fleet budget: limit {CAPPED_LIMIT} spent {spent} admitted {len(admitted)} "
        f"refused {refused} over {over} (bound {RESERVATION_BOUND})"
    )
    fleet.notes["budget"] = {"spent": str(spent), "admitted": len(admitted)}
    assert spent >= CAPPED_LIMIT / 2  # the limit was really approached from all sides
    assert over <= RESERVATION_BOUND
    assert refused >= 12 * 3


def test_sigterm_one_replica_and_kill9_another_mid_load_loses_nothing(fleet: Fleet) -> None:
    _, r1, r2 = fleet.replicas
    stop = threading.Event()
    seen: list[str] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        client = fleet.client("chaos")
        while not stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "load"}]
                )
                raw.parse()
                with lock:
                    seen.append(raw.headers["x-request-id"])
            except openai.APIError as exc:  # a replica died under this call: no answer, no claim
                failures[type(exc).__name__] += 1

    pool = [threading.Thread(target=worker) for _ in range(4)]
    for t in pool:
        t.start()
    try:
        time.sleep(1.0)
        r1.sigterm()
        time.sleep(0.5)
        r2.kill9()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in pool:
            t.join()
    assert r1.wait_exit() == 0, r1.log_tail()
    answered = len(seen)
    assert answered > 50
    # Restart both on their own spool/journal directories (as a pod restart on its volume would).
    for replica in (r1, r2):
        replica.start()
    for replica in (r1, r2):
        replica.wait_ready()
    rows = wait_phase_rows(fleet.database_url, "chaos", answered, timeout=30)
    counts = Counter(r["request_id"] for r in rows)
    missing = [rid for rid in seen if rid not in counts]
    assert not missing, f"{len(missing)} of {answered} answered calls have no row"
    assert all(counts[rid] == 1 for rid in seen)
    fleet.notes["chaos"] = {"answered": answered, "failures": dict(failures)}
    print(f"fleet chaos: answered={answered} failures={dict(failures)} notes={fleet.notes}")
    assert len(phase_rows(fleet.database_url, "chaos")) >= answered
    assert ADMIN_TOKEN not in "".join(r.log_tail(200) for r in fleet.replicas)
