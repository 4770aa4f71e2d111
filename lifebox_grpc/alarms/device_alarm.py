"""DEVICE_ALARM rules: "any hardware alarm of at least this severity open on these devices".

A device reports hardware alarms on ``…/alarms`` (device_alarms): a code is open from a
message raising it until a message with ``cleared: true`` for the code (a row whose clear
time is its own time) or a clear through the API. The rule's condition at a moment is
whether any open code has at least the rule's severity. The sweeper (under its lease)
walks each device's alarms in time order from where the last walk stopped (the state
row's ``last_time``) through the same machine as readings, so duration and min dwell
count between alarm messages, and the event is raised and cleared at the alarm times.
An alarm reported with a time before the walk's position is not walked again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lifebox_grpc.alarms.conditions import SEVERITIES, Rule
from lifebox_grpc.alarms.machine import FAILS, HOLDS, State, step
from lifebox_grpc.alarms.readings import time_of, us_of
from lifebox_grpc.store import alarm_evaluation as store
from lifebox_grpc.store import device_alarms as alarm_store
from lifebox_grpc.store.alarm_rules import rule_of

# Hardware alarms of one device a walk reads.
MAX_ALARMS = 10_000
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Moment:
    """The rule's condition after every alarm change at ``time``, and the codes open."""

    time: datetime
    holds: bool
    open_codes: dict[str, str]


def timeline(marks: list[alarm_store.AlarmMark], least: str) -> list[Moment]:
    """The condition after each distinct time an alarm opened or closed, in time order."""
    changes: list[tuple[datetime, int, str, str | None]] = []
    for m in marks:
        if m.cleared_at is not None and m.cleared_at == m.raised_at:
            changes.append((m.raised_at, 1, m.code, None))  # a `cleared` message
            continue
        changes.append((m.raised_at, 0, m.code, m.severity))
        if m.cleared_at is not None:
            changes.append((m.cleared_at, 1, m.code, None))  # cleared through the API
    changes.sort(key=lambda c: (c[0], c[1]))
    opened: dict[str, str] = {}
    out: list[Moment] = []
    for i, (time, _, code, severity) in enumerate(changes):
        if severity is None:
            opened.pop(code, None)
        else:
            opened[code] = severity
        if i + 1 < len(changes) and changes[i + 1][0] == time:
            continue
        holds = any(_RANK[s] >= _RANK[least] for s in opened.values())
        out.append(Moment(time, holds, dict(opened)))
    return out


def walk(
    rule: Rule, device_id: uuid.UUID, state: State, moments: list[Moment]
) -> tuple[State, list[store.NewEvent], list[store.Clearing]]:
    """The machine over the moments after the walk's position: events raised and cleared."""
    assert rule.device_alarm_severity is not None
    raising = bytes(HOLDS if m.holds else FAILS for m in moments)
    clearing = bytes(FAILS if m.holds else HOLDS for m in moments)
    after, transitions = step(
        state, raising, clearing, [us_of(m.time) for m in moments],
        rule.duration_s * 1_000_000, rule.clear_after_s * 1_000_000,
    )  # fmt: skip
    raised: list[store.NewEvent] = []
    cleared: list[store.Clearing] = []
    by_id: dict[uuid.UUID, store.NewEvent] = {}
    for t in transitions:
        m = moments[t.index]
        if t.raised:
            event = store.NewEvent(
                t.event_id, rule.id, device_id, rule.severity, m.time, None,
                rule.message_template or None, {"device_alarms": m.open_codes},
            )  # fmt: skip
            raised.append(event)
            by_id[event.id] = event
        elif (opened := by_id.get(t.event_id)) is not None:
            opened.cleared_at = m.time
        else:
            cleared.append(store.Clearing(t.event_id, m.time, None))
    return after, raised, cleared


async def sweep_device_alarms(pool: asyncpg.Pool) -> tuple[int, int]:
    """One pass over every enabled DEVICE_ALARM rule; (events raised, events cleared)."""
    raised = cleared = 0
    async with pool.acquire() as conn:
        rules = [rule_of(r) for r in await store.no_data_rules(conn, "device_alarm")]
    for rule in rules:
        async with pool.acquire() as conn:
            devices = await store.scoped_devices(
                conn, rule.client_id, rule.device_id, rule.device_type, rule.device_filter
            )
        for device_id, _ in devices:
            async with pool.acquire() as conn, conn.transaction():
                r, c = await _one(conn, rule, device_id)
            raised += r
            cleared += c
    return raised, cleared


async def _one(conn: asyncpg.Connection, rule: Rule, device_id: uuid.UUID) -> tuple[int, int]:
    assert rule.device_alarm_severity is not None
    stored = await store.lock_state(conn, rule.client_id, rule.id, device_id)
    through = await alarm_store.walked_through(conn, rule.id, device_id)
    # A rule applies from when it exists: alarms before it set the starting point only.
    start = through or rule.created_at
    moments = timeline(
        await alarm_store.alarm_marks(conn, device_id, MAX_ALARMS), rule.device_alarm_severity
    )
    new = [m for m in moments if start is None or m.time > start]
    if through is None and start is not None:
        # The first walk: the condition as it stands when the rule was made counts from then.
        before = [m for m in moments if m.time <= start]
        if before and before[-1].holds:
            new.insert(0, Moment(start, True, before[-1].open_codes))
    if not new:
        return 0, 0
    state = State(
        stored.event_id,
        None if stored.pending_since is None else us_of(stored.pending_since),
        None if stored.clear_since is None else us_of(stored.clear_since),
    )
    after, raised, cleared = walk(rule, device_id, state, new)
    changed = []
    if after != state:
        changed.append(
            store.StoredState(
                rule.id, device_id, after.event_id,
                None if after.pending_since_us is None else time_of(after.pending_since_us),
                None if after.clear_since_us is None else time_of(after.clear_since_us),
            )
        )  # fmt: skip
    await store.write_evaluation(conn, rule.client_id, raised, cleared, changed, {})
    await alarm_store.set_walked_through(conn, rule.id, device_id, new[-1].time)
    return len(raised), len(cleared)
