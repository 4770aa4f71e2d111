"""`lifebox db status` with a real streaming standby configured: it reports the standby's
replay lag as a number."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from lifebox_grpc.runtime.postgres import APP_ROLE, PG_BIN, EmbeddedPostgres
from tests.helpers.db_ops import backup_role, lifebox
from tests.helpers.services import Database, private_tmpdir, run_blocking, running_database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def primary_and_standby() -> Iterator[tuple[Database, EmbeddedPostgres]]:
    """A cluster of its own (its pg_hba.conf gains a replication line) and a standby made
    from it with pg_basebackup -R."""
    with running_database() as primary:
        server = primary.server
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "host replication postgres 127.0.0.1/32 scram-sha-256\n")
        run_blocking(_reload(primary.superuser_dsn))
        base = private_tmpdir("lifebox-test-standby-")
        data = base / "pg"
        _basebackup(base, data, server.port, server.passwords.superuser)
        standby = EmbeddedPostgres(data, server.passwords)
        try:
            standby.start()
            yield primary, standby
        finally:
            standby.stop()
            shutil.rmtree(base, ignore_errors=True)


def _basebackup(base: Path, data: Path, port: int, password: str) -> None:
    """pg_basebackup -R as the user the standby will run as (PostgreSQL refuses root)."""
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    subprocess.run(
        [
            str(PG_BIN / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(port), "-U", "postgres"),
            *("-D", str(data), "-R", "-X", "stream", "--checkpoint=fast", "--no-password"),
        ],
        env={**os.environ, "PGPASSWORD": password},
        check=True,
        capture_output=True,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        cwd="/",
    )


async def _reload(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def test_status_reports_a_standbys_replay_lag(
    primary_and_standby: tuple[Database, EmbeddedPostgres],
) -> None:
    primary, standby = primary_and_standby
    owner = await asyncpg.connect(primary.owner_dsn)
    try:  # something for the standby to replay, so that it has a replay time
        await owner.execute("CREATE TABLE replica_marker AS SELECT 1 AS x")
    finally:
        await owner.close()
    replica_dsn = standby.dsn(APP_ROLE)

    async def replayed() -> bool:
        conn = await asyncpg.connect(replica_dsn)
        try:
            return bool(await conn.fetchval("SELECT to_regclass('replica_marker') IS NOT NULL"))
        finally:
            await conn.close()

    await async_wait_until(replayed, 30, "the standby to replay the marker")
    async with backup_role(primary) as backup_dsn:
        result = lifebox(
            "db",
            "status",
            "--json",
            env={
                "LIFEBOX_BACKUP_DATABASE_URL": backup_dsn,
                "LIFEBOX_REPLICA_DATABASE_URL": replica_dsn,
            },
        )
    assert result.returncode == 0, result.stderr
    replica = json.loads(result.stdout)["replica"]
    assert replica["reachable"] is True
    assert replica["standby"] is True
    assert isinstance(replica["lag_seconds"], float)
    assert replica["lag_seconds"] >= 0
