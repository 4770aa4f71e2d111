"""Ingest's alarm evaluation: committed readings through the tenant's rules, per device in
reading-time order, exactly once whatever the workers and restarts.

Where it runs, and why after commit: an ingest transaction commits a batch and is acked at
once; evaluation then reads the device's readings *from the table* after its durable
watermark, under that watermark row's lock, and commits events, rule states and the new
watermark together. So

- only committed readings are evaluated (never a rejected one), and one evaluation sees the
  readings of every worker (two workers holding consecutive readings of one device evaluate
  them once, in time order, whichever gets the lock);
- a crash anywhere loses nothing and doubles nothing: before the evaluation commits, nothing
  of it exists and the next one starts from the same watermark over the same rows; the
  sweeper finds devices whose readings are past their watermark (a worker killed between
  its commit and the evaluation) and evaluates them;
- readings are not held back by alarm work: evaluation is off the commit path.

A device is evaluated ``grace`` after a commit noted it, so that a reading another worker
(or a concurrent batch of this one) received earlier but committed a little later is
already in the table, and the device is evaluated in reading-time order as one worker that
never stopped would. A reading committed after its device's watermark passed it (a commit
later than the grace) is not evaluated: late readings are neither evaluated nor counted yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import string
import time
import uuid
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lifebox_grpc.alarms import metrics
from lifebox_grpc.alarms.conditions import (
    BOOLEAN_FIELDS,
    CompiledRule,
    RateRule,
    compile_rule,
    filter_key,
)
from lifebox_grpc.alarms.machine import State, Transition, step
from lifebox_grpc.alarms.rate import Series, rate_conditions
from lifebox_grpc.native import ExpressionColumn, ExpressionError, evaluate_conditions
from lifebox_grpc.store import alarm_evaluation as store
from lifebox_grpc.store import alarm_rules as rule_store

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
# Devices evaluated in one transaction.
DEVICES_PER_EVALUATION = 200


def us_of(value: datetime) -> int:
    return (value - EPOCH) // ONE_US


def time_of(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass
class TenantRules:
    """A tenant's enabled rules, as loaded at ``loaded_at`` (monotonic)."""

    loaded_at: float
    compiled: list[CompiledRule | RateRule]


class _Formatter(string.Formatter):
    """Fills a message template; an unknown name stays as written."""

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"


_FORMATTER = _Formatter()


def fill_message(template: str | None, values: dict[str, Any]) -> str | None:
    if not template:
        return None
    try:
        return _FORMATTER.vformat(template, (), values)
    except (ValueError, IndexError, AttributeError, KeyError):
        return template  # a template that is not one is shown as written


@dataclass(frozen=True)
class Found:
    """What one evaluation of one device found (before it is written)."""

    raised: list[store.NewEvent] = field(default_factory=list)
    cleared: list[store.Clearing] = field(default_factory=list)
    changed: list[store.StoredState] = field(default_factory=list)
    # The events of ``raised`` by id (a clear of one of them is written into it).
    by_id: dict[uuid.UUID, store.NewEvent] = field(default_factory=dict)


def value_at(row: Any, name: str | None) -> float | None:
    if name is None:
        return None
    value = row[name]
    return None if value is None else float(value)


def evaluate_device(
    device_id: uuid.UUID,
    device_name: str,
    rules: list[CompiledRule | RateRule],
    rows: list[Any],
    states: dict[uuid.UUID, State],
    budget_us: int,
    history: dict[str, Series] | None = None,
) -> tuple[Found, dict[uuid.UUID, State], int]:
    """Run one device's readings (time order) through its rules; (found, new states, rows
    evaluated: fewer than given when the budget ran out). ``history``: the values of each
    rate rule's field before these readings, within the widest window (none: a rate starts
    at the second reading)."""
    found = Found()
    n = len(rows)
    if n == 0 or not rules:
        return found, states, n
    exprs_rules = [r for r in rules if isinstance(r, CompiledRule)]
    done = n
    out = b""
    if exprs_rules:
        fields = sorted({f for r in exprs_rules for f in r.fields})
        columns = [
            ExpressionColumn(
                f,
                f in BOOLEAN_FIELDS,
                array(
                    "d", [math.nan if (v := row[f]) is None else float(v) for row in rows]
                ).tobytes(),
            )
            for f in fields
        ]
        exprs = [e for r in exprs_rules for e in (r.raise_expr, r.clear_expr)]
        out, done = evaluate_conditions(exprs, columns, n, budget_us)
        if done < n:
            metrics.ALARM_BUDGET_EXCEEDED.inc()
    times = [us_of(row["time"]) for row in rows[:done]]
    conditions: list[tuple[CompiledRule | RateRule, bytes, bytes, list[float | None]]] = []
    for i, by_expr in enumerate(exprs_rules):
        raising = out[2 * i * n : 2 * i * n + done]
        clearing = out[(2 * i + 1) * n : (2 * i + 1) * n + done]
        conditions.append((by_expr, raising, clearing, []))
    for by_rate in (r for r in rules if isinstance(r, RateRule)):
        f = by_rate.fields[0]
        values = [value_at(row, f) for row in rows[:done]]
        prior = (history or {}).get(f, Series())
        conditions.append((by_rate, *rate_conditions(by_rate, prior, times, values)))
    new_states = dict(states)
    for compiled, raising, clearing, rates in conditions:
        rule = compiled.rule
        before = states.get(rule.id, State())
        after, transitions = step(
            before, raising, clearing, times, rule.duration_s * 1_000_000,
            rule.clear_after_s * 1_000_000,
        )  # fmt: skip
        for t in transitions:
            _record(
                found, compiled, device_id, device_name, rows[t.index], t,
                rates[t.index] if rates else None,
            )  # fmt: skip
        if after != before:
            new_states[rule.id] = after
            found.changed.append(
                store.StoredState(
                    rule.id, device_id, after.event_id,
                    None if after.pending_since_us is None else time_of(after.pending_since_us),
                    None if after.clear_since_us is None else time_of(after.clear_since_us),
                )
            )  # fmt: skip
    return found, new_states, done


def _record(
    found: Found,
    compiled: CompiledRule | RateRule,
    device_id: uuid.UUID,
    device_name: str,
    row: Any,
    t: Transition,
    rate: float | None = None,
) -> None:
    rule = compiled.rule
    value = value_at(row, rule.field)
    if t.raised:
        readings = {f: row[f] for f in compiled.fields}
        message = fill_message(
            rule.message_template,
            {**readings, "value": value, "field": rule.field, "rule": rule.name,
             "device": device_name, "rate": rate},
        )  # fmt: skip
        details: dict[str, Any] = {"fields": readings}
        if rate is not None:
            details["rate_per_s"] = rate
        event = store.NewEvent(
            t.event_id, rule.id, device_id, rule.severity, row["time"], value, message, details,
        )  # fmt: skip
        found.raised.append(event)
        found.by_id[event.id] = event
        return
    opened = found.by_id.get(t.event_id)
    if opened is not None:  # raised by these same readings: inserted cleared
        opened.cleared_at, opened.clear_value = row["time"], value
    else:
        found.cleared.append(store.Clearing(t.event_id, row["time"], value))


def batch_devices(
    row_times_us: bytes,
    rows_per_message: list[int],
    device_clients: list[tuple[uuid.UUID, uuid.UUID]],
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """(device, client, earliest reading time) of each device with rows in a decoded batch."""
    times = array("q")
    times.frombytes(row_times_us)
    first: dict[uuid.UUID, tuple[uuid.UUID, int]] = {}
    at = 0
    for (device, client), count in zip(device_clients, rows_per_message, strict=True):
        if not count:
            continue
        lo = min(times[at : at + count])
        at += count
        known = first.get(device)
        if known is None or lo < known[1]:
            first[device] = (client, lo)
    return [(device, client, lo) for device, (client, lo) in first.items()]


class AlarmEvaluator:
    """Evaluates the devices committed batches name, ``grace_s`` after their commit."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        grace_s: float = 0.3,
        rules_ttl_s: float = 1.0,
        budget_us: int = 200_000,
        max_readings: int = 20_000,
        errors: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresError),
    ) -> None:
        self.pool = pool
        self.grace_s = grace_s
        self.rules_ttl_s = rules_ttl_s
        self.budget_us = budget_us
        self.max_readings = max_readings
        self.errors = errors
        self._rules: dict[uuid.UUID, TenantRules] = {}
        # device -> (client, due at (monotonic), earliest reading time noted, us)
        self._due: dict[uuid.UUID, tuple[uuid.UUID, float, int]] = {}
        self._wake = asyncio.Event()
        self.evaluations = 0

    def note(self, devices: Iterable[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
        """Devices of a committed batch, as (device, client, its earliest reading there)."""
        due = time.monotonic() + self.grace_s
        for device, client, first_us in devices:
            known = self._due.get(device)
            if known is None:
                self._due[device] = (client, due, first_us)
            else:
                self._due[device] = (client, known[1], min(known[2], first_us))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._due)

    async def _tenant_rules(self, client: uuid.UUID) -> list[CompiledRule | RateRule]:
        cached = self._rules.get(client)
        now = time.monotonic()
        if cached is not None and now - cached.loaded_at < self.rules_ttl_s:
            return cached.compiled
        async with self.pool.acquire() as conn:
            rules = await rule_store.enabled_rules(conn, client)
        # Checking an expression costs about half a millisecond (the ANTLR parser): a rule
        # is compiled again only when it changed.
        known = {c.rule.id: c for c in cached.compiled} if cached is not None else {}
        compiled: list[CompiledRule | RateRule] = []
        for rule in rules:
            same = known.get(rule.id)
            if same is not None and same.rule == rule:
                compiled.append(same)
                continue
            try:
                c = compile_rule(rule)
            except (ExpressionError, ValueError):
                log.error("alarm rule does not check; skipped", extra={"rule_id": str(rule.id)})
                continue
            if c is not None:
                compiled.append(c)
        self._rules[client] = TenantRules(now, compiled)
        return compiled

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate due devices until ``stop``, then what is due at once."""
        while not stop.is_set():
            if not self._due:
                self._wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                continue
            now = time.monotonic()
            earliest = min(due for _, due, _ in self._due.values())
            if earliest > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), earliest - now)
                continue
            await self.evaluate_due(now)
        await self.evaluate_due(math.inf)

    async def evaluate_due(self, now: float) -> None:
        taken: dict[uuid.UUID, dict[uuid.UUID, int]] = defaultdict(dict)
        for device, (client, due, first_us) in list(self._due.items()):
            if due <= now:
                taken[client][device] = first_us
                del self._due[device]
        for client, devices in taken.items():
            items = sorted(devices.items())
            for i in range(0, len(items), DEVICES_PER_EVALUATION):
                chunk = dict(items[i : i + DEVICES_PER_EVALUATION])
                try:
                    again = await self.evaluate(client, chunk)
                except self.errors as exc:
                    log.warning(
                        "alarm evaluation failed; retrying",
                        extra={
                            "error": type(exc).__name__,
                            "detail": str(exc)[:300],
                            "devices": len(chunk),
                        },
                    )
                    metrics.ALARM_EVALUATION_RETRIES.inc()
                    again = chunk
                    await asyncio.sleep(0.5)
                for device, first_us in again.items():
                    self._due.setdefault(device, (client, time.monotonic(), first_us))

    async def evaluate(
        self, client: uuid.UUID, devices: dict[uuid.UUID, int]
    ) -> dict[uuid.UUID, int]:
        """Evaluate these devices of the client in one transaction; the devices with
        readings left over (more than one evaluation takes) to evaluate again."""
        compiled = await self._tenant_rules(client)
        if not compiled:
            return {}
        started = time.perf_counter()
        again: dict[uuid.UUID, int] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            cursors = await store.lock_cursors(
                conn, client, {d: time_of(us - 1) for d, us in devices.items()}
            )
            filters = sorted(
                {filter_key(r.rule.device_filter) for r in compiled if r.rule.device_filter}
            )
            matches = await store.metadata_matches(conn, [c.device_id for c in cursors], filters)
            scoped = {
                c.device_id: [
                    r
                    for r in compiled
                    if r.rule.applies_to(
                        c.device_id,
                        c.device_type,
                        frozenset(f for d, f in matches if d == c.device_id),
                    )
                ]
                for c in cursors
            }
            await store.skip_to_latest(
                conn, client, [c.device_id for c in cursors if not scoped[c.device_id]]
            )
            cursors = [c for c in cursors if scoped[c.device_id]]
            if not cursors:
                return {}
            fields = sorted({f for rules in scoped.values() for r in rules for f in r.fields})
            rows = await store.readings_after(conn, cursors, fields, self.max_readings)
            by_device: dict[uuid.UUID, list[Any]] = defaultdict(list)
            for row in rows:
                by_device[row["device_id"]].append(row)
            history = await self._rate_history(conn, cursors, scoped)
            stored = await store.states(conn, client, [c.device_id for c in cursors])
            states: dict[uuid.UUID, dict[uuid.UUID, State]] = defaultdict(dict)
            for s in stored:
                states[s.device_id][s.rule_id] = State(
                    s.event_id,
                    None if s.pending_since is None else us_of(s.pending_since),
                    None if s.clear_since is None else us_of(s.clear_since),
                )
            total = Found()
            watermarks: dict[uuid.UUID, datetime] = {}
            for cursor in cursors:
                device_rows = by_device.get(cursor.device_id, [])
                if not device_rows:
                    continue
                found, _, done = evaluate_device(
                    cursor.device_id, str(cursor.device_id), scoped[cursor.device_id],
                    device_rows, states[cursor.device_id], self.budget_us,
                    history.get(cursor.device_id),
                )  # fmt: skip
                total.raised.extend(found.raised)
                total.by_id.update(found.by_id)
                total.cleared.extend(found.cleared)
                total.changed.extend(found.changed)
                if done:
                    watermarks[cursor.device_id] = device_rows[done - 1]["time"]
                if done < len(device_rows) or len(device_rows) >= self.max_readings:
                    again[cursor.device_id] = us_of(
                        device_rows[min(done, len(device_rows) - 1)]["time"]
                    )
                metrics.ALARM_READINGS_EVALUATED.inc(done)
            await store.write_evaluation(
                conn, client, total.raised, total.cleared, total.changed, watermarks
            )
        metrics.ALARM_EVENTS.labels("raised").inc(len(total.raised))
        metrics.ALARM_EVENTS.labels("cleared").inc(len(total.cleared))
        metrics.ALARM_EVALUATION_SECONDS.observe(time.perf_counter() - started)
        self.evaluations += 1
        return again

    async def _rate_history(
        self,
        conn: asyncpg.Connection,
        cursors: list[store.Cursor],
        scoped: dict[uuid.UUID, list[CompiledRule | RateRule]],
    ) -> dict[uuid.UUID, dict[str, Series]]:
        """Per device and rate field, the values at or before the watermark within the
        widest window of the device's rate rules (a rate spans readings of two batches)."""
        wanted = [
            (c, rates)
            for c in cursors
            if (rates := [r for r in scoped[c.device_id] if isinstance(r, RateRule)])
        ]
        out: dict[uuid.UUID, dict[str, Series]] = {}
        if not wanted:
            return out
        fields = sorted({r.fields[0] for _, rates in wanted for r in rates})
        starts = {
            c.device_id: (
                c.evaluated_through - timedelta(microseconds=max(r.window_us for r in rates)),
                c.evaluated_through,
            )
            for c, rates in wanted
        }
        rows = await store.readings_within(conn, starts, fields, self.max_readings)
        for row in rows:
            series = out.setdefault(row["device_id"], {})
            for f in fields:
                if (v := row[f]) is not None:
                    series.setdefault(f, Series()).append(us_of(row["time"]), float(v))
        return out
