"""Evaluation gives the events of one worker that never stopped: with two workers sharing
the subscription (a device's readings alternate between them), and across SIGKILLs of a
worker mid-run. Real ingest subprocesses, a real broker."""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from lifebox_grpc.alarms.conditions import Rule, compile_rule
from lifebox_grpc.alarms.evaluator import evaluate_device
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.alarms import events_of, make_rule, watermark
from tests.helpers.ingest import IngestProcess, publisher, register_fleet
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(400)

RULE: dict[str, Any] = {"hysteresis": 2.0, "duration_s": 2, "clear_after_s": 1}
# The readings are two hours old: a lateness window that holds them, so the duration rule
# evaluates them in time order (test_late.py tests the window itself).
BACKFILL = {"LIFEBOX_ALARM_LATENESS_S": "86400"}


def crossing(count: int, seed: int) -> list[float]:
    """Values that cross 30 back and forth, with noise inside the hysteresis band."""
    rng = random.Random(seed)
    return [round(30 + 6 * math.sin(i / 9) + rng.uniform(-1.5, 1.5), 3) for i in range(count)]


def expected_events(values: list[float], base: datetime) -> list[tuple[datetime, datetime | None]]:
    """The events one evaluation over every reading in order gives (the pure machine)."""
    nil = uuid.UUID(int=0)
    rule = Rule(
        nil, nil, "x", "", "threshold", None, None, None, "temperature_c", "gt", None, 30.0,
        None, None, RULE["hysteresis"], RULE["duration_s"], RULE["clear_after_s"], None, None,
        "warning", None, True,
    )  # fmt: skip
    compiled = compile_rule(rule)
    assert compiled is not None
    rows: list[dict[str, Any]] = [
        {"time": base + timedelta(seconds=i), "temperature_c": v} for i, v in enumerate(values)
    ]
    found, _, done = evaluate_device(nil, "d", [compiled], rows, {}, 10_000_000)
    assert done == len(rows)
    return [(e.raised_at, e.cleared_at) for e in found.raised]


def messages(serial: str, values: list[float], base: datetime) -> list[tuple[str, bytes]]:
    base_ms = int(base.timestamp() * 1000)
    return [
        (
            f"lifebox/v1/{serial}/telemetry",
            json.dumps({"ts": base_ms + i * 1000, "temperature_c": v}).encode(),
        )
        for i, v in enumerate(values)
    ]


async def wait_evaluated(conn: asyncpg.Connection, device: uuid.UUID, last: datetime) -> None:
    async def reached() -> bool:
        mark = await watermark(conn, device)
        return mark is not None and mark >= last

    await async_wait_until(reached, 180, "evaluation of every reading")


def _base() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


async def test_two_workers_sharing_a_device_give_exactly_the_single_worker_events(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    total = 2000
    fleet = await register_fleet(database.owner_dsn, 1)
    (device, serial), = fleet.devices  # fmt: skip
    rule = await make_rule(owner_conn, fleet.client_id, **RULE)  # every device of the tenant
    # Another tenant's device, far over the threshold: no rule of this tenant matches it.
    other = await register_fleet(database.owner_dsn, 1)
    (other_device, other_serial), = other.devices  # fmt: skip
    values = crossing(total, 1)
    base = _base()
    expected = expected_events(values, base)
    assert len(expected) > 20
    # A grace of 1 s: the shared machine runs other work; the commits of two workers may
    # be that far apart (the default is 300 ms).
    env = {"LIFEBOX_ALARM_GRACE_MS": "1000", "LIFEBOX_INGEST_BATCH_MS": "20", **BACKFILL}
    workers = [IngestProcess(database, broker.url, extra_env=env) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        with publisher(broker.port) as pub:
            pub.publish_all(
                messages(serial, values, base) + messages(other_serial, [99.0] * 50, base)
            )
        await wait_evaluated(owner_conn, device, base + timedelta(seconds=total - 1))
        rows = [w.metric("lifebox_ingest_rows_total") for w in workers]
    finally:
        for w in workers:
            w.stop()
            w.forget_session(broker.port)
    assert all(r > total / 10 for r in rows), f"the readings did not alternate: {rows}"
    events = await events_of(owner_conn, rule)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == expected
    assert {e["device_id"] for e in events} == {device}
    async with tenant_transaction(owner_conn, None, staff=True):
        assert not await owner_conn.fetchval(
            "SELECT count(*) FROM alarm_events WHERE device_id = $1", other_device
        )


async def test_a_sigkilled_worker_loses_and_doubles_no_event(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    total = 3000
    fleet = await register_fleet(database.owner_dsn, 1)
    (device, serial), = fleet.devices  # fmt: skip
    rule = await make_rule(owner_conn, fleet.client_id, device_id=device, **RULE)
    values = crossing(total, 2)
    base = _base()
    expected = expected_events(values, base)
    env = {"LIFEBOX_ALARM_SWEEP_INTERVAL_S": "1", **BACKFILL}
    worker = IngestProcess(database, broker.url, extra_env=env)
    worker.start()
    rng = random.Random(5)
    all_messages = messages(serial, values, base)

    def paced(pub: Any) -> None:
        # About 200 readings a second, so the kills land while readings are evaluated.
        for i in range(0, total, 20):
            pub.publish_all(all_messages[i : i + 20], 60)
            time.sleep(0.1)

    try:
        with publisher(broker.port) as pub:
            sender = threading.Thread(target=paced, args=(pub,))
            sender.start()
            for _ in range(3):
                # Kill at a random moment once evaluation has moved on, then restart: some
                # kills land between a batch's commit and its evaluation (the grace).
                mark = await watermark(owner_conn, device) or base
                step = timedelta(seconds=rng.randint(50, 400))
                await wait_evaluated(owner_conn, device, mark + step)
                await asyncio.sleep(rng.uniform(0, 0.4))
                worker.kill()
                worker.start()
            sender.join(300)
            assert not sender.is_alive()
        await wait_evaluated(owner_conn, device, base + timedelta(seconds=total - 1))
    finally:
        worker.stop()
        worker.forget_session(broker.port)
    events = await events_of(owner_conn, rule)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == expected
