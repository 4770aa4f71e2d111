"""`lifebox db` against the embedded cluster of a running `lifebox dev`, with no settings but
the home: the bootstrap's lifebox_backup role backs up, the embedded superuser restores and
resets, and dev keeps running through it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.db_ops import lifebox
from tests.helpers.services import private_tmpdir

pytestmark = pytest.mark.timeout(400)
PORTS = (
    "GRPC_PORT",
    "HTTP_PORT",
    "INGEST_METRICS_PORT",
    "BROKER_SYNC_METRICS_PORT",
    "DISPATCH_METRICS_PORT",
    "MQTT_TLS_PORT",
    "MQTT_MTLS_PORT",
)


@pytest.fixture(scope="module")
def dev_home() -> Iterator[Path]:
    """A running `lifebox dev` (demo tenant included); yields its home."""
    base = private_tmpdir("lifebox-test-dbdev-")
    home = base / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")} | {
        "LIFEBOX_HOME": str(home),
        **{f"LIFEBOX_{name}": "0" for name in PORTS},
    }
    out = base / "dev.out"
    with out.open("w") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "lifebox_grpc.cli", "dev"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        deadline = time.monotonic() + 180
        while "ready in" not in out.read_text():
            assert dev.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        yield home
        assert dev.poll() is None, out.read_text()  # dev outlived the commands below
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        shutil.rmtree(base, ignore_errors=True)


def _db(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return lifebox(*args, env={"LIFEBOX_HOME": str(home)}, cwd=cwd)


def test_status_backup_reset_and_restore_on_the_embedded_cluster(
    dev_home: Path, tmp_path: Path
) -> None:
    shown = _db(dev_home, "db", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["connection"]["user"] == "lifebox_backup"
    assert status["pending_migrations"] == []

    made = _db(dev_home, "db", "backup", cwd=tmp_path)  # default name, in the cwd
    assert made.returncode == 0, made.stderr
    (dump,) = tmp_path.glob("lifebox-*.dump")
    assert (dump.stat().st_mode & 0o777) == 0o600

    dry = _db(dev_home, "migrate", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "database is up to date"

    reset = _db(dev_home, "db", "reset")  # the embedded cluster: no --yes-really needed
    assert reset.returncode == 0, reset.stderr
    after_reset = json.loads(_db(dev_home, "db", "status", "--json").stdout)
    demo = [t for t in after_reset["tables"] if t["name"] == "devices"]
    assert demo  # migrated again

    refused = _db(dev_home, "db", "restore", str(dump))
    assert refused.returncode == 2
    assert "not empty" in refused.stderr
    restored = _db(dev_home, "db", "restore", str(dump), "--force")
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stderr
