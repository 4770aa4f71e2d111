"""Per-device MQTT credentials on a real mosquitto: the files LifeBox renders from
device_credentials, our own `$7$` hashes, the `%u` ACL patterns and revocation by SIGHUP."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lifebox_grpc.broker import passwords
from lifebox_grpc.broker.reconcile import reconcile
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import private_tmpdir
from tests.helpers.wait import wait_until

INGEST_SECRET = passwords.new_secret()
INGEST_HASH = passwords.hash_secret(INGEST_SECRET).encoded  # service accounts: fixed hashes
DISPATCH_SECRET = passwords.new_secret()
DISPATCH_HASH = passwords.hash_secret(DISPATCH_SECRET).encoded


@dataclass
class Broker:
    port: int
    pid: int | None
    passwd: Path
    acl: Path

    async def reconcile(self, conn: asyncpg.Connection) -> bool:
        service = [("lifebox-ingest", INGEST_HASH), ("lifebox-dispatch", DISPATCH_HASH)]
        return await reconcile(
            conn,
            password_path=self.passwd,
            acl_path=self.acl,
            broker_pid=self.pid,
            service_entries=service,
            owner="mosquitto",
        )


@pytest.fixture
async def cred_broker(owner_conn: asyncpg.Connection) -> AsyncIterator[Broker]:
    base = private_tmpdir("lifebox-test-cred-mqtt-")
    shutil.chown(base, "mosquitto")
    port = free_port()
    broker = Broker(port, None, base / "passwd", base / "acl")
    await broker.reconcile(owner_conn)  # no broker yet: writes the files only
    conf = base / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {broker.passwd}\n"
        f"acl_file {broker.acl}\n"
    )
    proc = _spawn(conf)
    broker.pid = proc.pid
    try:
        wait_until(lambda: _accepts(port), timeout=10, what="the broker to listen")
        yield broker
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _spawn(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Session:
    client: mqtt.Client
    connack: list[ReasonCode] = field(default_factory=list)
    suback: list[ReasonCode] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


def connect(port: int, user: str, secret: str) -> Session:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex, protocol=mqtt.MQTTv5
    )
    session = Session(client)
    client.username_pw_set(user, secret)
    client.on_connect = lambda c, u, f, rc, p: session.connack.append(rc)
    client.on_subscribe = lambda c, u, mid, rcs, p: session.suback.extend(rcs)
    client.on_message = lambda c, u, m: session.received.append(m.topic)
    client.on_disconnect = lambda c, u, f, rc, p: session.disconnected.set()
    client.connect("127.0.0.1", port, keepalive=30, clean_start=True, properties=Properties(1))
    client.loop_start()
    wait_until(lambda: bool(session.connack), timeout=10, what="CONNACK")
    return session


def close(*sessions: Session) -> None:
    for s in sessions:
        s.client.disconnect()
        s.client.loop_stop()


async def credential(
    conn: asyncpg.Connection, client: uuid.UUID, device: uuid.UUID
) -> tuple[uuid.UUID, str]:
    secret = passwords.new_secret()
    async with tenant_transaction(conn, None, staff=True):
        cid = await store.insert_credential(
            conn, client, device, passwords.hash_secret(secret), None
        )
    return cid, secret


def test_our_hash_verifies_and_has_the_mosquitto_shape() -> None:
    hashed = passwords.hash_secret("s3cret")
    assert passwords.verify("s3cret", hashed)
    assert not passwords.verify("other", hashed)
    parts = hashed.encoded.split("$")
    assert parts[1:3] == ["7", "101"]
    assert len(hashed.salt) == 12


async def test_a_device_is_confined_to_its_own_topics_and_revocation_disconnects(
    owner_conn: asyncpg.Connection, cred_broker: Broker
) -> None:
    tenant_a, tenant_b = await make_client(owner_conn), await make_client(owner_conn)
    dev_a, serial_a = await make_device(owner_conn, tenant_a)
    dev_b, serial_b = await make_device(owner_conn, tenant_b)
    _dev_c, serial_c = await make_device(owner_conn, tenant_a)  # same tenant as A
    cred_a, secret_a = await credential(owner_conn, tenant_a, dev_a)
    await credential(owner_conn, tenant_b, dev_b)
    assert await cred_broker.reconcile(owner_conn)
    assert not await cred_broker.reconcile(owner_conn), "unchanged content reloads nothing"

    refused = connect(cred_broker.port, serial_a, "wrong")
    assert refused.connack[0].is_failure, "a wrong password is refused at CONNECT"
    close(refused)

    ingest = connect(cred_broker.port, "lifebox-ingest", INGEST_SECRET)
    assert not ingest.connack[0].is_failure
    ingest.client.subscribe("lifebox/v1/#", qos=1)
    wait_until(lambda: bool(ingest.suback), timeout=10, what="SUBACK")

    a = connect(cred_broker.port, serial_a, secret_a)
    assert not a.connack[0].is_failure, "the broker accepts our $7$ hash"
    for other in (serial_b, serial_c):
        a.client.publish(f"lifebox/v1/{other}/telemetry", b"{}", qos=1).wait_for_publish(10)
    a.client.publish(f"lifebox/v1/{serial_a}/telemetry", b"{}", qos=1).wait_for_publish(10)
    own = f"lifebox/v1/{serial_a}/telemetry"
    wait_until(lambda: own in ingest.received, timeout=10, what="A's own reading")
    assert ingest.received == [own], "A's publishes to B's and C's topics were delivered"

    a.client.subscribe(
        [(f"lifebox/v1/{serial_b}/commands/#", 1), (f"lifebox/v1/{serial_a}/commands/#", 1)]
    )
    wait_until(lambda: len(a.suback) == 2, timeout=10, what="SUBACK")
    # mosquitto 2.0.11 grants the SUBACK and enforces `read` at delivery: B's command
    # (published first) never reaches A, A's own does.
    serve = connect(cred_broker.port, "lifebox-dispatch", DISPATCH_SECRET)
    for serial in (serial_b, serial_a):
        serve.client.publish(f"lifebox/v1/{serial}/commands/1", b"{}", qos=1).wait_for_publish(10)
    mine = f"lifebox/v1/{serial_a}/commands/1"
    wait_until(lambda: mine in a.received, timeout=10, what="A's own command")
    assert a.received == [mine], "A received B's command"

    async with tenant_transaction(owner_conn, None, staff=True):
        assert await store.revoke_credential(owner_conn, cred_a, None)
    assert await cred_broker.reconcile(owner_conn)
    assert a.disconnected.wait(10), "the revoked credential's live session stays open"
    again = connect(cred_broker.port, serial_a, secret_a)
    assert again.connack[0].is_failure, "a revoked credential is refused at CONNECT"
    close(again, a, ingest, serve)


async def test_the_broker_is_given_only_live_credentials_of_active_devices_and_clients(
    owner_conn: asyncpg.Connection,
) -> None:
    live_client, suspended = await make_client(owner_conn), await make_client(owner_conn)
    dev_ok, serial_ok = await make_device(owner_conn, live_client)
    dev_new, serial_new = await make_device(owner_conn, live_client, status="provisioned")
    dev_off, serial_off = await make_device(owner_conn, live_client, status="disabled")
    dev_rev, serial_rev = await make_device(owner_conn, live_client)
    dev_sus, serial_sus = await make_device(owner_conn, suspended)
    for client, device in (
        (live_client, dev_ok),
        (live_client, dev_new),
        (live_client, dev_off),
        (suspended, dev_sus),
    ):
        await credential(owner_conn, client, device)
    revoked, _ = await credential(owner_conn, live_client, dev_rev)
    async with tenant_transaction(owner_conn, None, staff=True):
        assert await store.revoke_credential(owner_conn, revoked, None)
        await owner_conn.execute("UPDATE clients SET status = 'suspended' WHERE id = $1", suspended)
        names = {user for user, _ in await store.broker_entries(owner_conn)}
    assert {serial_ok, serial_new} <= names
    assert not names & {serial_off, serial_rev, serial_sus}
