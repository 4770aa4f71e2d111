"""Live presence changes for StreamDeviceEvents, on the process's stream engine.

Every presence change is a ``device_connections`` row whose transaction also notifies
``lifebox_presence`` with ``{"id", "device_id", "client_id"}`` (migration 0055), delivered
only when it commits. The hub (a :class:`~lifebox_grpc.streams.notices.NoticeHub` on the
process's one LISTEN connection) queues each notice on every subscription that accepts it;
a stream keeps the ones its caller may see and reads those rows (committed, by id), so it
never sends a change whose transaction rolled back, and reads each row once. After the
listener was lost, subscriptions resynchronise by time; a stream whose client reads too
slowly ends with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lifebox_grpc.store.presence import CHANNEL, decode_notice
from lifebox_grpc.streams.notices import NoticeHub


@dataclass(frozen=True)
class Notice:
    """One committed presence change: its history row and whose it is."""

    id: int
    device_id: uuid.UUID
    client_id: uuid.UUID


def _notice(payload: str) -> Notice:
    return Notice(*decode_notice(payload))


class PresenceHub(NoticeHub[Notice]):
    """The per-process hub; ``subscribe(accepts)`` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, CHANNEL, _notice, "device_events")
