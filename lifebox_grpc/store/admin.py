"""`lifebox migrate` and `lifebox seed`: owner-role operations with progress on stdout."""

from __future__ import annotations

import asyncpg

from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.runtime.home import SECRETS_FILE, load_or_create_secrets, prepare_home
from lifebox_grpc.store import migrations, seeds


async def migrate_command(settings: Settings, *, status_only: bool, dry_run: bool = False) -> int:
    conn = await asyncpg.connect(resolve_endpoints(settings).owner_dsn)
    try:
        # --- ops-db (issue 19): what would run, changing nothing ---
        if dry_run:
            todo = await migrations.pending(conn)
            for migration in todo:
                print(f"would apply {migration.name}")
            print(
                f"{len(todo)} migration(s) would be applied" if todo else "database is up to date"
            )
            return 0
        # --- end ops-db ---
        if status_only:
            for row in await migrations.status(conn):
                state = f"applied {row.applied_at}" if row.applied else "pending"
                print(f"{row.name:48} {state}")
            return 0
        done = await migrations.migrate(conn, progress=lambda line: print(line, flush=True))
        print(f"{len(done)} migration(s) applied" if done else "database is up to date")
        return 0
    except migrations.MigrationError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        await conn.close()


async def seed_command(settings: Settings, *, demo: bool) -> int:
    conn = await asyncpg.connect(resolve_endpoints(settings).owner_dsn)
    try:
        report = await seeds.seed_reference(conn)
        print(report)
        if demo:
            # The demo users share one generated password, kept with the dev secrets.
            home = prepare_home(settings.home)
            password = load_or_create_secrets(home).demo_password
            print(await seeds.seed_demo(conn, hash_password(password)))
            print(f"demo users' password: see demo_password in {home / SECRETS_FILE}")
        return 0
    finally:
        await conn.close()
