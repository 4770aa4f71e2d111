"""Live command updates for StreamCommandUpdates, on the process's stream engine.

Every command_executions row notifies ``lifebox_command_updates`` with "client_id:row id" as
it commits (0060), whoever wrote it (API, dispatcher, ingest). The hub (a
:class:`~lifebox_grpc.streams.notices.NoticeHub` on the process's one LISTEN connection)
queues each row id on the streams of that client (staff streams get every client's); a
stream reads the rows itself, under its own scope, so it never sees what its caller may not.
If the listener drops, streams resynchronise by time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lifebox_grpc.streams.notices import NoticeHub

CHANNEL = "lifebox_command_updates"


@dataclass(frozen=True)
class Update:
    """One committed trail row and its client."""

    client_id: uuid.UUID
    execution_id: uuid.UUID


def _update(payload: str) -> Update:
    client_text, _, row_text = payload.partition(":")
    return Update(uuid.UUID(client_text), uuid.UUID(row_text))


class CommandFanout(NoticeHub[Update]):
    """The per-process hub; ``subscribe(accepts)`` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, CHANNEL, _update, "command_updates")
