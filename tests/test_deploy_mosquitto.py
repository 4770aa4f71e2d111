"""The compose broker's accounts, as deploy/mosquitto makes them, on a real mosquitto: the
password file comes from the environment without a password on any command line, and the
healthcheck compose runs passes with the health account alone."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml

from lifebox_grpc.broker import tls
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.broker import can_log_in, connect, device_credential, lease_key
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database, private_tmpdir
from tests.helpers.wait import wait_until
from tests.test_device_certificates_broker import admits, device_key_and_csr

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "mosquitto"


@dataclass(frozen=True)
class ComposeBroker:
    """deploy/mosquitto/mosquitto.conf running here: its three listeners on free ports."""

    auth: Path
    pki: Path
    port: int  # 1883: LifeBox's services
    tls_port: int  # 8883: devices, password over TLS
    mtls_port: int  # 8884: devices, client certificate

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"


@pytest.fixture
def compose_broker() -> Iterator[ComposeBroker]:
    """The shipped mosquitto.conf with the files make-passwd.sh and `lifebox pki` make, as
    compose runs them, paths and ports moved here."""
    base = private_tmpdir("lifebox-test-compose-mqtt-")
    auth = base / "auth"
    auth.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "AUTH_DIR": str(auth),
        "MQTT_INGEST_PASSWORD": "ingest-secret-1",
        "MQTT_SERVE_PASSWORD": "serve-secret-2",
        "MQTT_BROKER_ADMIN_PASSWORD": "admin-secret-3",
        "MQTT_DISPATCH_PASSWORD": "dispatch-secret-4",  # --- commands (issue 14)
        "ACL_SOURCE": str(DEPLOY / "acl"),
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh")], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert "ingest-secret-1" not in (auth / "passwd").read_text(), "stored in plain text"
    assert (auth / "acl").read_text() == (DEPLOY / "acl").read_text()
    assert (auth / "passwd").read_text() == (auth / "service.passwd").read_text()
    pki = base / "pki"
    mosquitto_ids = f"{pwd.getpwnam('mosquitto').pw_uid}:{pwd.getpwnam('mosquitto').pw_gid}"
    argv = _compose_command("device-pki")
    argv = [a.replace("/mosquitto/auth", str(auth)).replace("/pki", str(pki)) for a in argv]
    argv = [mosquitto_ids if a in ("1883:1883", "10001:1883") else a for a in argv]
    pki_run = subprocess.run(
        [sys.executable, "-m", "lifebox_grpc.cli", *argv], capture_output=True, text=True
    )
    assert pki_run.returncode == 0, pki_run.stdout + pki_run.stderr
    broker = ComposeBroker(auth, pki, free_port(), free_port(), free_port())
    conf = base / "mosquitto.conf"
    text = (DEPLOY / "mosquitto.conf").read_text()
    for shipped, here in (
        ("/mosquitto/auth", str(auth)),
        ("/mosquitto/run", str(base)),
        ("/mosquitto/data/", f"{base}/"),
        ("/pki/", f"{pki}/"),
        ("listener 1883", f"listener {broker.port} 127.0.0.1"),
        ("listener 8883", f"listener {broker.tls_port} 127.0.0.1"),
        ("listener 8884", f"listener {broker.mtls_port} 127.0.0.1"),
    ):
        text = text.replace(shipped, here)
    conf.write_text(text + "sys_interval 1\n")
    for path in (conf, base, pki):
        shutil.chown(path, "mosquitto")
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _accepts(broker.mtls_port), timeout=10, what="the broker to listen")
        yield broker
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _compose_command(service: str) -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command: list[str] = compose["services"][service]["command"]
    return [part.replace("${MQTT_PUBLIC_HOSTNAME:-localhost}", "127.0.0.1") for part in command]


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
    compose_broker: ComposeBroker,
) -> None:
    result = _healthcheck(compose_broker.auth, compose_broker.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split()[0].isdigit()  # "$SYS/broker/uptime": "N seconds"


def test_the_service_accounts_log_in_with_their_passwords_only(
    compose_broker: ComposeBroker,
) -> None:
    port = compose_broker.port

    def publish(user: str, password: str) -> int:
        options = Path(private_tmpdir("lifebox-test-opts-")) / "mosquitto_pub"
        options.write_text(f"-u {user}\n-P {password}\n")
        env = {"PATH": os.environ["PATH"], "XDG_CONFIG_HOME": str(options.parent)}
        argv = ["mosquitto_pub", "-p", str(port), "-t", "lifebox/v1/X/commands/1", "-m", "{}"]
        return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode

    assert publish("lifebox-serve", "serve-secret-2") == 0
    assert publish("lifebox-serve", "wrong") != 0
    assert publish("lifebox-ingest", "ingest-secret-1") == 0


# --- commands (issue 14) ---
def test_the_dispatch_account_may_publish_a_command_but_not_an_ack_and_serve_neither(
    compose_broker: ComposeBroker,
) -> None:
    port = compose_broker.port
    assert not can_log_in(port, "lifebox-dispatch", "wrong")
    # Ingest reads every device's acks and, by the device patterns every user gets, the
    # command topics named after itself: it sees whatever reaches either.
    ingest = connect(port, "lifebox-ingest", "ingest-secret-1")
    ingest.client.subscribe(
        [("lifebox/v1/+/commands/+/ack", 1), ("lifebox/v1/lifebox-ingest/commands/#", 1)]
    )
    wait_until(lambda: len(ingest.suback) == 2, timeout=10, what="SUBACK")
    dispatch = connect(port, "lifebox-dispatch", "dispatch-secret-4")
    serve = connect(port, "lifebox-serve", "serve-secret-2")
    assert not dispatch.refused
    assert not serve.refused
    base = "lifebox/v1/lifebox-ingest/commands"
    serve.client.publish(f"{base}/1", b"{}", qos=1).wait_for_publish(10)
    dispatch.client.publish(f"{base}/2/ack", b"{}", qos=1).wait_for_publish(10)  # forged
    dispatch.client.publish(f"{base}/3", b"{}", qos=1).wait_for_publish(10)
    wait_until(lambda: f"{base}/3" in ingest.received, timeout=10, what="the command")
    assert ingest.received == [f"{base}/3"], "serve published a command or dispatch an ack"
    for session in (ingest, dispatch, serve):
        session.close()


# --- broker reconciler (issue 13) ---
async def test_broker_sync_once_adds_a_device_to_the_compose_brokers_files(
    compose_broker: ComposeBroker, database: Database, owner_conn: asyncpg.Connection
) -> None:
    """What the sidecar does, on the files make-passwd.sh made: the device gets in over TLS
    (never on the services' plain listener), the service accounts keep their passwords, an
    anonymous client stays out."""
    b = compose_broker
    auth, port = b.auth, b.port
    client = await make_client(owner_conn)
    device, serial = await make_device(owner_conn, client)
    _, secret = await device_credential(owner_conn, client, device)
    assert not can_log_in(b.tls_port, serial, secret, ca=b.ca)
    metered, metered_serial = await make_device(owner_conn, client)
    key, csr = device_key_and_csr()
    issued = tls.Authority.load(b.ca, b.pki / "ca.key").issue_device(csr, metered_serial)
    async with tenant_transaction(owner_conn, None, staff=True):
        await device_credentials.insert_certificate(owner_conn, client, metered, issued, None)
    cert = (b.auth.parent / "metered.crt", b.auth.parent / "metered.key")
    cert[0].write_text(issued.pem)
    cert[1].write_bytes(key)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    shipped = compose["services"]["broker-sync"]["environment"]
    env = {
        **{k: v.replace("/pki/", f"{b.pki}/") for k, v in shipped.items() if "/pki/" in v},
        "PATH": os.environ["PATH"],
        "LIFEBOX_MODE": "prod",
        "LIFEBOX_BROKER_SYNC_DATABASE_URL": database.broker_sync_dsn,
        "LIFEBOX_BROKER_PASSWORD_FILE": str(auth / "passwd"),
        "LIFEBOX_BROKER_ACL_FILE": str(auth / "acl"),
        "LIFEBOX_BROKER_PID_FILE": str(auth.parent / "mosquitto.pid"),
        "LIFEBOX_BROKER_SERVICE_PASSWORDS_FILE": str(auth / "service.passwd"),
        "LIFEBOX_BROKER_FILE_OWNER": "mosquitto",
        "LIFEBOX_BROKER_SYNC_LEASE_KEY": str(lease_key(port)),  # not the session broker's
        "LIFEBOX_BROKER_SYNC_MQTT_URL": f"mqtt://lifebox-broker-admin:admin-secret-3@127.0.0.1:{port}",
        "LIFEBOX_BROKER_CERTIFICATE_ACL_FILE": str(auth / "acl-certs"),
        "LIFEBOX_BROKER_CRL_FILE": str(auth / "crl.pem"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lifebox_grpc.cli", "broker-sync", "--once",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    wait_until(
        lambda: can_log_in(b.tls_port, serial, secret, ca=b.ca), 10, "the device let in over TLS"
    )
    assert not can_log_in(port, serial, secret), "a device logged in on plain TCP"
    assert admits(b.mtls_port, metered_serial, b.ca, cert), "the certificate is refused"
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE device_credentials SET revoked_at = now() WHERE device_id = $1", metered
        )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lifebox_grpc.cli", "broker-sync", "--once", env=env
    )
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    wait_until(
        lambda: not admits(b.mtls_port, metered_serial, b.ca, cert),
        10,
        "the revoked certificate refused at the handshake",
    )
    assert can_log_in(port, "lifebox-ingest", "ingest-secret-1")
    assert not can_log_in(port, "lifebox-ingest", "wrong")
    anonymous = connect(port, None, None)
    assert anonymous.refused
    anonymous.close()
