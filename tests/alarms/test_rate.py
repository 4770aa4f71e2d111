"""RATE rules: the change per second over a window, raised and cleared at the right readings,
by a real ingest worker, across batches (the window reaches back over evaluated readings)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.alarms.conditions import Rule, compile_rule
from lifebox_grpc.alarms.evaluator import evaluate_device
from lifebox_grpc.alarms.rate import Series, rates_of
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.alarms.test_evaluation import at, readings, t, wait_evaluated
from tests.helpers.alarms import events_of, make_rule
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database

pytestmark = pytest.mark.timeout(180)

S = 1_000_000


def test_the_rate_is_against_the_earliest_value_in_the_window() -> None:
    # Window 2 s: 3 s is measured against 1 s (not 0 s, outside); 4 s has no value; 5 s
    # reaches back over the prior series' 3 s; the first reading has nothing before it.
    assert rates_of(2 * S, Series(), [0, S, 3 * S], [10.0, 12.0, 18.0]) == [None, 2.0, 3.0]
    prior = Series([S, 3 * S], [12.0, 18.0])
    assert rates_of(2 * S, prior, [4 * S, 5 * S], [None, 20.0]) == [None, 1.0]
    # Values of the prior series at or after the first reading are not "before" it.
    assert rates_of(2 * S, Series([4 * S], [1.0]), [4 * S], [5.0]) == [None]


def _rule(**values: object) -> Rule:
    nil = uuid.UUID(int=0)
    base: dict[str, object] = {
        "name": "r", "description": "", "kind": "rate", "device_id": None,
        "device_type": None, "device_filter": None, "field": "temperature_c",
        "condition": "gt", "threshold_low": None, "threshold_high": 0.5, "expression": None,
        "clear_expression": None, "hysteresis": 0.2, "duration_s": 0, "clear_after_s": 0,
        "window_s": 2, "device_alarm_severity": None, "severity": "major",
        "message_template": "rising {rate}/s", "enabled": True,
    }  # fmt: skip
    base.update(values)
    return Rule(nil, nil, **base)  # type: ignore[arg-type]


RISING: list[float] = [20, 20, 20, 22, 24, 24.5, 24.75, 25, 27]


def test_the_dry_run_path_raises_and_clears_where_the_rates_say() -> None:
    compiled = compile_rule(_rule())
    assert compiled is not None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"time": start + timedelta(seconds=i), "temperature_c": v} for i, v in enumerate(RISING)
    ]
    found, _, done = evaluate_device(uuid.uuid4(), "d", [compiled], rows, {}, 1_000_000)
    assert done == len(rows)
    assert [(e.raised_at, e.cleared_at) for e in found.raised] == [
        (rows[3]["time"], rows[7]["time"]),
        (rows[8]["time"], None),
    ]
    assert found.raised[0].details["rate_per_s"] == 1.0
    assert found.raised[0].message == "rising 1.0/s"


async def test_rate_rules_raise_and_clear_at_the_right_readings_across_batches(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (d_rise, s_rise), (d_fall, s_fall) = fleet.devices
    rising = await make_rule(
        owner_conn, fleet.client_id, device_id=d_rise, kind="rate", condition="gt",
        threshold_high=0.5, hysteresis=0.2, window_s=2,
    )  # fmt: skip
    falling = await make_rule(
        owner_conn, fleet.client_id, device_id=d_fall, kind="rate", condition="lt",
        threshold_high=-1.0, window_s=2,
    )  # fmt: skip
    base = int(time.time() * 1000) - 30_000  # within the lateness window
    # Rates (window 2 s): -, 0, 0, 1 (raise), 2, 1.25, 0.375 (inside the hysteresis band:
    # neither), 0.25 (clear: <= 0.3), 1.125 (raise again).
    first, second = RISING[:5], RISING[5:]
    # Falling: the reading without the field is unknown; 3 s against 1 s: -1.5 < -1.
    fall_values: list[dict[str, float]] = [t(30), t(30), {"humidity_pct": 5}, t(27), t(27)]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            readings(s_rise, base, [t(v) for v in first]) + readings(s_fall, base, fall_values)
        )
        await wait_evaluated(owner_conn, d_rise, at(base, len(first) - 1))
        await wait_evaluated(owner_conn, d_fall, at(base, 4))
        # The second batch's rates reach back over readings the first evaluation took.
        pub.publish_all(readings(s_rise, base + len(first) * 1000, [t(v) for v in second]))
        await wait_evaluated(owner_conn, d_rise, at(base, len(RISING) - 1))
    events = await events_of(owner_conn, rising)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [
        (at(base, 3), at(base, 7)),
        (at(base, 8), None),
    ]
    assert events[0]["trigger_value"] == 22
    assert events[0]["clear_value"] == 25
    # 4 s against 3 s: 0 >= -1 clears.
    events = await events_of(owner_conn, falling)
    assert [(e["raised_at"], e["cleared_at"]) for e in events] == [(at(base, 3), at(base, 4))]
