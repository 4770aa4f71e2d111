"""AlarmService: rules and their dry run (:mod:`.rules`), events (:mod:`.events`).
Validation and mapping only; the SQL is in ``store/alarm_*.py``, evaluation in
``lifebox_grpc/alarms``."""

from __future__ import annotations

from lifebox_grpc.services.alarms.events import EventRpcs
from lifebox_grpc.services.alarms.fanout import AlarmFanout
from lifebox_grpc.services.alarms.rules import RuleRpcs

__all__ = ["AlarmFanout", "AlarmServicer"]


class AlarmServicer(RuleRpcs, EventRpcs):
    """The AlarmService handlers."""
