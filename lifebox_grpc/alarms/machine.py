"""How one rule moves on one device as readings come, in reading-time order.

The conditions of each reading are tri-state (1 holds, 0 does not, 2 unknown: a field the
condition reads is absent, which changes nothing). Inactive: the raising condition must hold
on consecutive readings for ``duration_s`` (from the first of them to the current one) and
the event is raised at that reading; a reading where it does not hold starts over. Active:
the clearing condition must likewise hold for ``clear_after_s``. With hysteresis the
clearing condition is narrower than "not raising", so a value oscillating around the
threshold raises once.

The machine works on runs of readings whose conditions do not change, so a batch where
nothing changes costs one step per rule, not one per reading. It is pure: the evaluator and
TestAlarmRule's dry run use it alike, and the state it keeps is what the database stores.
"""

from __future__ import annotations

import bisect
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

HOLDS, FAILS, UNKNOWN = 1, 0, 2
_RUNS = re.compile(rb"(.)\1*", re.DOTALL)


@dataclass(frozen=True)
class State:
    """Where a rule stands on a device (``alarm_rule_states``); times are reading times in
    Unix microseconds."""

    event_id: uuid.UUID | None = None
    pending_since_us: int | None = None
    clear_since_us: int | None = None

    @property
    def active(self) -> bool:
        return self.event_id is not None


@dataclass(frozen=True)
class Transition:
    """A raise or a clear of event ``event_id`` at reading ``index``."""

    raised: bool  # False: cleared
    index: int
    event_id: uuid.UUID


def change_points(conditions: bytes) -> list[int]:
    """Indices where a run of equal bytes starts (0 first)."""
    if not conditions:
        return []
    if conditions.count(conditions[:1]) == len(conditions):
        return [0]
    return [m.start() for m in _RUNS.finditer(conditions)]


def step(
    state: State,
    raising: bytes,
    clearing: bytes,
    times_us: Sequence[int],
    duration_us: int,
    clear_after_us: int,
    new_event_id: uuid.UUID | None = None,
) -> tuple[State, list[Transition]]:
    """The state after these readings (in time order) and the raises and clears they caused.

    A raise takes ``new_event_id`` for the state if given (else a fresh uuid4): the caller
    inserts the event under that id."""
    n = len(times_us)
    if n == 0:
        return state, []
    starts = sorted({*change_points(raising), *change_points(clearing)})
    bounds = [*starts, n]
    out: list[Transition] = []
    for run, start in enumerate(starts):
        i, end = start, bounds[run + 1]
        while i < end:
            if not state.active:
                value = raising[i]
                if value == UNKNOWN:
                    break
                if value == FAILS:
                    state = replace(state, pending_since_us=None)
                    break
                since = state.pending_since_us
                if since is None:
                    since = times_us[i]
                    state = replace(state, pending_since_us=since)
                k = max(i, bisect.bisect_left(times_us, since + duration_us, i, end))
                if k >= end:
                    break
                event = new_event_id or uuid.uuid4()
                new_event_id = None
                state = State(event_id=event)
                out.append(Transition(True, k, event))
                i = k + 1
            else:
                value = clearing[i]
                if value == UNKNOWN:
                    break
                if value == FAILS:
                    state = replace(state, clear_since_us=None)
                    break
                since = state.clear_since_us
                if since is None:
                    since = times_us[i]
                    state = replace(state, clear_since_us=since)
                k = max(i, bisect.bisect_left(times_us, since + clear_after_us, i, end))
                if k >= end:
                    break
                assert state.event_id is not None
                out.append(Transition(False, k, state.event_id))
                state = State()
                i = k + 1
    return state, out


def us_of(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int(value.timestamp()) * 1_000_000 + value.microsecond
