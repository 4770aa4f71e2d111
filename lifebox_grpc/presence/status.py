"""The device's side of the presence contract: the payload of ``lifebox/v1/{serial}/status``.

On connect a device publishes, retained, ``{"state": "online", "session": N}`` and sets a
Last Will of ``{"state": "offline", "session": N}`` on the same topic (retained, QoS 1);
before a clean disconnect it publishes ``{"state": "offline", "session": N, "reason":
"clean"}``. ``session`` grows with every connection (0 to 2^63 - 1). Other keys are ignored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from lifebox_grpc.ingest.messages import MessageError
from lifebox_grpc.ingest.messages import _object as json_object
from lifebox_grpc.store.presence import PresenceEvent

MAX_SESSION = 2**63 - 1
STATES = ("online", "offline")
REASONS = ("clean",)


@dataclass(frozen=True)
class Status:
    """A decoded status message: the state, its session and the cause it records."""

    state: str
    session: int
    cause: str  # connect (online), clean (said so) or keepalive (a Last Will)

    def event(
        self, client_id: uuid.UUID, device_id: uuid.UUID, at: datetime, source: str
    ) -> PresenceEvent:
        return PresenceEvent(client_id, device_id, self.state, self.session, self.cause, at, source)


def decode_status(payload: bytes) -> Status:
    """The status a device published, or :class:`MessageError` (a stored reject)."""
    body = json_object(payload)
    state = body.get("state")
    if state not in STATES:
        raise MessageError("invalid_value", "field state: one of online, offline")
    session = body.get("session")
    if session is None:
        raise MessageError("missing_field", "field session is required")
    if isinstance(session, bool) or not isinstance(session, int):
        raise MessageError("type_error", "field session: expected an integer")
    if not 0 <= session <= MAX_SESSION:
        raise MessageError("invalid_value", f"field session: 0 to {MAX_SESSION}")
    reason = body.get("reason")
    if reason is not None and (state != "offline" or reason not in REASONS):
        raise MessageError("invalid_value", 'field reason: only "clean", and only when offline')
    if state == "online":
        return Status("online", session, "connect")
    return Status("offline", session, "clean" if reason == "clean" else "keepalive")
