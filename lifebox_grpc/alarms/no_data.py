"""No-data rules: raised by the sweeper when a device has sent no accepted reading (or, with
a field, no value of it) for the rule's duration, cleared by the first reading after.

The silence starts at the last reading before now (or when the rule was created, if the
device never sent one since); the event is raised at ``silence start + duration`` (the
moment the rule's condition was met; there is no reading to date it) and cleared at the
time of the first reading after the silence, with its value. The state keeps the silence
start (``pending_since``) so the clearing reading is found however late the sweep runs.
One transaction per (rule, device), under that state row's lock; the sweeper's lease makes
it one sweeper at a time besides.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from lifebox_grpc.alarms.conditions import Rule
from lifebox_grpc.store import alarm_evaluation as store
from lifebox_grpc.store.alarm_rules import rule_of


async def sweep_no_data(pool: asyncpg.Pool, now: datetime) -> tuple[int, int]:
    """One pass over every enabled no-data rule; (events raised, events cleared)."""
    raised = cleared = 0
    async with pool.acquire() as conn:
        rules = [rule_of(r) for r in await store.no_data_rules(conn)]
    for rule in rules:
        async with pool.acquire() as conn:
            devices = await store.scoped_devices(
                conn, rule.client_id, rule.device_id, rule.device_type, rule.device_filter
            )
        for device_id, _ in devices:
            async with pool.acquire() as conn, conn.transaction():
                r, c = await _one(conn, rule, device_id, now)
            raised += r
            cleared += c
    return raised, cleared


async def _one(
    conn: asyncpg.Connection, rule: Rule, device_id: uuid.UUID, now: datetime
) -> tuple[int, int]:
    state = await store.lock_state(conn, rule.client_id, rule.id, device_id)
    duration = timedelta(seconds=rule.duration_s)
    if state.event_id is not None:
        since = state.pending_since or now
        first = await store.first_value_after(conn, device_id, rule.field, since)
        if first is None:
            return 0, 0
        clearing = store.Clearing(state.event_id, first["time"], first["value"])
        await store.write_evaluation(
            conn, rule.client_id, [], [clearing],
            [store.StoredState(rule.id, device_id, None, None, None)], {},
        )  # fmt: skip
        return 0, 1
    last = await store.last_value_time(conn, device_id, rule.field, now)
    start = max(t for t in (last, rule.created_at) if t is not None)
    if now - start < duration:
        return 0, 0
    event = store.NewEvent(
        uuid.uuid4(), rule.id, device_id, rule.severity, start + duration, None,
        rule.message_template or None,
        {"silent_since": start.isoformat(), **({"field": rule.field} if rule.field else {})},
    )  # fmt: skip
    await store.write_evaluation(
        conn, rule.client_id, [event], [],
        [store.StoredState(rule.id, device_id, event.id, start, None)], {},
    )  # fmt: skip
    return 1, 0
