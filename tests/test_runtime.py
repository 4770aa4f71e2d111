"""The embedded PostgreSQL and mosquitto that `lifebox dev` and the tests start."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import threading
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.broker import files
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.runtime.home import load_or_create_secrets
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.runtime.postgres import (
    APP_ROLE,
    INGEST_ROLE,
    OWNER_ROLE,
    SOCKET_DIR,
    SYNC_ROLE,
    EmbeddedPostgres,
    RolePasswords,
    dsn,
)
from tests.helpers.services import TEST_PUBLISHER, Database, private_tmpdir


async def test_app_role_is_not_owner_and_cannot_bypass_rls(database: Database) -> None:
    conn = await asyncpg.connect(database.app_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user"
        )
        assert tuple(row) == (False, False, False, False)
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )
        assert owner == "lifebox_owner"
    finally:
        await conn.close()


async def test_own_processes_connect_through_the_private_socket(database: Database) -> None:
    server = database.server
    assert server.socket_dir is not None
    assert f"host={server.socket_dir}" in database.app_dsn
    assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
    conn = await asyncpg.connect(database.app_dsn)
    try:  # a Unix-socket backend has no client address
        assert await conn.fetchval("SELECT inet_client_addr()") is None
    finally:
        await conn.close()
    tcp = dsn(server.port, APP_ROLE, server.passwords.app)
    conn = await asyncpg.connect(tcp)  # loopback TCP stays open for other clients
    try:
        assert str(await conn.fetchval("SELECT inet_client_addr()")) == "127.0.0.1"
    finally:
        await conn.close()


def test_a_socket_path_too_long_falls_back_to_tcp() -> None:
    deep = private_tmpdir("lifebox-test-deep-") / ("d" * 90)
    deep.mkdir()
    deep.chmod(0o711)
    server = EmbeddedPostgres(deep / "pg", RolePasswords("s2", "o2", "a2", "i2"))
    server.start()
    try:
        assert server.socket_dir is None
        assert "@127.0.0.1:" in server.dsn(APP_ROLE)
        asyncio.run(server.bootstrap())
        assert asyncio.run(_fetch(server.dsn(OWNER_ROLE), "SELECT 1")) == 1
    finally:
        server.stop()
        shutil.rmtree(deep.parent, ignore_errors=True)


def test_an_older_cluster_gets_the_socket_and_keeps_its_operator_lines() -> None:
    base = private_tmpdir("lifebox-test-hba-")
    server = EmbeddedPostgres(base / "pg", RolePasswords("s3", "o3", "a3", "i3"))
    server.init()
    hba = base / "pg" / "pg_hba.conf"
    operator_line = "host all all 10.0.0.0/8 scram-sha-256"
    hba.write_text(f"host all all 127.0.0.1/32 scram-sha-256\n{operator_line}\n")
    server.start()
    try:
        lines = hba.read_text().splitlines()
        assert operator_line in lines
        assert lines[0] == "local all all scram-sha-256"
        asyncio.run(server.bootstrap())
        assert server.socket_dir is not None
        assert asyncio.run(_fetch(server.dsn(OWNER_ROLE), "SELECT inet_client_addr()")) is None
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_folder_that_refuses_sockets_falls_back_to_tcp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = private_tmpdir("lifebox-test-nosock-")
    refusing = base / "no-sockets"
    refusing.mkdir(mode=0o500)  # nobody may create a socket in it
    server = EmbeddedPostgres(base / "pg", RolePasswords("s4", "o4", "a4", "i4"))
    monkeypatch.setattr(server, "_prepare_socket_dir", lambda port: refusing)
    server.start()
    try:
        assert server.socket_dir is None
        asyncio.run(server.bootstrap())
        assert asyncio.run(_fetch(server.dsn(OWNER_ROLE), "SELECT 1")) == 1
    finally:
        server.stop()
        refusing.chmod(0o700)
        shutil.rmtree(base, ignore_errors=True)


def test_endpoints_use_the_socket_only_while_it_is_there(tmp_path: Path) -> None:
    (tmp_path / "pg.port").write_text("54329\n")
    settings = Settings(mode=Mode.DEV, home=tmp_path, mqtt_url="mqtt://127.0.0.1:1")
    load_or_create_secrets(tmp_path)
    assert "@127.0.0.1:54329/" in resolve_endpoints(settings).app_dsn
    folder = tmp_path / SOCKET_DIR
    folder.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(folder / ".s.PGSQL.54329"))
        app = resolve_endpoints(settings).app_dsn
    assert app.endswith(f"@/lifebox?host={folder}&port=54329")


async def test_passwords_are_required_and_stored_as_scram(database: Database) -> None:
    wrong = database.app_dsn.replace("lifebox_app:", "lifebox_app:x")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)
    conn = await asyncpg.connect(database.superuser_dsn)
    try:
        hashes = await conn.fetch(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'lifebox_%'"
        )
        # Every login role the bootstrap makes (others may be added beside them).
        assert {OWNER_ROLE, APP_ROLE, INGEST_ROLE, SYNC_ROLE} <= {h["rolname"] for h in hashes}
        assert all(h["rolpassword"].startswith("SCRAM-SHA-256$") for h in hashes)
    finally:
        await conn.close()


def test_cluster_is_reused_and_data_persists_across_restarts() -> None:
    base = private_tmpdir("lifebox-test-reuse-")
    passwords = RolePasswords("s1", "o1", "a1", "i1")
    first = EmbeddedPostgres(base / "pg", passwords)
    first.start()
    try:
        asyncio.run(first.bootstrap())
        asyncio.run(_exec(first.dsn("lifebox_owner"), "CREATE TABLE marker AS SELECT 42 AS v"))
    finally:
        first.stop()
    second = EmbeddedPostgres(base / "pg", passwords)
    assert second.initialized
    second.start()
    try:
        asyncio.run(second.bootstrap())  # idempotent on an existing cluster
        assert asyncio.run(_fetch(second.dsn("lifebox_owner"), "SELECT v FROM marker")) == 42
    finally:
        second.stop()


async def _exec(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_broker_config_is_loopback_persistent_and_never_1883(broker: EmbeddedMosquitto) -> None:
    conf = (broker.base_dir / "mosquitto.conf").read_text()
    assert broker.port != 1883
    assert f"listener {broker.port} 127.0.0.1" in conf
    assert "persistence true" in conf
    assert "max_queued_messages" in conf
    assert "max_inflight_messages" in conf


def test_broker_delivers_qos1_messages(broker: EmbeddedMosquitto) -> None:
    received = threading.Event()
    payloads: list[bytes] = []
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payloads.append(msg.payload)
        received.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.username_pw_set(files.INGEST, broker.accounts[files.INGEST])  # no anonymous access
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        sub.subscribe("lifebox/v1/runtime-test/telemetry", qos=1)
        assert subscribed.wait(10)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.username_pw_set(TEST_PUBLISHER, broker.accounts[TEST_PUBLISHER])
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("lifebox/v1/runtime-test/telemetry", b'{"temperature_c": 21.5}', qos=1)
        assert received.wait(10)
        assert payloads == [b'{"temperature_c": 21.5}']
        pub.loop_stop()
        pub.disconnect()
    finally:
        sub.loop_stop()
        sub.disconnect()
