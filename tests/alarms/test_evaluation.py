"""Rules evaluated by a real ingest worker on readings published to a real broker: each kind
raises and clears at the right readings."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.alarms import events_of, make_rule, watermark
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


def t(value: float) -> dict[str, float]:
    return {"temperature_c": value}


def readings(
    serial: str, base_ms: int, values: list[dict[str, float]], step_ms: int = 1000
) -> list[tuple[str, bytes]]:
    return [
        (f"lifebox/v1/{serial}/telemetry", json.dumps({"ts": base_ms + i * step_ms, **v}).encode())
        for i, v in enumerate(values)
    ]


def at(base_ms: int, index: int, step_ms: int = 1000) -> datetime:
    return datetime.fromtimestamp((base_ms + index * step_ms) / 1000, UTC)


async def wait_evaluated(conn: asyncpg.Connection, device: uuid.UUID, last: datetime) -> None:
    """Until the device's watermark reaches ``last``."""

    async def reached() -> bool:
        mark = await watermark(conn, device)
        return mark is not None and mark >= last

    await async_wait_until(reached, 60, "evaluation")


async def test_each_kind_raises_and_clears_at_the_right_readings(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 4)
    client = fleet.client_id
    (d_hyst, s_hyst), (d_dwell, s_dwell), (d_expr, s_expr), (d_range, s_range) = fleet.devices
    hysteresis = await make_rule(owner_conn, client, device_id=d_hyst, hysteresis=2.0,
                                 message_template="{device}: {value} over 30")  # fmt: skip
    dwell = await make_rule(owner_conn, client, device_id=d_dwell, duration_s=3, clear_after_s=2)
    expression = await make_rule(
        owner_conn, client, device_id=d_expr, kind="expression", field=None, condition=None,
        threshold_high=None, expression="temperature_c - humidity_pct / 10 > 20",
    )  # fmt: skip
    outside = await make_rule(
        owner_conn, client, device_id=d_range, kind="range", condition="outside",
        threshold_low=10.0, threshold_high=20.0, hysteresis=1.0,
    )  # fmt: skip
    base = int(time.time() * 1000) - 40_000  # within the lateness window (60 s)
    hyst_values: list[float] = [25, 31, 29.5, 31, 29, 27.9, 26, 31, 30.5]
    # Holds at 2..6 (raised at 5, 3 s after 2), clear holds from 7, clears at 9 (2 s).
    dwell_values: list[float] = [25, 31, 31, 32, 25, 31, 31, 31, 31, 25, 24, 23, 22]
    expr_values: list[dict[str, float]] = [
        {"temperature_c": 30, "humidity_pct": 50},
        {"temperature_c": 30, "humidity_pct": 120},
        {"humidity_pct": 10},
        {"temperature_c": 10, "humidity_pct": 10},
    ]
    range_values: list[float] = [15, 21, 20.5, 19.5, 18.9, 9, 10.5, 11.5]
    messages = [
        *readings(s_hyst, base, [t(v) for v in hyst_values]),
        *readings(s_dwell, base, [t(v) for v in dwell_values]),
        *readings(s_expr, base, expr_values),
        *readings(s_range, base, [t(v) for v in range_values]),
    ]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(messages)
        for device, count in ((d_hyst, 9), (d_dwell, 13), (d_expr, 4), (d_range, 8)):
            await wait_evaluated(owner_conn, device, at(base, count - 1))
    # Hysteresis 2: raised at 31, not cleared at 29.5 or 29, cleared at 27.9; raised again.
    events = await events_of(owner_conn, hysteresis)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [
        (at(base, 1), at(base, 5)),
        (at(base, 7), None),
    ]
    assert events[0]["trigger_value"] == 31
    assert events[0]["clear_value"] == 27.9
    assert events[0]["status"] == "cleared_unack"
    assert events[1]["status"] == "active_unack"
    assert events[0]["message"] == f"{d_hyst}: 31.0 over 30"
    # Duration 3 s: 1..3 held only 3 readings then broke at 4 (1→3 is 2 s); 5..8 raise at 8.
    events = await events_of(owner_conn, dwell)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [(at(base, 8), at(base, 11))]
    # Expression: 30 - 5 > 20 raises; 30 - 12 clears; an absent field changes nothing.
    events = await events_of(owner_conn, expression)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [(at(base, 0), at(base, 1))]
    # Outside [10, 20], hysteresis 1: raised at 21, cleared at 18.9 (not 19.5), again at 9,
    # cleared at 11.5 (not 10.5).
    events = await events_of(owner_conn, outside)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [
        (at(base, 1), at(base, 4)),
        (at(base, 5), at(base, 7)),
    ]


async def test_no_data_raises_after_the_silence_and_the_next_reading_clears_it(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (silent, s_silent), (no_field, s_no_field) = fleet.devices
    sweeping = running_ingest(
        database, broker.url, broker.port, LIFEBOX_ALARM_SWEEP_INTERVAL_S="0.3"
    )
    with sweeping, publisher(broker.port) as pub:
        # Made once the worker runs: the first reading follows within the silence (a worker
        # slow to start on a loaded machine would otherwise raise on the rule's own age).
        quiet = await make_rule(
            owner_conn, fleet.client_id, device_id=silent, kind="no_data", field=None,
            condition=None, threshold_high=None, duration_s=2,
        )  # fmt: skip
        # A field absent for the duration raises too, though readings keep coming.
        absent = await make_rule(
            owner_conn, fleet.client_id, device_id=no_field, kind="no_data",
            field="humidity_pct", condition="absent", threshold_high=None, duration_s=2,
        )  # fmt: skip
        first_ms = int(time.time() * 1000)
        pub.publish_all(
            readings(s_silent, first_ms, [t(20)]) + readings(s_no_field, first_ms, [t(20)])
        )

        async def raised(rule: uuid.UUID) -> bool:
            return bool(await events_of(owner_conn, rule))

        await async_wait_until(lambda: raised(quiet), 30, "no-data event")
        await async_wait_until(lambda: raised(absent), 30, "absent-field event")
        (event,) = await events_of(owner_conn, quiet)
        assert event["raised_at"] == at(first_ms, 0) + timedelta(seconds=2)
        assert event["cleared_at"] is None
        again_ms = int(time.time() * 1000)
        pub.publish_all(
            readings(s_silent, again_ms, [t(21)])
            + readings(s_no_field, again_ms, [{"temperature_c": 1, "humidity_pct": 40}])
        )

        async def cleared(rule: uuid.UUID) -> bool:
            events = await events_of(owner_conn, rule)
            return bool(events) and events[0]["cleared_at"] is not None

        await async_wait_until(lambda: cleared(quiet), 30, "no-data event cleared")
        await async_wait_until(lambda: cleared(absent), 30, "absent-field event cleared")
    (event,) = await events_of(owner_conn, quiet)
    assert event["cleared_at"] == at(again_ms, 0)
    (event,) = await events_of(owner_conn, absent)
    assert event["clear_value"] == 40


async def test_a_rule_scoped_by_type_or_metadata_matches_exactly_those_devices(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 3)
    (cairo, s_cairo), (giza, s_giza), (pump, s_pump) = fleet.devices
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE devices SET metadata = $2::jsonb WHERE id = $1", cairo, '{"site": "cairo"}'
        )
        await owner_conn.execute(
            "UPDATE devices SET metadata = $2::jsonb WHERE id = $1", giza, '{"site": "giza"}'
        )
        await owner_conn.execute("UPDATE devices SET device_type = 'pump' WHERE id = $1", pump)
    by_site = await make_rule(owner_conn, fleet.client_id, device_filter={"site": "cairo"})
    by_type = await make_rule(owner_conn, fleet.client_id, device_type="pump")
    base = int(time.time() * 1000) - 60_000
    hot = [t(40)]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            readings(s_cairo, base, hot) + readings(s_giza, base, hot) + readings(s_pump, base, hot)
        )
        # giza is in no rule's scope: its watermark moves past what it sent all the same.
        for device in (cairo, giza, pump):
            await wait_evaluated(owner_conn, device, at(base, 0))
    assert [e["device_id"] for e in await events_of(owner_conn, by_site)] == [cairo]
    assert [e["device_id"] for e in await events_of(owner_conn, by_type)] == [pump]


def test_rules_shared_by_devices_evaluated_in_one_call_give_the_per_device_events() -> None:
    """shared() evaluates a rule several devices share over all their readings at once; the
    events are those of evaluating each device alone."""
    import random

    from lifebox_grpc.alarms.conditions import Rule, compile_rule
    from lifebox_grpc.alarms.evaluator import evaluate_device, shared
    from lifebox_grpc.alarms.readings import Readings

    nil = uuid.UUID(int=0)
    a, b = uuid.uuid4(), uuid.uuid4()

    def rule(device: uuid.UUID | None, expression: str) -> Rule:
        return Rule(
            uuid.uuid4(), nil, "r", "", "expression", device, None, None, None, None, None,
            None, expression, None, 0.0, 1, 0, None, None, "minor", None, True,
        )  # fmt: skip

    rules = [
        compile_rule(rule(None, "temperature_c > 30")),
        compile_rule(rule(a, "humidity_pct < 20")),
    ]
    tenant, only_a = rules
    assert tenant is not None
    assert only_a is not None
    rng = random.Random(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    data = {
        d: Readings.from_rows(
            [
                {
                    "time": start + timedelta(seconds=i),
                    "temperature_c": rng.uniform(20, 40),
                    "humidity_pct": None if i % 7 == 0 else rng.uniform(10, 60),
                }
                for i in range(n)
            ],
            ["humidity_pct", "temperature_c"],
        )
        for d, n in ((a, 300), (b, 170))
    }
    scoped = {a: [tenant, only_a], b: [tenant]}
    given = shared(scoped, data, 10_000_000)  # type: ignore[arg-type]
    assert set(given) == {a, b}
    assert all(set(g) == {tenant.rule.id} for g in given.values())
    for d in (a, b):
        alone, _, _ = evaluate_device(d, "d", scoped[d], data[d], {}, 10_000_000)  # type: ignore[arg-type]
        together, _, _ = evaluate_device(
            d,
            "d",
            scoped[d],
            data[d],
            {},
            10_000_000,
            None,
            (),
            given[d],  # type: ignore[arg-type]
        )
        # The same events (in another order: rules evaluated together come last).
        assert sorted((str(e.rule_id), e.raised_at, e.cleared_at) for e in together.raised) == (
            sorted((str(e.rule_id), e.raised_at, e.cleared_at) for e in alone.raised)
        )
        assert alone.raised
