"""Processes the tests start or look for: `lifebox serve` as its own process, the worker
processes' shared start/metrics/stop, and leak checks by what command lines name."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
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


def scrape_metrics(port: int) -> str | None:
    """The Prometheus text a process serves on ``port`` (None: nothing answers yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def metric_value(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class MetricsProcess:
    """What every `lifebox` worker subprocess of the tests shares (ingest, dispatch,
    reactions): started until one of its gauges says it is up, read through its metrics,
    killed or stopped. Subclasses hold ``metrics_port`` and ``proc``."""

    metrics_port: int
    proc: subprocess.Popen[bytes] | None

    def _launch(
        self, command: str, env: dict[str, str], ready: str, what: str, log_path: Path | None
    ) -> None:
        """Run ``lifebox <command>`` with ``env`` (stderr to ``log_path`` when set) and wait
        until its gauge ``ready`` is 1."""
        argv = [sys.executable, "-m", "lifebox_grpc.cli", command]
        if log_path is None:
            self.proc = subprocess.Popen(argv, env=env)
        else:
            with log_path.open("ab") as log:
                self.proc = subprocess.Popen(argv, env=env, stderr=log)
        wait_until(
            lambda: (
                self.proc is not None and (self.proc.poll() is not None or self.metric(ready) == 1)
            ),
            60,
            what,
        )
        assert self.proc.poll() is None, f"lifebox {command} exited"

    def metric(self, name: str) -> float:
        text = scrape_metrics(self.metrics_port)
        return metric_value(text, name) if text else float("nan")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
