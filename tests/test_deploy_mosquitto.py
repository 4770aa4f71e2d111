"""The compose broker's accounts, as deploy/mosquitto makes them, on a real mosquitto: the
password file comes from the environment without a password on any command line, and the
healthcheck compose runs passes with the health account alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lifebox_grpc.runtime.ports import free_port
from tests.helpers.services import private_tmpdir
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
        "MQTT_DEVICE_PASSWORD": "device-secret-3",
    }
    made = subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh")], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert "ingest-secret-1" not in (auth / "passwd").read_text(), "stored in plain text"
    port = free_port()
    acl = base / "acl"
    shutil.copy(DEPLOY / "acl", acl)
    conf = base / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {auth / 'passwd'}\n"
        f"acl_file {acl}\nsys_interval 1\n"
    )
    shutil.chown(acl, "mosquitto")
    shutil.chown(conf, "mosquitto")
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
