"""A clustered broker's own database authentication (issue 13): the EMQX queries shipped in
deploy/emqx/lifebox-auth.hocon, run exactly as written, as the broker's role made by
deploy/emqx/init-broker-role.sh, against our tables. A live credential gives one row whose
PBKDF2 (computed here as EMQX computes it) is the stored digest; a revoked credential, a
disabled device or a suspended client gives none; the ACL rows are the mosquitto patterns;
the role reads nothing else."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from lifebox_grpc.broker import files, passwords
from lifebox_grpc.runtime.postgres import DATABASE, SUPERUSER, dsn
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database

EMQX = Path(__file__).resolve().parents[1] / "deploy" / "emqx"
CONFIG = (EMQX / "lifebox-auth.hocon").read_text()
BROKER_ROLE = "lifebox_broker"


def _queries() -> tuple[str, str]:
    """(authn query, authz query) as shipped, each ${username} bound as EMQX binds it."""
    authn = CONFIG.index("authentication = [")
    authz = CONFIG.index("authorization {")
    found = [(m.start(), m.group(1)) for m in re.finditer(r'query = """(.*?)"""', CONFIG, re.S)]
    assert len(found) == 2
    (at_1, first), (at_2, second) = found
    assert authn < at_1 < authz < at_2
    return tuple(q.replace("${username}", "$1") for q in (first, second))  # type: ignore[return-value]


def _setting(name: str) -> str:
    values = set(re.findall(rf"^\s*{name} = (\S+)$", CONFIG, re.M))
    assert len(values) == 1, (name, values)
    return str(values.pop())


def emqx_hash(secret: str, salt: str) -> str:
    """What EMQX's pbkdf2 compares with password_hash: lowercase hex of
    PBKDF2(mac_fun, password, salt, iterations, dk_length), the salt taken as text."""
    return hashlib.pbkdf2_hmac(
        _setting("mac_fun"),
        secret.encode(),
        salt.encode(),
        int(_setting("iterations")),
        int(_setting("dk_length")),
    ).hex()


@pytest.fixture(scope="module")
def broker_password(database: Database) -> str:
    """lifebox_broker, made (or reset) by the shipped script, as an operator runs it."""
    password = secrets.token_urlsafe(24)
    server = database.server
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": SUPERUSER,
        "PGPASSWORD": server.passwords.superuser,
        "LIFEBOX_BROKER_PASSWORD": password,
        "LIFEBOX_DATABASE": DATABASE,
    }
    result = subprocess.run(
        ["bash", str(EMQX / "init-broker-role.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    return password


@pytest.fixture
async def broker_conn(
    database: Database, broker_password: str
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(
        dsn(database.server.port, BROKER_ROLE, broker_password, DATABASE, None)
    )
    yield conn
    await conn.close()


async def _credential(conn: asyncpg.Connection, client: uuid.UUID, device: uuid.UUID) -> str:
    secret = passwords.new_secret()
    async with tenant_transaction(conn, None, staff=True):
        await store.insert_credential(conn, client, device, passwords.hash_secret(secret), None)
    return secret


def test_the_shipped_hash_settings_are_the_ones_we_hash_with() -> None:
    assert _setting("name") == "pbkdf2"
    assert _setting("mac_fun") == "sha512"
    assert int(_setting("iterations")) == passwords.ITERATIONS
    assert int(_setting("dk_length")) == 64  # mosquitto's $7$ digest length
    authn, _ = _queries()
    assert f"iterations = {passwords.ITERATIONS}" in authn
    hashed = passwords.hash_secret("s3cret")  # mosquitto's digest, in EMQX's hex
    assert base64.b64decode(hashed.digest).hex() == emqx_hash("s3cret", hashed.salt)


async def test_the_broker_queries_admit_exactly_the_live_credentials(
    owner_conn: asyncpg.Connection, broker_conn: asyncpg.Connection
) -> None:
    authn, authz = _queries()
    live_client, suspended = await make_client(owner_conn), await make_client(owner_conn)
    dev_ok, serial_ok = await make_device(owner_conn, live_client)
    dev_new, serial_new = await make_device(owner_conn, live_client, status="provisioned")
    dev_off, serial_off = await make_device(owner_conn, live_client, status="disabled")
    dev_rev, serial_rev = await make_device(owner_conn, live_client)
    dev_sus, serial_sus = await make_device(owner_conn, suspended)
    secret_ok = await _credential(owner_conn, live_client, dev_ok)
    secret_new = await _credential(owner_conn, live_client, dev_new)
    for client, device in ((live_client, dev_off), (live_client, dev_rev), (suspended, dev_sus)):
        await _credential(owner_conn, client, device)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE device_credentials SET revoked_at = now() WHERE device_id = $1", dev_rev
        )
        await owner_conn.execute("UPDATE clients SET status = 'suspended' WHERE id = $1", suspended)

    for serial, secret in ((serial_ok, secret_ok), (serial_new, secret_new)):
        rows = await broker_conn.fetch(authn, serial)
        assert len(rows) == 1
        assert rows[0]["password_hash"] == emqx_hash(secret, rows[0]["salt"])
        assert rows[0]["password_hash"] != emqx_hash(secret + "x", rows[0]["salt"])
        acl = {tuple(r) for r in await broker_conn.fetch(authz, serial)}
        assert acl == _mosquitto_acl(serial)
    for serial in (serial_off, serial_rev, serial_sus, "NOBODY-1", "lifebox-ingest", "%"):
        assert await broker_conn.fetch(authn, serial) == [], serial
        assert await broker_conn.fetch(authz, serial) == [], serial

    # A lookup leaves no staff path behind in the broker's transaction.
    async with broker_conn.transaction():
        await broker_conn.fetch(authn, serial_ok)
        assert await broker_conn.fetchval("SELECT current_setting('lifebox.staff', true)") in (
            "",
            None,
        )


def _mosquitto_acl(serial: str) -> set[tuple[str, str, str]]:
    """broker/files.py's device patterns for ``serial``, in EMQX's terms."""
    out = set()
    for line in files.DEVICE_PATTERNS:
        _, access, topic = line.split()
        action = {"write": "publish", "read": "subscribe"}[access]
        out.add(("allow", action, topic.replace("%u", serial)))
    return out


async def test_the_broker_role_reads_nothing_else(
    owner_conn: asyncpg.Connection, broker_conn: asyncpg.Connection
) -> None:
    attributes = await broker_conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolinherit "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert attributes is not None
    assert not any(attributes.values())
    relations = await owner_conn.fetch(
        "SELECT c.oid::regclass::text AS name FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
    )
    assert len(relations) > 40
    readable = []
    for rel in relations:
        try:
            async with broker_conn.transaction():
                await broker_conn.fetch(f"SELECT 1 FROM {rel['name']} LIMIT 1")
            readable.append(rel["name"])
        except asyncpg.InsufficientPrivilegeError:
            pass
    assert readable == []
    executable = await owner_conn.fetch(
        "SELECT p.oid::regprocedure::text AS fn FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef "
        "AND p.prorettype <> 'trigger'::regtype "
        "AND has_function_privilege($1, p.oid, 'EXECUTE')",
        BROKER_ROLE,
    )
    # The only definer's-rights function it may call (triggers aside) is its own lookup.
    assert [r["fn"] for r in executable] == ["lifebox_broker_device(text)"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await broker_conn.fetch("SELECT lifebox_grant_broker()")
