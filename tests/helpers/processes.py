"""Processes the tests start or look for: `lifebox serve` as its own process, and leak checks
by what command lines name after a stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.runtime.ports import free_port
from tests.helpers.services import Database
from tests.helpers.wait import wait_until


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append((int(proc.name), cmdline.strip()))
    return found


@contextlib.contextmanager
def serve_process(
    database: Database, broker: EmbeddedMosquitto, signing_key: str, *, timeout: float = 60
) -> Iterator[str]:
    """`lifebox serve` as its own process, as deployments run it; yields host:port once it
    is SERVING and stops it afterwards."""
    port = free_port("127.0.0.1")
    home = tempfile.mkdtemp(prefix="lifebox-serve-home-")
    env = {
        **os.environ,
        "LIFEBOX_DATABASE_URL": database.app_dsn,
        "LIFEBOX_OWNER_DATABASE_URL": database.owner_dsn,
        "LIFEBOX_INGEST_DATABASE_URL": database.ingest_dsn,
        "LIFEBOX_MQTT_URL": broker.url,
        "LIFEBOX_GRPC_PORT": str(port),
        "LIFEBOX_HTTP_PORT": "0",
        "LIFEBOX_JWT_SIGNING_KEY": signing_key,
        "LIFEBOX_HOME": home,
        # The session's other tests sign in from this same address (hundreds of logins by
        # the matrices); the per-address limit is not what these processes are started for.
        "LIFEBOX_LOGIN_ATTEMPTS_PER_ADDRESS": "100000",
    }
    proc = subprocess.Popen([sys.executable, "-m", "lifebox_grpc.cli", "serve"], env=env)
    address = f"127.0.0.1:{port}"

    def serving() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    try:
        wait_until(serving, timeout, "lifebox serve to be SERVING")
        yield address
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(home, ignore_errors=True)
