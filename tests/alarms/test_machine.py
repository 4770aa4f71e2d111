"""The per-rule state machine on its own: runs, durations, and event identity."""

from __future__ import annotations

from lifebox_grpc.alarms.machine import State, change_points, step

S = 1_000_000


def conds(values: str) -> bytes:
    return bytes(int(c) for c in values)


def test_change_points_are_the_starts_of_runs() -> None:
    assert change_points(conds("0001102")) == [0, 3, 5, 6]
    assert change_points(conds("1111")) == [0]
    assert change_points(b"") == []


def test_raise_clear_raise_in_one_batch_gives_two_events_and_the_last_stays_open() -> None:
    raising = conds("0110011")
    clearing = conds("1001100")
    times = [i * S for i in range(7)]
    state, transitions = step(State(), raising, clearing, times, 0, 0)
    assert [(t.raised, t.index) for t in transitions] == [
        (True, 1),
        (False, 3),
        (True, 5),
    ]
    assert transitions[0].event_id == transitions[1].event_id
    assert transitions[2].event_id != transitions[0].event_id
    assert state.event_id == transitions[2].event_id


def test_unknown_readings_change_nothing_and_a_duration_spans_them() -> None:
    raising = conds("1211")
    clearing = conds("0200")
    times = [0, S, 2 * S, 3 * S]
    state, transitions = step(State(), raising, clearing, times, 3 * S, 0)
    assert [(t.raised, t.index) for t in transitions] == [(True, 3)]
    assert state.active


def test_state_carries_over_batches_as_one_run() -> None:
    times = [i * S for i in range(6)]
    whole, all_at_once = step(State(), conds("111111"), conds("000000"), times, 4 * S, 0)
    first, part = step(State(), conds("111"), conds("000"), times[:3], 4 * S, 0)
    second, rest = step(first, conds("111"), conds("000"), times[3:], 4 * S, 0)
    assert [t.index for t in all_at_once] == [4]
    assert part == []
    assert [t.index + 3 for t in rest] == [4]
    assert whole.active == second.active
