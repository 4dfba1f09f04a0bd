"""``openai-meter keys``: fingerprints for config, and virtual keys (create / list / revoke)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when the command runs, not for --help
    from proxy.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="key fingerprints and virtual keys",
        description=(
            "'fingerprint' prints the sha256: fingerprint of an API key read on stdin (what "
            "teams.<name>.keys lists; raw keys never go in the config). 'create', 'list' and "
            "'revoke' manage virtual keys (sk-meter-...): with virtual_keys.enabled the proxy "
            "attributes a call to the key's team and swaps the key for upstream.api_key. Keys "
            "are stored as hashes; a created key is shown once."
        ),
    )
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    fingerprint = actions.add_parser(
        "fingerprint",
        help="read an API key on stdin, print its fingerprint (for teams.<name>.keys)",
    )
    fingerprint.set_defaults(func=_fingerprint)

    create = actions.add_parser("create", help="issue a virtual key (sk-meter-...) for a team")
    create.add_argument(
        "--team",
        required=True,
        help="the team its calls are attributed to (a name under teams: in the config)",
    )
    create.add_argument("--description", help="what the key is for (shown by list)")
    _database_flags(create)
    create.set_defaults(func=_run(_create))

    listing = actions.add_parser("list", help="virtual keys (never the keys themselves)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    _database_flags(listing)
    listing.set_defaults(func=_run(_list))

    revoke = actions.add_parser("revoke", help="revoke a virtual key by id (vk_...)")
    revoke.add_argument("id")
    _database_flags(revoke)
    revoke.set_defaults(func=_run(_revoke))


def _database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (YAML)")
    parser.add_argument("--database-url", help="ledger URL (env OPENAI_METER_DATABASE_URL)")


def settings_from(args: argparse.Namespace) -> Settings:
    """CLI flag > environment > config file > default."""
    from proxy.config import load_settings

    return load_settings(
        config_path=args.config,
        environ=os.environ,
        cli={"--database-url": (("database", "url"), args.database_url)},
    )


def _fingerprint(args: argparse.Namespace) -> int:
    from proxy.teams.attribution import key_fingerprint

    key = sys.stdin.readline().strip()
    if key.lower().startswith("bearer "):
        key = key[len("bearer ") :].strip()
    if not key:
        print("openai-meter keys fingerprint: no key on stdin", file=sys.stderr)
        return 2
    print(key_fingerprint(key))
    return 0


def _run(action: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        import asyncio

        from proxy.config import ConfigError

        try:
            settings = settings_from(args)
            code: int = asyncio.run(_with_engine(settings, action, args))
        except ConfigError as exc:
            print(f"openai-meter keys: {exc}", file=sys.stderr)
            return 2
        return code

    return run


async def _with_engine(settings: Settings, action: Any, args: argparse.Namespace) -> int:
    from storage.engine import create_engine
    from storage.migrate import upgrade

    engine = create_engine(settings.database.url)
    try:
        if settings.database.auto_upgrade:
            await upgrade(engine)
        code: int = await action(engine, settings, args)
        return code
    finally:
        await engine.dispose()


async def _create(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    from proxy.teams.attribution import key_fingerprint
    from proxy.teams.virtual_keys import key_hash, new_key, new_key_id
    from storage.virtual_keys import VirtualKeyRow, insert_key

    if args.team not in settings.teams:
        print(
            f"warning: team {args.team!r} is not configured under teams: (budgets and metrics "
            "labels only know configured teams)",
            file=sys.stderr,
        )
    key = new_key()
    row = VirtualKeyRow(
        id=new_key_id(),
        key_hash=key_hash(key),
        fingerprint=key_fingerprint(key),
        team=args.team,
        description=args.description,
        created_at=datetime.now(UTC),
    )
    await insert_key(engine, row)
    print(f"id:          {row.id}")
    print(f"team:        {row.team}")
    print(f"fingerprint: {row.fingerprint}")
    print(f"key:         {key}")
    print("The key is shown only now; store it in the client's secret store.", file=sys.stderr)
    return 0


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _list(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from storage.virtual_keys import list_keys

    rows = await list_keys(engine, include_revoked=not args.active)
    items = [
        {
            "id": r.id,
            "team": r.team,
            "fingerprint": r.fingerprint,
            "created_at": _iso(r.created_at),
            "revoked_at": _iso(r.revoked_at),
            "description": r.description,
        }
        for r in rows
    ]
    if args.format == "json":
        sys.stdout.write(orjson.dumps({"keys": items}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    headings = ["id", "team", "fingerprint", "created_at", "revoked_at", "description"]
    table = [headings] + [[str(item[h] or "-") for h in headings] for item in items]
    widths = [max(len(line[i]) for line in table) for i in range(len(headings))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


async def _revoke(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    from storage.virtual_keys import revoke_key

    if await revoke_key(engine, args.id, datetime.now(UTC)):
        print(f"revoked {args.id}")
        return 0
    print(f"openai-meter keys revoke: no live key {args.id!r}", file=sys.stderr)
    return 1
