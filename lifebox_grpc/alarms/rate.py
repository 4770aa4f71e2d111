"""Rate-of-change conditions: the raising and clearing bytes of a rate rule over readings.

The rate at a reading is its value minus the value of the earliest reading (with the field)
in the window before it, per second between the two. The window reaches back over readings
already evaluated (``prior``, read from the table at or before the watermark), so the rate
is the same whichever batch or worker a reading came in: state is the readings themselves
and the rule's row in ``alarm_rule_states``, like every other kind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from lifebox_grpc.alarms.conditions import RateRule, compare
from lifebox_grpc.alarms.machine import FAILS, HOLDS, UNKNOWN


@dataclass
class Series:
    """(time in Unix microseconds, value) of one field, in time order."""

    times_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def append(self, time_us: int, value: float) -> None:
        self.times_us.append(time_us)
        self.values.append(value)


def rates_of(
    window_us: int, prior: Series, times_us: Sequence[int], values: Sequence[float | None]
) -> list[float | None]:
    """The rate (per second) at each reading; None where the reading has no value or no
    earlier value lies in ``[time - window, time)``."""
    window: deque[tuple[int, float]] = deque()
    first = times_us[0] if times_us else 0
    for t, v in zip(prior.times_us, prior.values, strict=True):
        if t < first:
            window.append((t, v))
    out: list[float | None] = []
    for t, value in zip(times_us, values, strict=True):
        if value is None:
            out.append(None)
            continue
        while window and window[0][0] < t - window_us:
            window.popleft()
        if window:
            t0, v0 = window[0]
            out.append((value - v0) / ((t - t0) / 1e6))
        else:
            out.append(None)
        window.append((t, value))
    return out


def rate_conditions(
    rule: RateRule, prior: Series, times_us: Sequence[int], values: Sequence[float | None]
) -> tuple[bytes, bytes, list[float | None]]:
    """(raising, clearing, rates) of the readings, tri-state like the native evaluator's."""
    rates = rates_of(rule.window_us, prior, times_us, values)
    (r_op, r_bound), (c_op, c_bound) = rule.raising, rule.clearing
    raising = bytearray(len(rates))
    clearing = bytearray(len(rates))
    for i, rate in enumerate(rates):
        if rate is None:
            raising[i] = clearing[i] = UNKNOWN
        else:
            raising[i] = HOLDS if compare(r_op, rate, r_bound) else FAILS
            clearing[i] = HOLDS if compare(c_op, rate, c_bound) else FAILS
    return bytes(raising), bytes(clearing), rates
