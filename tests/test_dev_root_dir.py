"""`lifebox dev` as root from a checkout in a folder the postgres and mosquitto users cannot
enter (as a checkout under /root, mode 0700): the servers' files move to a place they can
reach, linked from the home, and the platform comes up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifebox_grpc.runtime.service_dirs import SERVICE_ENTRIES
from tests.helpers.services import private_tmpdir

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="only root's servers drop to other users"),
]


@pytest.fixture
def base() -> Iterator[Path]:
    path = private_tmpdir("lifebox-test-rootdir-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dev_runs_as_root_from_a_folder_the_servers_cannot_enter(base: Path) -> None:
    private = base / "root"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    checkout = private / "checkout"
    checkout.mkdir()
    service_root = base / "var-lib-lifebox"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")} | {
        "LIFEBOX_SERVICE_DATA_ROOT": str(service_root),
        **{
            f"LIFEBOX_{name}": "0"
            for name in (
                "GRPC_PORT",
                "HTTP_PORT",
                "INGEST_METRICS_PORT",
                "BROKER_SYNC_METRICS_PORT",
                "DISPATCH_METRICS_PORT",
                "PG_PORT",
                "MQTT_PORT",
                "MQTT_TLS_PORT",
                "MQTT_MTLS_PORT",
            )
        },
    }
    out = base / "dev.out"
    with out.open("w") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "lifebox_grpc.cli", "dev", "--no-demo"],
            cwd=checkout,  # the default home, .lifebox, is under the 0700 folder
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        deadline = time.monotonic() + 180
        while "ready in" not in out.read_text() and dev.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        assert dev.poll() is None, text
        assert "out of reach of the postgres and mosquitto users" in text
        home = checkout / ".lifebox"
        for name in ("pg", "pg-socket", "mqtt", "tls"):
            assert (home / name).is_symlink(), name
            assert (home / name).resolve().is_relative_to(service_root)
        assert set(SERVICE_ENTRIES) >= {"pg", "mqtt"}
        assert (home / "pg" / "PG_VERSION").exists()
        assert (home / "secrets.json").resolve().parent == home  # the secrets stay home
        assert (private.stat().st_mode & 0o777) == 0o700  # the user's folder is untouched
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert "stopped" in out.read_text()
