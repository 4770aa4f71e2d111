"""What a `kill -9` of mosquitto loses, per persistence setting, in one run. Asserts nothing.

    .venv/bin/python benchmarks/broker_durability.py [--queued 10000,100000,300000]

For each setting and queue size: a fresh mosquitto (the embedded broker's limits, persistence
on), an offline persistent MQTT 5 session subscribed to the telemetry topics (what ingest's
session is while no worker runs, or while it falls behind), the load generator publishing N
QoS 1 readings of ~900 bytes as fast as the broker acknowledges them (4 connections), then
SIGKILL of the broker right after the last PUBACK, a restart on the same store, and the
session reconnected (``mosquitto_sub``): how many of the N acknowledged messages survived,
and the publishing rate while the queue grew (each save writes the whole store, so saving
often costs more as the queue grows).

Settings: ``autosave_interval S`` with ``autosave_on_changes false`` saves every S seconds;
with ``true``, every S changes to the store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifebox_grpc.loadgen.run import binary_path, render_bodies
from lifebox_grpc.runtime.mosquitto import DEFAULT_MAX_QUEUED_BYTES, SERVICE_USER
from lifebox_grpc.runtime.ports import free_port, wait_for_port

SETTINGS = [
    ("every 30 s (before)", 30, False),
    ("every 1 s (chosen)", 1, False),
    ("every 1,000 changes", 1000, True),
    ("every 10,000 changes", 10000, True),
]
TOPICS = "lifebox/v1/+/telemetry"


def start(folder: Path, port: int, interval: int, on_changes: bool) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {folder}/\nautosave_interval {interval}\n"
        f"autosave_on_changes {'true' if on_changes else 'false'}\n"
        f"max_queued_bytes {DEFAULT_MAX_QUEUED_BYTES * 4}\nmax_queued_messages 10000000\n"
        "max_inflight_messages 10000\n"
    )
    _own(folder)
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    if not wait_for_port(port, timeout=10):
        raise SystemExit("mosquitto did not start")
    return proc


def session(port: int, wait_s: int) -> int:
    """Connect the persistent session, take what is queued for wait_s; messages received."""
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-i", "bench-ingest", "-c", "-q", "1", "-t", TOPICS,
         "-V", "mqttv5", "-x", "3600", "-W", str(wait_s)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return len(out.stdout.splitlines())


def publish(port: int, count: int, files: Path) -> float:
    out = subprocess.run(
        [str(binary_path()), "--host", "127.0.0.1", "--port", str(port),
         "--serials-file", str(files / "serials"), "--bodies-file", str(files / "bodies"),
         "--per-message", "1", "--rate", "0", "--qos", "1", "--connections", "4",
         "--messages", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if int(result["messages"]) != count:
        raise SystemExit(f"the load generator got {result['messages']} PUBACKs of {count}")
    return count / float(result["seconds"])


def measure(root: Path, interval: int, on_changes: bool, count: int) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(dir=root))
    port = free_port()
    broker = start(folder, port, interval, on_changes)
    try:
        session(port, 1)  # the session exists, subscribed, offline
        rate = publish(port, count, root)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker = start(folder, port, interval, on_changes)
        return rate, session(port, 3 + count // 20000)
    finally:
        broker.terminate()
        broker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", default="10000,100000,300000")
    args = parser.parse_args()
    counts = [int(n) for n in args.queued.split(",")]
    with tempfile.TemporaryDirectory(prefix="lifebox-durability-") as tmp:
        root = Path(tmp)
        _own(root)
        (root / "serials").write_text("".join(f"DUR-{i:06d}\n" for i in range(1, 201)))
        (root / "bodies").write_text("\n".join(render_bodies()) + "\n")
        print(f"{'saves':<22}{'queued':>9}{'publish msg/s':>15}{'vs before':>11}{'survived':>18}")
        for count in counts:
            before = 0.0
            for name, interval, on_changes in SETTINGS:
                rate, survived = measure(root, interval, on_changes, count)
                before = before or rate
                print(
                    f"{name:<22}{count:>9,}{rate:>15,.0f}{rate / before:>10.2f}x"
                    f"{survived:>10,} of {count:,}",
                    flush=True,
                )


def _own(folder: Path) -> None:
    """Run as root, mosquitto drops to its own user, which must be able to write its store."""
    if os.geteuid() == 0:
        with contextlib.suppress(LookupError):
            shutil.chown(folder, SERVICE_USER, SERVICE_USER)


if __name__ == "__main__":
    main()
