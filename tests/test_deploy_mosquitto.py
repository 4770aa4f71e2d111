"""The compose broker's accounts, as deploy/mosquitto makes them, on a real mosquitto: the
password file comes from the environment without a password on any command line, and the
healthcheck compose runs passes with the health account alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from lifebox_grpc.runtime.ports import free_port
from tests.helpers.broker import can_log_in, connect, device_credential, lease_key
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database, private_tmpdir
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "mosquitto"


@pytest.fixture
def compose_broker() -> Iterator[tuple[Path, int]]:
    """mosquitto with deploy/mosquitto's password file (made by make-passwd.sh) and ACL."""
    base = private_tmpdir("lifebox-test-compose-mqtt-")
    auth = base / "auth"
    auth.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "AUTH_DIR": str(auth),
        "MQTT_INGEST_PASSWORD": "ingest-secret-1",
        "MQTT_SERVE_PASSWORD": "serve-secret-2",
        "ACL_SOURCE": str(DEPLOY / "acl"),
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh")], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert "ingest-secret-1" not in (auth / "passwd").read_text(), "stored in plain text"
    assert (auth / "acl").read_text() == (DEPLOY / "acl").read_text()
    assert (auth / "passwd").read_text() == (auth / "service.passwd").read_text()
    port = free_port()
    conf = base / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {auth / 'passwd'}\n"
        f"acl_file {auth / 'acl'}\npid_file {base / 'mosquitto.pid'}\nsys_interval 1\n"
    )
    shutil.chown(conf, "mosquitto")
    shutil.chown(base, "mosquitto")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _accepts(port), timeout=10, what="the broker to listen")
        yield auth, port
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _healthcheck(auth: Path, port: int) -> subprocess.CompletedProcess[str]:
    """The compose healthcheck's own command line, pointed at this broker."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shell = compose["services"]["mosquitto"]["healthcheck"]["test"][1]
    shell = shell.replace("$$", "$").replace("/mosquitto/auth", str(auth))
    shell = shell.replace("-p 1883", f"-p {port}")
    return subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=20)


def test_the_compose_healthcheck_passes_with_the_health_account(
    compose_broker: tuple[Path, int],
) -> None:
    auth, port = compose_broker
    result = _healthcheck(auth, port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split()[0].isdigit()  # "$SYS/broker/uptime": "N seconds"


def test_the_service_accounts_log_in_with_their_passwords_only(
    compose_broker: tuple[Path, int],
) -> None:
    _auth, port = compose_broker

    def publish(user: str, password: str) -> int:
        options = Path(private_tmpdir("lifebox-test-opts-")) / "mosquitto_pub"
        options.write_text(f"-u {user}\n-P {password}\n")
        env = {"PATH": os.environ["PATH"], "XDG_CONFIG_HOME": str(options.parent)}
        argv = ["mosquitto_pub", "-p", str(port), "-t", "lifebox/v1/X/commands/1", "-m", "{}"]
        return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode

    assert publish("lifebox-serve", "serve-secret-2") == 0
    assert publish("lifebox-serve", "wrong") != 0
    assert publish("lifebox-ingest", "ingest-secret-1") == 0


# --- broker reconciler (issue 13) ---
async def test_broker_sync_once_adds_a_device_to_the_compose_brokers_files(
    compose_broker: tuple[Path, int], database: Database, owner_conn: asyncpg.Connection
) -> None:
    """What the sidecar does, on the files make-passwd.sh made: the device gets in, the
    service accounts keep their passwords, an anonymous client stays out."""
    auth, port = compose_broker
    client = await make_client(owner_conn)
    device, serial = await make_device(owner_conn, client)
    _, secret = await device_credential(owner_conn, client, device)
    assert not can_log_in(port, serial, secret)
    env = {
        "PATH": os.environ["PATH"],
        "LIFEBOX_MODE": "prod",
        "LIFEBOX_BROKER_SYNC_DATABASE_URL": database.broker_sync_dsn,
        "LIFEBOX_BROKER_PASSWORD_FILE": str(auth / "passwd"),
        "LIFEBOX_BROKER_ACL_FILE": str(auth / "acl"),
        "LIFEBOX_BROKER_PID_FILE": str(auth.parent / "mosquitto.pid"),
        "LIFEBOX_BROKER_SERVICE_PASSWORDS_FILE": str(auth / "service.passwd"),
        "LIFEBOX_BROKER_FILE_OWNER": "mosquitto",
        "LIFEBOX_BROKER_SYNC_LEASE_KEY": str(lease_key(port)),  # not the session broker's
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lifebox_grpc.cli", "broker-sync", "--once",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    wait_until(lambda: can_log_in(port, serial, secret), 10, "the device let in after SIGHUP")
    assert can_log_in(port, "lifebox-ingest", "ingest-secret-1")
    assert not can_log_in(port, "lifebox-ingest", "wrong")
    anonymous = connect(port, None, None)
    assert anonymous.refused
    anonymous.close()
