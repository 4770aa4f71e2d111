"""Each process holds only the credentials it uses, and refuses a database role that would
bypass tenant isolation."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from lifebox_grpc.config import CREDENTIALS, PROCESS_CREDENTIALS, Settings
from lifebox_grpc.store.role_checks import role_problems
from tests.helpers.services import Database

_PROD = {
    "mode": "prod",
    "jwt_signing_key": "k" * 40,
}
_URLS = {
    "database_url": "postgresql://lifebox_app:s3cr3t-a@db/lifebox",
    "owner_database_url": "postgresql://lifebox_owner:s3cr3t-o@db/lifebox",
    "ingest_database_url": "postgresql://lifebox_ingest:s3cr3t-i@db/lifebox",
    "mqtt_url": "mqtt://lifebox-ingest:s3cr3t-m@broker:1883",
}
# --- commands (issue 14) ---
_URLS["dispatch_database_url"] = "postgresql://lifebox_dispatch:s3cr3t-d@db/lifebox"
_URLS["dispatch_mqtt_url"] = "mqtt://lifebox-dispatch:s3cr3t-q@broker:1883"
# --- end commands ---
# --- broker reconciler (issue 13) ---
_URLS["broker_sync_database_url"] = "postgresql://lifebox_broker_sync:s3cr3t-b@db/lifebox"
_URLS["broker_sync_mqtt_url"] = "mqtt://lifebox-broker-admin:s3cr3t-k@broker:1883"


@pytest.mark.parametrize("process", sorted(PROCESS_CREDENTIALS))
def test_a_prod_process_needs_its_own_credentials_and_refuses_the_others(process: str) -> None:
    own = {name: _URLS[name] for name in PROCESS_CREDENTIALS[process]}
    assert Settings(**_PROD, **own).production_problems(process) == []
    for name in PROCESS_CREDENTIALS[process]:
        missing = {k: v for k, v in own.items() if k != name}
        problems = Settings(**_PROD, **missing).production_problems(process)
        assert problems == [f"LIFEBOX_{name.upper()} is required by `lifebox {process}`"]
    for name in set(CREDENTIALS) - set(PROCESS_CREDENTIALS[process]):
        problems = Settings(**_PROD, **own, **{name: _URLS[name]}).production_problems(process)
        assert len(problems) == 1
        assert problems[0].startswith(f"LIFEBOX_{name.upper()} is set, but `lifebox {process}`")


def test_only_serve_needs_the_signing_key() -> None:
    ingest = {name: _URLS[name] for name in PROCESS_CREDENTIALS["ingest"]}
    assert Settings(mode="prod", **ingest).production_problems("ingest") == []
    serve = Settings(mode="prod", database_url=_URLS["database_url"])
    assert serve.production_problems("serve") == [
        "LIFEBOX_JWT_SIGNING_KEY is required in prod mode"
    ]


async def test_the_runtime_roles_pass_their_own_checks(database: Database) -> None:
    for dsn, process in ((database.app_dsn, "serve"), (database.ingest_dsn, "ingest")):
        conn = await asyncpg.connect(dsn)
        try:
            assert await role_problems(conn, process) == []
        finally:
            await conn.close()


async def test_serve_refuses_the_owner_and_the_superuser_and_ingest_the_superuser(
    database: Database,
) -> None:
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        problems = await role_problems(owner, "serve")
    finally:
        await owner.close()
    assert len(problems) == 1
    assert problems[0].startswith("role lifebox_owner owns tenant tables")
    superuser = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        assert "role postgres is a superuser" in await role_problems(superuser, "serve")
        assert await role_problems(superuser, "ingest") == ["role postgres is a superuser"]
    finally:
        await superuser.close()


async def test_no_role_of_ours_may_create_roles(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'lifebox%' AND rolcreaterole"
    )
    assert rows == []


@pytest.mark.parametrize(
    ("process", "setting", "role"),
    [
        ("serve", "LIFEBOX_DATABASE_URL", "owner"),
        ("ingest", "LIFEBOX_INGEST_DATABASE_URL", "superuser"),
    ],
)
def test_a_process_given_a_powerful_role_refuses_to_start(
    database: Database, process: str, setting: str, role: str
) -> None:
    dsn = database.owner_dsn if role == "owner" else database.superuser_lifebox_dsn
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIFEBOX_")} | {
        setting: dsn,
        "LIFEBOX_MQTT_URL": "mqtt://127.0.0.1:1",
        "LIFEBOX_JWT_SIGNING_KEY": "k" * 40,
        "LIFEBOX_GRPC_PORT": "0",
        "LIFEBOX_HTTP_PORT": "0",
        "LIFEBOX_INGEST_METRICS_PORT": "0",
        "LIFEBOX_HOME": "/nonexistent-lifebox-home",
    }
    result = subprocess.run(
        [sys.executable, "-m", "lifebox_grpc.cli", process],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"refusing to start: {setting} logs in as a role `lifebox {process}`" in result.stderr
    assert "Traceback" not in result.stderr
