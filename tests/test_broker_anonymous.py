"""Anonymous access is off on the embedded broker (dev, tests, benchmarks); the accounts it
makes log in with their own passwords only, and a device's credential works on it."""

from __future__ import annotations

import stat

import asyncpg

from lifebox_grpc.broker import files
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers.broker import connect, device_credential
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import TEST_PUBLISHER
from tests.helpers.wait import wait_until


def test_an_anonymous_connect_is_refused(broker: EmbeddedMosquitto) -> None:
    session = connect(broker.port, None, None)
    assert session.refused, "the embedded broker let an anonymous client in"
    session.close()


def test_a_service_account_needs_its_own_password(broker: EmbeddedMosquitto) -> None:
    wrong = connect(broker.port, files.INGEST, broker.accounts[files.SERVE])
    assert wrong.refused
    wrong.close()
    right = connect(broker.port, files.INGEST, broker.accounts[files.INGEST])
    assert not right.refused
    right.close()


def test_the_broker_config_has_no_anonymous_access_and_private_account_files(
    broker: EmbeddedMosquitto,
) -> None:
    conf = (broker.base_dir / "mosquitto.conf").read_text()
    assert "allow_anonymous false\n" in conf
    assert "allow_anonymous true" not in conf
    assert f"password_file {broker.password_path}\n" in conf
    assert f"acl_file {broker.acl_path}\n" in conf
    for path in (
        broker.base_dir / "accounts.json",
        broker.service_passwords_path,
        broker.password_path,
        broker.acl_path,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert broker.accounts[TEST_PUBLISHER] not in broker.password_path.read_text()


async def test_a_device_credential_logs_in_on_the_session_broker_and_is_confined(
    owner_conn: asyncpg.Connection, broker: EmbeddedMosquitto
) -> None:
    client = await make_client(owner_conn)
    device, serial = await make_device(owner_conn, client)
    _other, other_serial = await make_device(owner_conn, client)
    _, secret = await device_credential(owner_conn, client, device, broker)
    watcher = connect(broker.port, files.INGEST, broker.accounts[files.INGEST])
    watcher.client.subscribe("lifebox/v1/+/telemetry", qos=1)
    wait_until(lambda: bool(watcher.suback), timeout=10, what="SUBACK")
    dev = connect(broker.port, serial, secret)
    assert not dev.refused
    dev.client.publish(f"lifebox/v1/{other_serial}/telemetry", b"{}", qos=1).wait_for_publish(10)
    dev.client.publish(f"lifebox/v1/{serial}/telemetry", b"{}", qos=1).wait_for_publish(10)
    own = f"lifebox/v1/{serial}/telemetry"
    wait_until(lambda: own in watcher.received, timeout=10, what="the device's own reading")
    assert watcher.received == [own]
    dev.close()
    watcher.close()
