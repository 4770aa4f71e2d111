"""`lifebox dev` as a new user runs it: up, healthy, measurable, and gone after Ctrl-C."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lifebox_grpc.runtime.ports import free_port
from tests.helpers.processes import processes_mentioning
from tests.helpers.services import private_tmpdir
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.timeout(240)


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URL
        return response.read().decode()


def _run_dev_once(home: Path) -> str:
    ports = {name: free_port() for name in ("GRPC", "HTTP", "INGEST_METRICS")}
    env = {
        **os.environ,
        "LIFEBOX_HOME": str(home),
        **{f"LIFEBOX_{name}_PORT": str(port) for name, port in ports.items()},
    }
    for name in ("DATABASE_URL", "OWNER_DATABASE_URL", "INGEST_DATABASE_URL", "MQTT_URL"):
        env.pop(f"LIFEBOX_{name}", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifebox_grpc.cli", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: proc.poll() is not None or _serving(ports["GRPC"]), 120, "health")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert "process_resident_memory_bytes" in _get(f"http://127.0.0.1:{ports['HTTP']}/metrics")
        assert "lifebox_grpc_requests_total" in _get(f"http://127.0.0.1:{ports['HTTP']}/metrics")
        ingest_metrics = wait_until(
            lambda: _try_get(f"http://127.0.0.1:{ports['INGEST_METRICS']}/metrics"),
            30,
            "ingest metrics",
        )
        assert "lifebox_ingest_rows_total" in ingest_metrics
        assert processes_mentioning(str(home)), "dev started no postgres/mosquitto under home"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    return output


def _try_get(url: str) -> str | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_dev_starts_serves_and_stops_cleanly_then_reuses_its_cluster() -> None:
    home = private_tmpdir("lifebox-test-dev-") / "home"
    first = _run_dev_once(home)
    assert "initialising PostgreSQL 15 cluster" in first
    assert processes_mentioning(str(home)) == [], "a child outlived lifebox dev"

    credentials = home / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    password = next(
        line.split("=", 1)[1]
        for line in credentials.read_text().splitlines()
        if line.startswith("password=")
    )
    assert password not in first, "the admin password was printed"

    before = credentials.read_text()
    second = _run_dev_once(home)
    assert "reusing cluster" in second
    assert processes_mentioning(str(home)) == []
    assert credentials.read_text() == before, "the first admin credential changed on restart"
