"""The comparison itself (pure): OpenAI's usage and costs vs the ledger, per UTC day.

* per day x project x model: requests and tokens (:data:`COUNTERS`), which must be equal;
* per day x project: OpenAI's billed USD vs the ledger's cost, and the **captured ratio**
  (ledger / billed), which must be within the tolerance (a percent of billed USD);
* every difference gets its causes (:class:`Cause`), from what the ledger knows about the same
  day and project: projects it never saw (traffic that went around the proxy), calls it has
  unpriced or estimated, calls that ended ``upstream_timeout`` / ``client_disconnect``, records in
  the dead-letter store, and days OpenAI still restates (those never fail the comparison: they are
  re-read until they settle).

Ledger rows without a project (no ``OpenAI-Project`` header) count for ``default_project`` when
it is configured: OpenAI bills them to the key's own project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final

from proxy.admin.reconcile.shapes import CostResult, UsageResult
from storage.reconcile import COUNTED_TOKENS

COUNTERS: Final[tuple[str, ...]] = ("requests", *COUNTED_TOKENS)
RATIO_PLACES: Final = Decimal("0.0001")
NO_PROJECT: Final = "-"

Key = tuple[date, str | None, str | None]  # day, project, model


@dataclass(frozen=True, slots=True)
class LedgerGroup:
    """The ledger's totals for one day x project x model (calls with usage, i.e. billable)."""

    day: date
    project: str | None
    model: str | None
    counts: Mapping[str, int]
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    estimated: int = 0
    timeouts: int = 0
    disconnects: int = 0


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    groups: tuple[LedgerGroup, ...]
    # Projects with any ledger row in the window (None = calls without an OpenAI-Project header).
    projects_seen: frozenset[str | None]
    # Dead-lettered records per day; None when the ledger has no dead-letter store.
    dead_letters: Mapping[date, int] | None = None


@dataclass(frozen=True, slots=True)
class Cause:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class ModelRow:
    day: date
    project: str | None
    model: str | None
    openai: Mapping[str, int]
    ledger: Mapping[str, int]
    restating: bool
    causes: tuple[Cause, ...] = ()

    @property
    def equal(self) -> bool:
        return all(self.openai.get(c, 0) == self.ledger.get(c, 0) for c in COUNTERS)


@dataclass(frozen=True, slots=True)
class ProjectDay:
    day: date
    project: str | None
    billed_usd: Decimal
    ledger_usd: Decimal
    captured_ratio: Decimal | None
    restating: bool
    within: bool  # what the exit status reads: matches, or still restating
    causes: tuple[Cause, ...] = ()
    matches: bool = True  # cost within tolerance and every model row's tokens equal


@dataclass(frozen=True, slots=True)
class Reconciliation:
    since: date
    until: date  # exclusive
    generated_at: datetime
    restate_days: int
    tolerance_percent: Decimal
    rows: tuple[ModelRow, ...]
    projects: tuple[ProjectDay, ...]
    admin_key: str = ""  # the admin key's fingerprint (never the key)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def billed_usd(self) -> Decimal:
        return sum((p.billed_usd for p in self.projects), Decimal(0))

    @property
    def ledger_usd(self) -> Decimal:
        return sum((p.ledger_usd for p in self.projects), Decimal(0))

    @property
    def captured_ratio(self) -> Decimal | None:
        return ratio(self.ledger_usd, self.billed_usd)

    @property
    def ok(self) -> bool:
        return all(p.within for p in self.projects) and all(
            r.equal or r.restating for r in self.rows
        )

    def by_project(self) -> dict[str | None, tuple[Decimal, Decimal]]:
        """Per project over the whole window: (billed, ledger)."""
        out: dict[str | None, tuple[Decimal, Decimal]] = {}
        for p in self.projects:
            billed, ledger = out.get(p.project, (Decimal(0), Decimal(0)))
            out[p.project] = (billed + p.billed_usd, ledger + p.ledger_usd)
        return out


def ratio(ledger: Decimal, billed: Decimal) -> Decimal | None:
    """ledger / billed to 4 places; None when nothing was billed."""
    if billed <= 0:
        return None
    return (ledger / billed).quantize(RATIO_PLACES)


def days_in(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _name(project: str | None) -> str:
    return project if project is not None else NO_PROJECT


class _Side:
    """Counters per key, and OpenAI's api key ids per key."""

    def __init__(self) -> None:
        self.counts: dict[Key, dict[str, int]] = {}
        self.keys: dict[Key, set[str]] = {}

    def add(self, key: Key, counts: Mapping[str, int], api_key_id: str | None = None) -> None:
        current = self.counts.setdefault(key, dict.fromkeys(COUNTERS, 0))
        for name in COUNTERS:
            current[name] += counts.get(name, 0)
        if api_key_id is not None:
            self.keys.setdefault(key, set()).add(api_key_id)


def compare(
    *,
    usage: Iterable[UsageResult],
    costs: Iterable[CostResult],
    ledger: LedgerFacts,
    since: date,
    until: date,
    now: datetime,
    restate_days: int,
    tolerance_percent: Decimal,
    default_project: str | None = None,
    admin_key: str = "",
) -> Reconciliation:
    """Compare the UTC days ``[since, until)``; results outside them are ignored."""
    in_window = set(days_in(since, until))
    # restate_days=3: today and the two days before it are still restated; 0: no day is
    restating_from = now.date() - timedelta(days=restate_days - 1)

    def restating(day: date) -> bool:
        return restate_days > 0 and day >= restating_from

    def project_of(project: str | None) -> str | None:
        return default_project if project is None and default_project else project

    theirs = _Side()
    for result in usage:
        if result.day in in_window:
            theirs.add((result.day, result.project, result.model), result.counts, result.api_key_id)
    ours = _Side()
    facts: dict[Key, LedgerGroup] = {}
    for group in ledger.groups:
        if group.day not in in_window:
            continue
        key = (group.day, project_of(group.project), group.model)
        ours.add(key, group.counts)
        facts[key] = _merge_facts(facts.get(key), group)
    seen = {project_of(p) for p in ledger.projects_seen}
    billed: dict[tuple[date, str | None], Decimal] = {}
    for cost in costs:
        if cost.day in in_window:
            pkey = (cost.day, cost.project)
            billed[pkey] = billed.get(pkey, Decimal(0)) + cost.amount
    dead = ledger.dead_letters

    rows: list[ModelRow] = []
    for key in sorted(set(theirs.counts) | set(ours.counts), key=_sort_key):
        day, project, model = key
        openai = theirs.counts.get(key, dict.fromkeys(COUNTERS, 0))
        mine = ours.counts.get(key, dict.fromkeys(COUNTERS, 0))
        row = ModelRow(day, project, model, openai, mine, restating(day))
        if not row.equal:
            why = _row_causes(row, facts.get(key), project in seen, theirs.keys.get(key), dead)
            row = ModelRow(day, project, model, openai, mine, row.restating, why)
        rows.append(row)

    ledger_cost: dict[tuple[date, str | None], Decimal] = {}
    groups_of: dict[tuple[date, str | None], list[LedgerGroup]] = {}
    for key, group in facts.items():
        pkey = (key[0], key[1])
        ledger_cost[pkey] = ledger_cost.get(pkey, Decimal(0)) + group.cost
        groups_of.setdefault(pkey, []).append(group)
    rows_of: dict[tuple[date, str | None], list[ModelRow]] = {}
    for row in rows:
        rows_of.setdefault((row.day, row.project), []).append(row)
    projects: list[ProjectDay] = []
    tolerance = tolerance_percent / 100
    for pkey in sorted(set(billed) | set(ledger_cost), key=lambda k: (k[0], _name(k[1]))):
        day, project = pkey
        their_usd = billed.get(pkey, Decimal(0))
        our_usd = ledger_cost.get(pkey, Decimal(0))
        model_rows = rows_of.get(pkey, [])
        cost_ok = abs(our_usd - their_usd) <= their_usd.copy_abs() * tolerance
        tokens_ok = all(r.equal for r in model_rows)
        is_restating = restating(day)
        causes: tuple[Cause, ...] = ()
        if not (cost_ok and tokens_ok) or our_usd != their_usd:
            causes = _project_causes(
                day,
                project,
                their_usd,
                our_usd,
                model_rows,
                groups_of.get(pkey, []),
                is_restating,
                restate_days,
                cost_ok and tokens_ok,
            )
        projects.append(
            ProjectDay(
                day=day,
                project=project,
                billed_usd=their_usd,
                ledger_usd=our_usd,
                captured_ratio=ratio(our_usd, their_usd),
                restating=is_restating,
                within=is_restating or (cost_ok and tokens_ok),
                causes=causes,
                matches=cost_ok and tokens_ok,
            )
        )
    notes: list[str] = []
    if None in seen and not default_project:
        notes.append(
            "ledger calls without an OpenAI-Project header are shown as project '-': set "
            "reconcile.default_project to the project your keys bill to"
        )
    if ledger.dead_letters is None:
        notes.append("no dead-letter store in this ledger (records lost on write are not counted)")
    return Reconciliation(
        since=since,
        until=until,
        generated_at=now,
        restate_days=restate_days,
        tolerance_percent=tolerance_percent,
        rows=tuple(rows),
        projects=tuple(projects),
        admin_key=admin_key,
        notes=tuple(notes),
    )


def _sort_key(key: Key) -> tuple[date, str, str]:
    return key[0], _name(key[1]), key[2] or ""


def _merge_facts(current: LedgerGroup | None, group: LedgerGroup) -> LedgerGroup:
    if current is None:
        return group
    return LedgerGroup(
        day=current.day,
        project=current.project,
        model=current.model,
        counts={c: current.counts.get(c, 0) + group.counts.get(c, 0) for c in COUNTERS},
        cost=current.cost + group.cost,
        unpriced=current.unpriced + group.unpriced,
        estimated=current.estimated + group.estimated,
        timeouts=current.timeouts + group.timeouts,
        disconnects=current.disconnects + group.disconnects,
    )


def _ledger_causes(group: LedgerGroup | None) -> list[Cause]:
    if group is None:
        return []
    causes: list[Cause] = []
    if group.estimated:
        causes.append(
            Cause(
                "estimated",
                f"{_plural(group.estimated, 'call')} with usage estimated locally "
                "(no usage arrived: tokens are tiktoken counts)",
            )
        )
    if group.timeouts:
        causes.append(
            Cause(
                "upstream_timeout",
                f"{_plural(group.timeouts, 'call')} ended upstream_timeout "
                "(OpenAI bills what it generated)",
            )
        )
    if group.disconnects:
        causes.append(
            Cause(
                "client_disconnect",
                f"{_plural(group.disconnects, 'call')} ended client_disconnect "
                "(OpenAI bills what it generated)",
            )
        )
    return causes


def _row_causes(
    row: ModelRow,
    group: LedgerGroup | None,
    project_seen: bool,
    api_keys: set[str] | None,
    dead: Mapping[date, int] | None,
) -> tuple[Cause, ...]:
    causes: list[Cause] = []
    missing = row.openai.get("requests", 0) - row.ledger.get("requests", 0)
    keys = f" (api keys {', '.join(sorted(api_keys)[:5])})" if api_keys else ""
    if missing > 0 and not project_seen:
        causes.append(
            Cause(
                "around_proxy",
                f"{_plural(missing, 'call')} in project {_name(row.project)}, which never went "
                f"through the proxy{keys}: traffic went around it",
            )
        )
    elif missing > 0:
        causes.append(
            Cause(
                "missing_calls",
                f"{_plural(missing, 'call')} OpenAI counted are not in the ledger{keys}: they went "
                "around the proxy, or their records were lost",
            )
        )
        if dead and dead.get(row.day):
            causes.append(
                Cause(
                    "dead_lettered",
                    f"{_plural(dead[row.day], 'record')} of {row.day} are in the dead-letter "
                    "store (openai-meter db rejected)",
                )
            )
    elif missing < 0:
        causes.append(
            Cause(
                "not_counted_by_openai",
                f"{_plural(-missing, 'call')} in the ledger that OpenAI does not count "
                "(yet): check the model and project names",
            )
        )
    causes.extend(_ledger_causes(group))
    if row.restating:
        causes.append(Cause("restating", f"{row.day} is recent: OpenAI still restates it"))
    if not causes:
        causes.append(Cause("unexplained", "tokens differ with no cause the ledger knows of"))
    return tuple(causes)


def _project_causes(
    day: date,
    project: str | None,
    billed: Decimal,
    ledger: Decimal,
    model_rows: Sequence[ModelRow],
    groups: Sequence[LedgerGroup],
    restating: bool,
    restate_days: int,
    within: bool,
) -> tuple[Cause, ...]:
    causes: list[Cause] = []
    unpriced = {g.model or "?": g.unpriced for g in groups if g.unpriced}
    if unpriced:
        names = ", ".join(sorted(unpriced))
        causes.append(
            Cause(
                "unpriced",
                f"{_plural(sum(unpriced.values()), 'call')} the ledger has unpriced "
                f"(cost NULL; model not in the catalog: {names})",
            )
        )
    for row in model_rows:
        for cause in row.causes:
            if cause.code in ("around_proxy", "missing_calls", "dead_lettered"):
                causes.append(Cause(cause.code, f"{row.model or '?'}: {cause.text}"))
    for group in groups:
        for cause in _ledger_causes(group):
            causes.append(Cause(cause.code, f"{group.model or '?'}: {cause.text}"))
    if billed == 0 and ledger > 0:
        causes.append(Cause("not_billed_yet", "OpenAI's costs show nothing for this day yet"))
    if restating:
        causes.append(
            Cause(
                "restating",
                f"{day} is within the last {restate_days} days: OpenAI still restates it "
                "(not failed on)",
            )
        )
    if not causes and within:
        causes.append(
            Cause("within_tolerance", f"differs by {ledger - billed} USD (within tolerance)")
        )
    elif not causes:
        causes.append(Cause("unexplained", "cost differs with no cause the ledger knows of"))
    return tuple(causes)
