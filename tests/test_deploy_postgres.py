"""deploy/postgres/init-lifebox.sh on a bare PostgreSQL 15, as README tells an operator to run
it: roles without powers they do not need, the storage extension the server has, passwords
never on a command line, and a database the migrations then complete as the owner."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from lifebox_grpc.commands.dispatcher import role_problems as dispatch_role_problems
from lifebox_grpc.runtime.postgres import (
    APP_ROLE,
    DISPATCH_ROLE,
    INGEST_ROLE,
    OWNER_ROLE,
    SUPERUSER,
    EmbeddedPostgres,
    RolePasswords,
    dsn,
)
from lifebox_grpc.store import migrations
from lifebox_grpc.store.role_checks import role_problems
from tests.helpers.services import STORAGE_PATHS, TIMESCALEDB, private_tmpdir, storage_unavailable

INIT = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "init-lifebox.sh"


@pytest.fixture(params=STORAGE_PATHS)
def bare_cluster(request: pytest.FixtureRequest) -> Iterator[EmbeddedPostgres]:
    """A started cluster with nothing of ours in it: no roles, no database."""
    reason = storage_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    base = private_tmpdir("lifebox-test-init-")
    passwords = RolePasswords(*(secrets.token_urlsafe(16) for _ in range(4)))
    server = EmbeddedPostgres(base / "pg", passwords, timescaledb=request.param == TIMESCALEDB)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _run_init(server: EmbeddedPostgres, passwords: dict[str, str]) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": SUPERUSER,
        "PGPASSWORD": server.passwords.superuser,
        **passwords,
    }
    result = subprocess.run(
        ["bash", str(INIT)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_the_init_script_prepares_a_bare_server_for_the_migrations(
    bare_cluster: EmbeddedPostgres,
) -> None:
    server = bare_cluster
    passwords = {
        "LIFEBOX_OWNER_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_APP_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_INGEST_PASSWORD": secrets.token_urlsafe(16),
        "LIFEBOX_DISPATCH_PASSWORD": secrets.token_urlsafe(16),  # --- commands (issue 14)
    }
    _run_init(server, passwords)
    owner = await asyncpg.connect(dsn(server.port, OWNER_ROLE, passwords["LIFEBOX_OWNER_PASSWORD"]))
    try:
        assert await migrations.migrate(owner), "no migration applied"
        storage = await owner.fetchval(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') "
            "THEN 'timescaledb' ELSE 'partman' END"
        )
        assert storage == ("timescaledb" if server.timescaledb else "partman")
        roles = {
            r["rolname"]: r
            for r in await owner.fetch(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                "WHERE rolname = ANY($1::text[])",
                [OWNER_ROLE, APP_ROLE, INGEST_ROLE],
            )
        }
        assert set(roles) == {OWNER_ROLE, APP_ROLE, INGEST_ROLE}
        assert not any(r["rolsuper"] or r["rolcreaterole"] for r in roles.values())
        assert [name for name, r in roles.items() if r["rolbypassrls"]] == [INGEST_ROLE]
        if server.timescaledb:
            level = await owner.fetchval("SHOW timescaledb.telemetry_level")
            assert level == "off"
    finally:
        await owner.close()
    for role, process in ((APP_ROLE, "serve"), (INGEST_ROLE, "ingest")):
        password = passwords[f"LIFEBOX_{role.removeprefix('lifebox_').upper()}_PASSWORD"]
        conn = await asyncpg.connect(dsn(server.port, role, password))
        try:
            assert await role_problems(conn, process) == []
        finally:
            await conn.close()
    # --- commands (issue 14): the dispatcher's role, fit for `lifebox dispatch`, granted
    # what migration 0060's rows give it (the outbox) and nothing of the API's (users).
    conn = await asyncpg.connect(
        dsn(server.port, DISPATCH_ROLE, passwords["LIFEBOX_DISPATCH_PASSWORD"])
    )
    try:
        assert await dispatch_role_problems(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM command_outbox") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM users")
    finally:
        await conn.close()


async def test_the_init_script_makes_no_dispatch_role_without_its_password(
    bare_cluster: EmbeddedPostgres,
) -> None:
    server = bare_cluster
    passwords = {
        name: secrets.token_urlsafe(16)
        for name in ("LIFEBOX_OWNER_PASSWORD", "LIFEBOX_APP_PASSWORD", "LIFEBOX_INGEST_PASSWORD")
    }
    _run_init(server, passwords)
    owner = await asyncpg.connect(dsn(server.port, OWNER_ROLE, passwords["LIFEBOX_OWNER_PASSWORD"]))
    try:
        made = await owner.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", DISPATCH_ROLE)
    finally:
        await owner.close()
    assert made is None


def test_no_password_is_ever_on_a_command_line_in_deploy() -> None:
    """ps shows every process's argv to every local user: secrets go by file or environment."""
    deploy = Path(__file__).resolve().parents[1] / "deploy"
    compose = (Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text()
    texts = {str(p): p.read_text() for p in deploy.rglob("*") if p.is_file()}
    texts["docker-compose.yml"] = compose
    offenders = [
        f"{name}: {line.strip()}"
        for name, text in texts.items()
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        and any(
            marker in line
            for marker in ("mosquitto_passwd -b", " -P ", "_pw=", "--password", "PGPASSWORD=")
        )
    ]
    assert offenders == []
