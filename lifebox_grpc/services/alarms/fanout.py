"""Live alarm changes for StreamAlarmEvents, on the process's stream engine.

Every statement that writes alarm_event_changes notifies ``lifebox_alarm_changes`` with
"client_id:device_id" per device it touched, delivered at commit (0079), whoever wrote it
(ingest's evaluator, the no-data sweeper, an acknowledgment). The hub (a
:class:`~lifebox_grpc.streams.notices.NoticeHub` on the process's one LISTEN connection)
wakes the streams of that client (staff streams: every client's); a woken stream reads the
changes itself, under its own scope, so it never sees what its caller may not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lifebox_grpc.streams.notices import NoticeHub

CHANNEL = "lifebox_alarm_changes"


@dataclass(frozen=True)
class Change:
    """Committed changes of one device of one client."""

    client_id: uuid.UUID
    device_id: uuid.UUID


def parse_change(payload: str) -> Change:
    client_text, _, device_text = payload.partition(":")
    return Change(uuid.UUID(client_text), uuid.UUID(device_text))


class AlarmFanout(NoticeHub[Change]):
    """The per-process hub; ``subscribe(accepts)`` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, CHANNEL, parse_change, "alarm_events")
