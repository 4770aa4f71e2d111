"""What a user meets when something is missing: one line saying what, one command that fixes
it, exit 2, never a traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from lifebox_grpc.runtime.home import load_or_create_secrets, prepare_home
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.runtime.postgres import OWNER_ROLE, dsn
from tests.helpers.db_ops import lifebox, superuser_dsn
from tests.helpers.services import Database


def _friendly(result: object, *expected: str) -> None:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    assert "fix:" in stderr or "start `lifebox dev`" in stderr, stderr
    for text in expected:
        assert text in stderr, stderr


def test_migrate_with_no_settings_and_no_cluster_says_start_dev(tmp_path: Path) -> None:
    result = lifebox("migrate", env={"LIFEBOX_HOME": str(tmp_path / "never-made")})
    _friendly(result, "lifebox dev")


def test_migrate_against_a_cluster_that_is_gone_says_start_dev(tmp_path: Path) -> None:
    # A home from an earlier `lifebox dev` whose cluster no longer runs: the port refuses.
    home = prepare_home(tmp_path / "home")
    load_or_create_secrets(home)
    (home / "pg.port").write_text(f"{free_port()}\n")
    result = lifebox("migrate", "--status", env={"LIFEBOX_HOME": str(home)})
    _friendly(result, "cannot connect to PostgreSQL", "fix: lifebox dev")


def test_a_refused_configured_database_names_the_setting(tmp_path: Path) -> None:
    url = f"postgresql://lifebox_owner:secret-pw@127.0.0.1:{free_port()}/lifebox"
    result = lifebox(
        "migrate", env={"LIFEBOX_HOME": str(tmp_path), "LIFEBOX_OWNER_DATABASE_URL": url}
    )
    _friendly(result, "cannot connect to PostgreSQL", "LIFEBOX_*_DATABASE_URL")
    assert "secret-pw" not in result.stderr


def test_a_missing_role_says_how_to_create_it(database: Database, tmp_path: Path) -> None:
    server = database.server
    url = dsn(server.port, "lifebox_nobody", "pw", socket_dir=server.socket_dir)
    result = lifebox(
        "migrate",
        env={
            "LIFEBOX_HOME": str(tmp_path),
            "LIFEBOX_OWNER_DATABASE_URL": url,
            "LIFEBOX_DATABASE_URL": url,
        },
    )
    _friendly(result, "lifebox_nobody", "no such role", "init-lifebox.sh")


async def test_a_missing_extension_says_which_package(database: Database, tmp_path: Path) -> None:
    # A database the init script never prepared: no partman schema, no extension.
    name = f"bare_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database.superuser_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
        server = database.server
        url = dsn(server.port, OWNER_ROLE, server.passwords.owner, name, server.socket_dir)
        result = lifebox(
            "migrate",
            env={
                "LIFEBOX_HOME": str(tmp_path),
                "LIFEBOX_OWNER_DATABASE_URL": url,
                "LIFEBOX_DATABASE_URL": url,
            },
        )
        _friendly(result, "partman")
        assert "postgresql-15-partman" in result.stderr
        assert "\nHINT" not in result.stderr
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def test_a_missing_program_says_what_to_install(database: Database, tmp_path: Path) -> None:
    result = lifebox(
        "db",
        "backup",
        str(tmp_path / "x.dump"),
        env={
            "PATH": str(tmp_path),
            "LIFEBOX_PG_BIN": str(tmp_path / "none"),
            "LIFEBOX_BACKUP_DATABASE_URL": superuser_dsn(database, "lifebox"),
        },
    )
    _friendly(result, "pg_dump is not installed", "apt-get install postgresql-client-15")
    assert not (tmp_path / "x.dump").exists()


def test_dev_without_postgresql_installed_says_what_to_install(tmp_path: Path) -> None:
    result = lifebox(
        "dev",
        env={"LIFEBOX_HOME": str(tmp_path / "home"), "LIFEBOX_PG_BIN": str(tmp_path / "none")},
    )
    _friendly(result, "apt-get install postgresql-15")
