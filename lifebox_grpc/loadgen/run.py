"""The load generator: several publisher processes, each simulating a slice of the devices.

Each process keeps its own MQTT connection and publishes pre-rendered readings whose ``ts``
is stamped at publish time (so ingest can measure publish-to-commit latency), K readings per
message, QoS 1 by default, paced to a rate or as fast as the broker acknowledges.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_processes
from multiprocessing.sharedctypes import Synchronized
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.loadgen.readings import EXTRA_SHARE, reading

MAX_UNACKED = 2000
BODIES_PER_DEVICE = 8


@dataclass(frozen=True)
class LoadPlan:
    mqtt_url: str
    serials: list[str]
    per_message: int = 1
    rate: float = 0.0  # readings per second per device; 0 = as fast as possible
    duration_s: float | None = 10.0
    messages: int | None = None  # total messages; stops at whichever limit comes first
    processes: int = 2
    qos: int = 1


@dataclass(frozen=True)
class LoadReport:
    messages: int
    readings: int
    seconds: float

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0


def _bodies(rng: random.Random) -> list[bytes]:
    """Readings rendered once without ``ts``: `{"voltage_l1":…}` minus its opening brace."""
    import json

    out = []
    for seq in range(BODIES_PER_DEVICE):
        body = reading(rng, seq, 0, with_extra=rng.random() < EXTRA_SHARE)
        del body["ts"]
        out.append(json.dumps(body, separators=(",", ":")).encode()[1:])
    return out


def _publisher(
    plan: LoadPlan,
    serials: list[str],
    quota: int | None,
    sent: Synchronized[int],
    acked: Synchronized[int],
    start_at: float,
) -> None:
    rng = random.Random(hash(serials[0]) if serials else 0)
    bodies = _bodies(rng)
    url = urlsplit(plan.mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.max_inflight_messages_set(MAX_UNACKED)
    client.max_queued_messages_set(0)
    done = threading.Event()
    local = {"acked": 0}

    def on_publish(*_: object) -> None:
        local["acked"] += 1

    client.on_publish = on_publish
    client.on_connect = lambda *_: done.set()
    client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=60)
    client.loop_start()
    done.wait(10)
    topics = [f"lifebox/v1/{s}/telemetry" for s in serials]
    last_ts = [0] * len(serials)
    k = plan.per_message
    interval = (k / plan.rate) if plan.rate > 0 else 0.0  # seconds between messages per device
    time.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + plan.duration_s if plan.duration_s else float("inf")
    count = 0
    next_due = [start_at + i * interval / max(1, len(serials)) for i in range(len(serials))]
    while time.time() < deadline and (quota is None or count < quota):
        now = time.time()
        for i, topic in enumerate(topics):
            if interval and next_due[i] > now:
                continue
            ts = max(int(now * 1000), last_ts[i] + 1)
            last_ts[i] = ts + k - 1
            parts = [
                b'{"ts":' + str(ts + j).encode() + b"," + bodies[(count + j) % BODIES_PER_DEVICE]
                for j in range(k)
            ]
            payload = parts[0] if k == 1 else b"[" + b",".join(parts) + b"]"
            client.publish(topic, payload, qos=plan.qos)
            count += 1
            if interval:
                next_due[i] += interval
            while count - local["acked"] > MAX_UNACKED and plan.qos:
                time.sleep(0.0005)
            if quota is not None and count >= quota:
                break
            if count % 500 == 0:
                with sent.get_lock():
                    sent.value = count
                with acked.get_lock():
                    acked.value = local["acked"]
        if interval:
            time.sleep(0.001)
    # Wait for the broker to acknowledge what was sent, then report the final counts.
    wait_until = time.time() + 30
    while plan.qos and local["acked"] < count and time.time() < wait_until:
        time.sleep(0.005)
    with sent.get_lock():
        sent.value = count
    with acked.get_lock():
        acked.value = local["acked"]
    client.loop_stop()
    client.disconnect()


def run_loadgen(plan: LoadPlan, progress: Callable[[str], None] | None = None) -> LoadReport:
    """Publish per the plan; return what the broker acknowledged and how long it took."""
    processes = max(1, min(plan.processes, len(plan.serials)))
    slices = [plan.serials[i::processes] for i in range(processes)]
    quotas: list[int | None] = [
        None
        if plan.messages is None
        else plan.messages // processes + (i < plan.messages % processes)
        for i in range(processes)
    ]
    ctx = mp.get_context("spawn")
    sent = [ctx.Value("q", 0) for _ in range(processes)]
    acked = [ctx.Value("q", 0) for _ in range(processes)]
    start_at = time.time() + 1.5  # every process connected before the clock starts
    workers = [
        ctx.Process(
            target=_publisher,
            args=(plan, slices[i], quotas[i], sent[i], acked[i], start_at),
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    while alive := [w.sentinel for w in workers if w.is_alive()]:
        wait_for_processes(alive, timeout=1.0)
        if progress and time.time() > start_at:
            elapsed = time.time() - start_at
            total = sum(v.value for v in acked)
            progress(
                f"\r{elapsed:6.1f}s  {total:>10,} messages acked  "
                f"{total * plan.per_message / max(elapsed, 1e-3):>10,.0f} readings/s"
            )
    seconds = max(1e-3, time.time() - start_at)
    messages = sum(v.value for v in acked)
    if progress:
        progress("\n")
    return LoadReport(messages, messages * plan.per_message, seconds)


def print_progress(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()
