"""The cost of alarm evaluation on the ingest path, in one run, one table. Asserts nothing.

    .venv/bin/python benchmarks/alarms.py [--messages 4000] [--devices 200] [--repeat 2]

A fresh PostgreSQL cluster and mosquitto (the runtime launchers), one `lifebox ingest`
worker, the Rust load generator at 50 readings per message over a fleet of 200 devices:

(1) baseline: ingest with no rules (rows/s committed, first publish to last commit)
(2) the same with 1,000 enabled rules: 800 device-scoped threshold and range rules (4 per
    device), 150 CEL expression rules scoped to the fleet's device type, 50 tenant-wide
    threshold rules that must hold 60 s: every reading meets 204 rules of its scope.
    Committed rows/s, and rows/s evaluated (first publish until every device's watermark
    reaches its last reading: evaluation runs after commit, beside ingest, on the same
    2 cores)
(3) publish -> event-commit latency at a quarter of the baseline rate (an upper bound of the
    reading-commit -> event-commit latency: it includes publish -> commit), p50 and p99
(4) the native CEL evaluator alone, one thread: rule-evaluations/s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
from array import array
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_e2e import Bench, mqtt_path, say

from lifebox_grpc.native import Expression, ExpressionColumn, evaluate_conditions
from lifebox_grpc.store.pool import tenant_transaction

# Rules that are evaluated on every reading but rarely hold (an alarm storm would measure
# the database writing events, not evaluation). The load generator cycles 64 distinct
# readings: `co2_ppm > 1195 && !relay_on` held on one of them (1197.1 ppm, relay off), so its
# 30 rules raised and cleared every 64 readings on every device (~0.5 raises per reading).
EXPRESSIONS = [
    "temperature_c > 33 && humidity_pct < 22",
    "abs(voltage_l1 - voltage_l2) > 9 || abs(voltage_l2 - voltage_l3) > 9",
    "active_power_w / max(apparent_power_va, 1) < 0.9",
    "current_l1 + current_l2 + current_l3 > 55",
    "co2_ppm > 1199 && !relay_on",
]
# Held by that one reading in 64: 3 of the 150 expression rules raise and clear with it, so
# (3) has events to time (~0.05 raises per reading) without a storm.
RAISING = "co2_ppm > 1195 && !relay_on"


async def create_rules(bench: Bench, devices: list[tuple[object, str]]) -> int:
    """The 1,000 rules of (2), inserted as the owner."""
    conn = await asyncpg.connect(bench.db.owner_dsn)
    client = bench.client_id
    rows = []
    for device, _ in devices:
        rows += [
            (device, None, "threshold", "temperature_c", "gt", None, 33.0, None, 0),
            (device, None, "threshold", "battery_pct", "lt", None, 10.5, None, 0),
            (device, None, "range", "voltage_l1", "outside", 222.0, 238.0, None, 0),
            (device, None, "range", "frequency_hz", "outside", 49.93, 50.07, None, 0),
        ]
    for i in range(150):
        source = RAISING if i % 50 == 0 else EXPRESSIONS[i % 5]
        rows.append((None, "generic", "expression", None, None, None, None, source, 0))
    for i in range(50):
        rows.append((None, None, "threshold", "temperature_c", "gt", None, 33.0 + i / 10, None, 60))
    try:
        async with tenant_transaction(conn, None, staff=True):
            await conn.executemany(
                "INSERT INTO alarm_rules (client_id, name, device_id, device_type, kind, field, "
                "condition, threshold_low, threshold_high, expression, duration_s, hysteresis) "
                "VALUES ($1, 'bench', $2, $3, $4, $5, $6, $7, $8, $9, $10, 0.5)",
                [(client, *r) for r in rows],
            )
    finally:
        await conn.close()
    return len(rows)


async def caught_up(bench: Bench, since: float) -> float:
    """Seconds from ``since`` (epoch) until no device has readings past its watermark."""
    conn = await asyncpg.connect(bench.db.owner_dsn)
    try:
        while True:
            async with tenant_transaction(conn, None, staff=True):
                behind = await conn.fetchval(
                    "SELECT count(*) FROM devices d LEFT JOIN alarm_device_cursors c "
                    "ON c.device_id = d.id WHERE d.client_id = $1 AND (c.device_id IS NULL OR "
                    "EXISTS (SELECT 1 FROM telemetry_events e WHERE e.device_id = d.id "
                    "AND e.time > c.evaluated_through))",
                    bench.client_id,
                )
            if behind == 0:
                return time.time() - since
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def raise_latencies(bench: Bench, since: float) -> list[float]:
    conn = await asyncpg.connect(bench.db.owner_dsn)
    try:
        async with tenant_transaction(conn, None, staff=True):
            rows = await conn.fetch(
                "SELECT extract(epoch FROM recorded_at - changed_at) FROM alarm_event_changes "
                "WHERE change = 'raised' AND recorded_at > to_timestamp($1)",
                since,
            )
    finally:
        await conn.close()
    return [float(r[0]) for r in rows]


def native_rate(rows: int = 20_000, rules: int = 200) -> float:
    """Rule-evaluations/s of the CEL core alone on one thread (threshold-like and CEL rules)."""
    exprs = [
        Expression(EXPRESSIONS[i % 5] if i % 4 == 0 else f"temperature_c > {20 + i % 10}.5")
        for i in range(rules)
    ]
    fields = sorted({f for e in exprs for f in e.fields})
    columns = [
        ExpressionColumn(
            f, f == "relay_on", array("d", [float((i * 7919) % 97) for i in range(rows)]).tobytes()
        )
        for f in fields
    ]
    started = time.perf_counter()
    _, done = evaluate_conditions(exprs, columns, rows, 60_000_000)
    return done * rules / (time.perf_counter() - started)


async def run(bench: Bench, args: argparse.Namespace) -> None:
    devices = await bench.register(args.devices)
    serials = [s for _, s in devices]
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    # The load generator's readings are an hour old: a lateness window that holds them, so
    # the duration rules evaluate them like live readings.
    os.environ["LIFEBOX_ALARM_LATENESS_S"] = "86400"
    bench.start_worker()
    base = 0.0
    for _ in range(args.repeat):
        base = max(base, (await mqtt_path(bench, serials, args.messages, 50))[0])
        await bench.truncate()
    say(f"(1) no rules: {base:,.0f} rows/s")
    rules = await create_rules(bench, devices)
    await asyncio.sleep(1.5)  # the worker's rule cache refreshes every second
    with_rules = evaluated = 0.0
    rows = args.messages * 50
    for _ in range(args.repeat):
        started = time.time()
        rate = (await mqtt_path(bench, serials, args.messages, 50))[0]
        elapsed = await caught_up(bench, started)
        with_rules = max(with_rules, rate)
        evaluated = max(evaluated, rows / elapsed)
        await bench.truncate()
    say(f"(2) {rules} rules: {with_rules:,.0f} rows/s committed, {evaluated:,.0f} rows/s evaluated")
    paced_since = time.time()
    half = base / 4  # a rate evaluation keeps up with (see (2))
    # rate: readings per second per device
    await mqtt_path(bench, serials, int(half * 15 / 50), 50, rate=half / len(serials))
    await caught_up(bench, paced_since)
    latencies = sorted(await raise_latencies(bench, paced_since))
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    bench.stop_worker()
    cel = native_rate()
    say("")
    say(
        f"{'ingest at 50 readings/message, 200 devices (best of ' + str(args.repeat) + ')':62} {'rows/s':>10} {'vs (1)':>8}"
    )
    say(f"{'(1) no rules (baseline, same run)':62} {base:>10,.0f}")
    say(
        f"{'(2) 1,000 rules (204 per reading): committed':62} {with_rules:>10,.0f} {with_rules / base:>8.0%}"
    )
    say(
        f"{'(2) 1,000 rules: evaluated (publish -> all watermarks)':62} {evaluated:>10,.0f} {evaluated / base:>8.0%}"
    )
    say(
        f"(3) publish -> event commit at {half:,.0f} rows/s: p50 {p50:.3f} s, p99 {p99:.3f} s over {len(latencies)} raises"
    )
    say(f"(4) native CEL, one thread: {cel:,.0f} rule-evaluations/s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4000, help="messages of 50 readings")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per figure")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        await run(Bench(stack), args)


if __name__ == "__main__":
    asyncio.run(main())
