"""Command round trip on this machine, in one run, side by side. Asserts nothing.

    .venv/bin/python benchmarks/commands.py [--devices 100] [--rate 200] [--seconds 10]
                                            [--batch 25] [--batch-senders 4]

Everything runs here: a fresh PostgreSQL cluster and mosquitto (the test suite's launchers),
`lifebox serve`, one `lifebox ingest` worker and one `lifebox dispatch`
process, and 100 simulated devices (one MQTT connection) that answer each command with
``received`` then ``completed``. A gRPC client sends ``SendCommand`` at a fixed rate, round
robin over the devices, and watches ``StreamCommandUpdates`` until each command shows
``completed``: the round trip, measured at the client. Then the same with as many senders as
it takes to find the maximum sustained rate, and again with ``BatchSendCommand`` calls of
``--batch`` devices each (concurrent calls name disjoint devices). After each phase, the CPU
time each of the benchmark's own processes spent per completed command (from /proc; other
users of a shared machine are not counted): the wall-clock rates move with the machine's
load, the cost per command much less, and the capacity of a machine is about its cores
divided by the total. Legs (from the trail's database times and the
devices' receive and ack times, one clock):

  API -> outbox commit   client send to the SendCommand reply (it returns after COMMIT)
  commit -> publish      the pending row to the dispatcher's "sent" row (after PUBACK)
  publish -> device      the "sent" row to the device's receipt (negative: PUBACK came late)
  device ack -> ingest   the device's "completed" publish to ingest's "completed" row
  commit -> stream       that row to the client reading it on the stream

The floor, in the same run: a bare MQTT 5 QoS 1 publish -> receive -> publish -> receive
between two paho clients on the same broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import grpc
import paho.mqtt.client as mqtt
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paho.mqtt.enums import CallbackAPIVersion

from lifebox.v1 import auth_pb2_grpc, commands_pb2_grpc
from lifebox.v1 import commands_pb2 as pb
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.commands import (
    DispatcherProcess,
    broker_url,
    dispatch_dsn,
)
from tests.helpers.grpc import SIGNING_KEY, make_tenant
from tests.helpers.ingest import IngestProcess
from tests.helpers.services import running_broker, running_database


class Serve:
    """`lifebox serve` as its own process (as deployed), and a channel to it."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel)


@contextlib.contextmanager
def serve_process(db: Any) -> Iterator[Serve]:
    port = free_port("127.0.0.1")
    home = tempfile.mkdtemp(prefix="lifebox-bench-home-")
    env = {
        **os.environ,
        "LIFEBOX_DATABASE_URL": db.app_dsn,
        "LIFEBOX_GRPC_PORT": str(port),
        "LIFEBOX_HTTP_PORT": "0",
        "LIFEBOX_JWT_SIGNING_KEY": SIGNING_KEY,
        "LIFEBOX_HOME": home,
        "LIFEBOX_LOG_LEVEL": "WARNING",
        "LIFEBOX_GRPC_MAX_CALLS_PER_PRINCIPAL": "10000",
        "LIFEBOX_GRPC_MAX_STREAMS_PER_PRINCIPAL": "100",
        "LIFEBOX_LOGIN_ATTEMPTS_PER_ADDRESS": "100000",
    }
    proc = subprocess.Popen([sys.executable, "-m", "lifebox_grpc.cli", "serve"], env=env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("lifebox serve did not start")
            time.sleep(0.2)
        yield Serve(port)
    finally:
        proc.terminate()
        proc.wait(20)


def say(line: str) -> None:
    print(line, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    if not values:
        return "      -        -        -"
    return (
        f"{pct(values, 50) * 1000:7.1f}  {pct(values, 99) * 1000:7.1f}  {max(values) * 1000:7.1f}"
    )


@dataclass
class Devices:
    """100 devices on one connection: record receipt and ack times, answer at once."""

    port: int
    account: tuple[str, str] | None
    received: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if self.account:
            self.client.username_pw_set(*self.account)
        self.client.max_inflight_messages_set(1000)
        ready = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("lifebox/v1/+/commands/+", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        command_id = message.topic.rsplit("/", 1)[1]
        now = time.time()
        self.received.setdefault(command_id, now)
        client.publish(f"{message.topic}/ack", b'{"status":"received"}', qos=1)
        self.acked.setdefault(command_id, time.time())
        client.publish(f"{message.topic}/ack", b'{"status":"completed","result":{}}', qos=1)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_floor(port: int, account: tuple[str, str] | None, count: int = 2000) -> list[float]:
    """Round trips A -> B -> A at QoS 1, one at a time (the broker's own floor)."""
    done = threading.Event()
    times: list[float] = []
    start = [0.0]

    def client(name: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, f"bench-{name}-{uuid.uuid4().hex[:6]}",
                        protocol=mqtt.MQTTv5)  # fmt: skip
        if account:
            c.username_pw_set(*account)
        return c

    a, b = client("a"), client("b")
    subscribed = threading.Semaphore(0)
    for c, topic in ((a, "bench/floor/pong"), (b, "bench/floor/ping")):
        c.on_connect = lambda cl, *_, t=topic: cl.subscribe(t, qos=1)
        c.on_subscribe = lambda *_: subscribed.release()
        c.connect("127.0.0.1", port)
        c.loop_start()
    for _ in range(2):
        assert subscribed.acquire(timeout=10)
    b.on_message = lambda cl, _u, m: cl.publish("bench/floor/pong", m.payload, qos=1)

    def on_pong(_c: Any, _u: Any, _m: Any) -> None:
        times.append(time.perf_counter() - start[0])
        if len(times) >= count:
            done.set()
        else:
            start[0] = time.perf_counter()
            a.publish("bench/floor/ping", b"x" * 200, qos=1)

    a.on_message = on_pong
    start[0] = time.perf_counter()
    a.publish("bench/floor/ping", b"x" * 200, qos=1)
    done.wait(120)
    for c in (a, b):
        c.loop_stop()
        c.disconnect()
    return times


def cpu_ticks() -> dict[str, int]:
    """CPU ticks so far of this benchmark's processes (this one and its descendants: serve,
    ingest, dispatch, the cluster's backends by role, the broker), to divide by the commands
    a phase completed: on a shared machine the wall-clock figures move with everyone's load,
    the cost per command much less."""
    procs: dict[int, tuple[int, int, str]] = {}  # pid: (ppid, ticks, cmdline)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmd)
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == me:
                return True
            if pid not in procs or pid <= 1:
                return False
            pid = procs[pid][0]
        return False

    out: dict[str, int] = {}
    for pid, (_ppid, ticks, cmd) in procs.items():
        if not ours(pid):
            continue
        if pid == me:
            group = "benchmark client + devices"
        elif cmd.startswith("postgres: "):
            group = f"postgres ({cmd.split()[1]})"
        elif "lifebox_grpc.cli" in cmd:
            group = "lifebox " + cmd.split("lifebox_grpc.cli", 1)[1].split()[0]
        elif "mosquitto" in cmd:
            group = "mosquitto"
        elif "postgres" in cmd:
            group = "postgres (postmaster)"
        else:
            group = "other"
        out[f"{group}:{pid}"] = ticks
    return out


def cpu_table(before: dict[str, int], after: dict[str, int], completed: int) -> None:
    """CPU milliseconds per completed command, per kind of process (this benchmark's own
    only: other users of the machine are not counted)."""
    hz = os.sysconf("SC_CLK_TCK")
    per: dict[str, float] = {}
    for key, ticks in after.items():
        group = key.rsplit(":", 1)[0]
        per[group] = per.get(group, 0.0) + (ticks - before.get(key, 0)) / hz
    if not completed:
        return
    say(f"  {'CPU per command':24} {'ms':>7}")
    for group, seconds in sorted(per.items(), key=lambda kv: -kv[1]):
        if seconds * 1000 / completed < 0.005:
            continue
        say(f"  {group:24} {seconds * 1000 / completed:7.2f}")
    say(f"  {'total':24} {sum(per.values()) * 1000 / completed:7.2f}")


@dataclass
class Run:
    sent_at: dict[str, float] = field(default_factory=dict)  # client send start
    replied_at: dict[str, float] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)  # seen on the stream
    failures: int = 0


async def drive(
    stub: commands_pb2_grpc.CommandServiceStub,
    md: Any,
    devices: list[uuid.UUID],
    *,
    rate: float | None,
    seconds: float,
    senders: int,
    batch: int = 0,
) -> tuple[Run, float]:
    """Send for ``seconds`` (at ``rate``/s, or as fast as ``senders`` go) and wait until every
    command completed on the stream; (run, wall seconds from first send to last completion).
    ``batch``: each call is a BatchSendCommand to that many devices instead of a SendCommand."""
    run = Run()
    stream = stub.StreamCommandUpdates(pb.StreamCommandUpdatesRequest(), metadata=md)

    async def watch() -> None:
        async for update in stream:
            if update.execution.to_status == pb.COMMAND_STATUS_COMPLETED:
                run.completed_at.setdefault(update.command.id, time.time())

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    begin = time.time()
    counter = iter(range(10**9))

    async def send_batch(n: int) -> None:
        t0 = time.time()
        first = n * batch
        chosen = [str(devices[(first + i) % len(devices)]) for i in range(batch)]
        try:
            reply = await stub.BatchSendCommand(
                pb.BatchSendCommandRequest(device_ids=chosen, template_code="ping"),
                metadata=md,
                timeout=60,
            )
        except Exception:
            run.failures += batch
            return
        now = time.time()
        for result in reply.results:
            if result.code != "OK":
                run.failures += 1
                continue
            run.sent_at[result.command.id] = t0
            run.replied_at[result.command.id] = now

    async def sender() -> None:
        while True:
            n = next(counter)
            due = begin + n / rate if rate else time.time()
            if due - begin >= seconds:
                return
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.time()
            if batch:
                await send_batch(n)
                continue
            device = devices[n % len(devices)]
            try:
                reply = await stub.SendCommand(
                    pb.SendCommandRequest(device_id=str(device), template_code="ping"),
                    metadata=md,
                    timeout=30,
                )
            except Exception:
                run.failures += 1
                continue
            run.sent_at[reply.command.id] = t0
            run.replied_at[reply.command.id] = time.time()

    await asyncio.gather(*(sender() for _ in range(senders)))
    deadline = time.time() + 120
    while time.time() < deadline and not set(run.sent_at) <= set(run.completed_at):
        await asyncio.sleep(0.05)
    stream.cancel()
    with contextlib.suppress(BaseException):
        await watcher
    return run, max(run.completed_at.values(), default=begin) - begin


async def legs(
    conn: asyncpg.Connection, client: uuid.UUID, run: Run, devices: Devices
) -> dict[str, list[float]]:
    async with tenant_transaction(conn, client) as tx:
        rows = await tx.fetch(
            "SELECT command_id::text AS id, to_status, min(at) AS at FROM command_executions "
            "WHERE command_id = ANY($1::uuid[]) GROUP BY 1, 2",
            [uuid.UUID(i) for i in run.sent_at],
        )
    at: dict[tuple[str, str], float] = {
        (r["id"], r["to_status"]): datetime.timestamp(r["at"]) for r in rows
    }
    out: dict[str, list[float]] = {k: [] for k in (
        "round trip", "API -> outbox commit", "commit -> publish", "publish -> device",
        "device ack -> ingest", "commit -> stream")}  # fmt: skip
    for cid, t0 in run.sent_at.items():
        done = run.completed_at.get(cid)
        if done is None:
            continue
        out["round trip"].append(done - t0)
        out["API -> outbox commit"].append(run.replied_at[cid] - t0)
        pending, sent = at.get((cid, "pending")), at.get((cid, "sent"))
        completed = at.get((cid, "completed"))
        if pending and sent:
            out["commit -> publish"].append(sent - pending)
        if sent and cid in devices.received:
            out["publish -> device"].append(devices.received[cid] - sent)
        if completed and cid in devices.acked:
            out["device ack -> ingest"].append(completed - devices.acked[cid])
        if completed:
            out["commit -> stream"].append(done - completed)
    return out


def table(title: str, run: Run, wall: float, parts: dict[str, list[float]]) -> None:
    n = len(run.completed_at)
    say(f"\n{title}: {len(run.sent_at)} sent, {n} completed, {run.failures} refused, "
        f"{n / wall if wall else 0:.0f} completed/s")  # fmt: skip
    say(f"  {'leg':24} {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}")
    for name, values in parts.items():
        say(f"  {name:24} {ms(values)}")


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(running_database())
        broker = stack.enter_context(running_broker())
        accounts = getattr(broker, "accounts", None) or {}
        publisher = "lifebox-test-publisher"
        account = (publisher, accounts[publisher]) if publisher in accounts else None
        say("floor: bare MQTT QoS 1 round trip (publish -> receive -> publish -> receive)")
        floor = mqtt_floor(broker.port, account)
        say(f"  {len(floor)} round trips: p50 {pct(floor, 50) * 1000:.2f} ms, "
            f"p99 {pct(floor, 99) * 1000:.2f} ms")  # fmt: skip
        ingest = IngestProcess(db, broker_url(broker, "lifebox-ingest"),
                               extra_env={"LIFEBOX_INGEST_BATCH_MS": str(args.ingest_batch_ms)})  # fmt: skip
        ingest.start()
        stack.callback(ingest.stop)
        dispatcher = DispatcherProcess(await dispatch_dsn(db), broker_url(broker, "lifebox-dispatch"),
                                       extra_env={"LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "30"})  # fmt: skip
        dispatcher.start()
        stack.callback(dispatcher.stop)
        server = stack.enter_context(serve_process(db))
        owner = await asyncpg.connect(db.owner_dsn)
        try:
            tenant = await make_tenant(server, owner)
            fleet = [(await factories.make_device(owner, tenant.client_id))[0]
                     for _ in range(args.devices)]  # fmt: skip
            sim = Devices(broker.port, account)
            sim.start()
            stub = commands_pb2_grpc.CommandServiceStub(server.channel)
            md = tenant.users["client"].md
            before = cpu_ticks()
            run, wall = await drive(stub, md, fleet, rate=args.rate, seconds=args.seconds,
                                    senders=32)  # fmt: skip
            after = cpu_ticks()
            table(
                f"at {args.rate:.0f} commands/s",
                run,
                wall,
                await legs(owner, tenant.client_id, run, sim),
            )
            cpu_table(before, after, len(run.completed_at))
            before = cpu_ticks()
            run, wall = await drive(stub, md, fleet, rate=None, seconds=args.seconds,
                                    senders=args.senders)  # fmt: skip
            after = cpu_ticks()
            table(f"maximum, SendCommand ({args.senders} senders)", run, wall,
                  await legs(owner, tenant.client_id, run, sim))  # fmt: skip
            cpu_table(before, after, len(run.completed_at))
            if args.batch:
                before = cpu_ticks()
                run, wall = await drive(stub, md, fleet, rate=None, seconds=args.seconds,
                                        senders=args.batch_senders, batch=args.batch)  # fmt: skip
                after = cpu_ticks()
                table(f"maximum, BatchSendCommand of {args.batch} devices "
                      f"({args.batch_senders} senders)", run, wall,
                      await legs(owner, tenant.client_id, run, sim))  # fmt: skip
                cpu_table(before, after, len(run.completed_at))
            sim.stop()
        finally:
            await owner.close()
            await server.channel.close()
        say(f"\nfloor again for reference: p50 {pct(floor, 50) * 1000:.2f} ms, "
            f"p99 {pct(floor, 99) * 1000:.2f} ms; ingest batch {args.ingest_batch_ms} ms")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--ingest-batch-ms", type=int, default=50)
    parser.add_argument("--batch", type=int, default=25,
                        help="devices per BatchSendCommand in the third phase (0: skip it)")  # fmt: skip
    parser.add_argument("--batch-senders", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
