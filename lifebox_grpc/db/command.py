"""The `lifebox db` sub-commands: argument parsing and the mapping of each to its module."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.db import dump, status, targets
from lifebox_grpc.db.reset import ResetRefusedError, reset
from lifebox_grpc.runtime.endpoints import resolve_endpoints


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    show = sub.add_parser(
        "status",
        help="connection, storage path, sizes, sessions, partitions or chunks, replica lag, "
        "pending migrations (as the read-only backup role)",
    )
    show.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    backup = sub.add_parser(
        "backup",
        help="pg_dump (custom format, mode 0600) as the read-only lifebox_backup role",
    )
    backup.add_argument("file", nargs="?", type=Path, help="default lifebox-<UTC time>.dump")
    kind = backup.add_mutually_exclusive_group()
    kind.add_argument("--schema-only", action="store_true", help="the schema, no rows")
    kind.add_argument("--data-only", action="store_true", help="the rows, no schema")
    restore = sub.add_parser(
        "restore",
        help="pg_restore into an empty database as a superuser (TimescaleDB's pre/post steps)",
    )
    restore.add_argument("file", type=Path)
    restore.add_argument(
        "--force", action="store_true", help="replace a database that is not empty"
    )
    restore.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="parallel pg_restore sessions (one on TimescaleDB, whose catalogue needs order)",
    )
    again = sub.add_parser(
        "reset", help="dev only: drop and recreate the database, migrate and seed it"
    )
    again.add_argument("--demo", action="store_true", help="also seed the demo tenant")
    again.add_argument(
        "--yes-really",
        action="store_true",
        help="allow a reset of a database that is not the embedded dev cluster's",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    action: str = args.db_command
    try:
        if action == "status":
            return asyncio.run(_status(args, settings))
        if action == "backup":
            kind = (
                dump.Kind.SCHEMA
                if args.schema_only
                else dump.Kind.DATA
                if args.data_only
                else dump.Kind.FULL
            )
            path = args.file or dump.default_file(kind)
            dump.backup(targets.backup_target(settings), path, kind)
            return 0
        if action == "restore":
            dump.restore(
                targets.superuser_target(settings), args.file, force=args.force, jobs=args.jobs
            )
            return 0
        return asyncio.run(_reset(args, settings))
    except (dump.RestoreRefusedError, ResetRefusedError, FileNotFoundError) as exc:
        print(f"lifebox db {action}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"lifebox db {action}: {exc.cmd} failed:\n{exc.stderr}", file=sys.stderr)
        return 1


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    replica = settings.replica_database_url
    found = await status.collect(
        targets.backup_target(settings).dsn,
        pool_max=settings.db_pool_max,
        replica_dsn=replica.get_secret_value() if replica else None,
    )
    print(json.dumps(found, indent=2, default=str) if args.json else status.render(found))
    return 0


async def _reset(args: argparse.Namespace, settings: Settings) -> int:
    if settings.mode is not Mode.DEV:
        raise ResetRefusedError("refused in LIFEBOX_MODE=prod: reset is for dev databases")
    embedded = targets.is_embedded(settings)
    if not embedded and not args.yes_really:
        raise ResetRefusedError(
            "the database is not the embedded dev cluster's (LIFEBOX_SUPERUSER_DATABASE_URL "
            "or LIFEBOX_DATABASE_URL is set): add --yes-really to destroy it"
        )
    from lifebox_grpc.auth.passwords import hash_password
    from lifebox_grpc.runtime.home import load_or_create_secrets
    from lifebox_grpc.store import seeds

    demo_hash = None
    secrets = load_or_create_secrets(settings.home.resolve()) if embedded else None
    if args.demo:
        if secrets is None:
            raise ResetRefusedError("--demo needs the dev home's demo password (embedded only)")
        demo_hash = hash_password(secrets.demo_password)

    async def admin(conn: asyncpg.Connection) -> None:
        # The dev platform admin whose login `lifebox dev` wrote to home/credentials.
        if secrets is not None:
            password = (
                settings.admin_password.get_secret_value()
                if settings.admin_password
                else secrets.admin_password
            )
            await seeds.ensure_platform_admin(conn, settings.admin_email, hash_password(password))

    await reset(
        targets.superuser_target(settings),
        resolve_endpoints(settings).owner_dsn,
        demo_password_hash=demo_hash,
        then=admin,
    )
    return 0
