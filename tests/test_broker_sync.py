"""`lifebox broker-sync` end to end: the process running against a real mosquitto, real
paho clients logging in with real device credentials, changes made in the database."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.broker import (
    BrokerSyncProcess,
    can_log_in,
    connect,
    device_credential,
    running_broker_sync,
)
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database, running_broker
from tests.helpers.wait import wait_until

# What "within seconds" means here: debounce (50 ms) + a pass + SIGHUP + mosquitto's
# re-authentication, with room for a loaded 2-core machine.
DROP_SECONDS = 5.0


@pytest.fixture(scope="module")
def sync_broker() -> Iterator[EmbeddedMosquitto]:
    """A broker of this module's own: broker-sync rewrites its files."""
    with running_broker() as broker:
        yield broker


async def _revoke(conn: asyncpg.Connection, credential: uuid.UUID) -> None:
    async with tenant_transaction(conn, None, staff=True):
        assert await store.revoke_credential(conn, credential, None)


async def _staff(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(sql, *args)


def _logs_in_soon(broker: EmbeddedMosquitto, user: str, secret: str) -> None:
    wait_until(lambda: can_log_in(broker.port, user, secret), DROP_SECONDS, f"{user} accepted")


async def test_revoke_disable_and_suspend_drop_live_sessions_within_seconds(
    database: Database, owner_conn: asyncpg.Connection, sync_broker: EmbeddedMosquitto
) -> None:
    tenant, other_tenant = await make_client(owner_conn), await make_client(owner_conn)
    revoked, revoked_serial = await make_device(owner_conn, tenant)
    disabled, disabled_serial = await make_device(owner_conn, tenant)
    bystander, bystander_serial = await make_device(owner_conn, tenant)
    suspended, suspended_serial = await make_device(owner_conn, other_tenant)
    with running_broker_sync(database.broker_sync_dsn, sync_broker):
        creds = {}
        for client, device, serial in (
            (tenant, revoked, revoked_serial),
            (tenant, disabled, disabled_serial),
            (tenant, bystander, bystander_serial),
            (other_tenant, suspended, suspended_serial),
        ):
            creds[serial] = await device_credential(owner_conn, client, device)
        for serial, (_, secret) in creds.items():  # the NOTIFY-driven pass let them in
            _logs_in_soon(sync_broker, serial, secret)
        live = {s: connect(sync_broker.port, s, secret) for s, (_, secret) in creds.items()}
        assert not any(session.refused for session in live.values())

        started = time.monotonic()
        await _revoke(owner_conn, creds[revoked_serial][0])
        assert live[revoked_serial].disconnected.wait(DROP_SECONDS), "revoked session kept"
        revoke_seconds = time.monotonic() - started
        await _staff(owner_conn, "UPDATE devices SET status = 'disabled' WHERE id = $1", disabled)
        assert live[disabled_serial].disconnected.wait(DROP_SECONDS), "disabled device kept"
        await _staff(
            owner_conn, "UPDATE clients SET status = 'suspended' WHERE id = $1", other_tenant
        )
        assert live[suspended_serial].disconnected.wait(DROP_SECONDS), "suspended client kept"

        assert not live[bystander_serial].disconnected.is_set(), "a live device was dropped"
        for serial in (revoked_serial, disabled_serial, suspended_serial):
            assert not can_log_in(sync_broker.port, serial, creds[serial][1]), serial
        assert can_log_in(sync_broker.port, bystander_serial, creds[bystander_serial][1])
        for session in live.values():
            session.close()
    print(f"revocation to disconnect: {revoke_seconds:.2f}s")


async def test_a_second_copy_takes_the_lease_when_the_first_is_killed(
    database: Database, owner_conn: asyncpg.Connection, sync_broker: EmbeddedMosquitto
) -> None:
    tenant = await make_client(owner_conn)
    kept, kept_serial = await make_device(owner_conn, tenant)
    gone, gone_serial = await make_device(owner_conn, tenant)
    late, late_serial = await make_device(owner_conn, tenant)
    first = BrokerSyncProcess(database.broker_sync_dsn, sync_broker)
    second = BrokerSyncProcess(database.broker_sync_dsn, sync_broker)
    first.start()
    try:
        second.start(wait_for_lease=False)
        wait_until(lambda: first.metric("lifebox_broker_sync_lease_held") == 1, 10, "lease")
        await asyncio.sleep(0.5)  # the waiting copy has retried a few times
        assert second.metric("lifebox_broker_sync_lease_held") == 0, "two copies hold the lease"
        passes = second.metric("lifebox_broker_sync_passes_total")
        assert passes != passes, "the waiting copy wrote the files"  # NaN: no pass yet
        _, kept_secret = await device_credential(owner_conn, tenant, kept)
        gone_cred, gone_secret = await device_credential(owner_conn, tenant, gone)
        _logs_in_soon(sync_broker, gone_serial, gone_secret)

        first.kill()  # SIGKILL: no cleanup, the lease goes with its connection
        # Changes while nobody holds the lease: the next holder must see them at start.
        await _revoke(owner_conn, gone_cred)
        _, late_secret = await device_credential(owner_conn, tenant, late)
        wait_until(lambda: second.metric("lifebox_broker_sync_lease_held") == 1, 15, "takeover")
        _logs_in_soon(sync_broker, late_serial, late_secret)
        assert not can_log_in(sync_broker.port, gone_serial, gone_secret), "revoked let in"
        assert can_log_in(sync_broker.port, kept_serial, kept_secret), "a device was lost"
    finally:
        first.stop()
        second.stop()


async def test_a_restart_of_the_reconciler_or_the_broker_is_reconciled(
    database: Database, owner_conn: asyncpg.Connection, sync_broker: EmbeddedMosquitto
) -> None:
    tenant = await make_client(owner_conn)
    kept, kept_serial = await make_device(owner_conn, tenant)
    revoked, revoked_serial = await make_device(owner_conn, tenant)
    with running_broker_sync(database.broker_sync_dsn, sync_broker):
        _, kept_secret = await device_credential(owner_conn, tenant, kept)
        revoked_cred, revoked_secret = await device_credential(owner_conn, tenant, revoked)
        _logs_in_soon(sync_broker, revoked_serial, revoked_secret)
    # Nothing runs: the revocation is not applied yet, and nothing notices it.
    await _revoke(owner_conn, revoked_cred)
    with running_broker_sync(database.broker_sync_dsn, sync_broker) as sync:
        assert not can_log_in(sync_broker.port, revoked_serial, revoked_secret)
        assert can_log_in(sync_broker.port, kept_serial, kept_secret)

        sync_broker.stop()
        sync_broker.start()  # starts from the service accounts only (a fresh broker)
        _logs_in_soon(sync_broker, kept_serial, kept_secret)
        assert sync.metric('lifebox_broker_sync_passes_total{trigger="broker_restart"}') >= 1
        assert not can_log_in(sync_broker.port, revoked_serial, revoked_secret)


async def test_broker_sync_refuses_a_role_that_may_write_what_it_renders(
    database: Database, sync_broker: EmbeddedMosquitto
) -> None:
    env = BrokerSyncProcess(database.app_dsn, sync_broker).env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lifebox_grpc.cli",
        "broker-sync",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    raw, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = raw.decode()
    assert proc.returncode == 2, out
    assert "lifebox_broker_sync" in out, out
    assert "device_credentials" in out, out


async def test_the_broker_role_reads_only_what_it_renders(database: Database) -> None:
    conn = await asyncpg.connect(database.broker_sync_dsn)
    try:
        for sql in (
            "SELECT username FROM device_credentials",
            "SELECT hash_digest FROM broker_device_credentials",
            "SELECT serial FROM devices",
            "SELECT email FROM users",
            "UPDATE device_credentials SET revoked_at = now()",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()
