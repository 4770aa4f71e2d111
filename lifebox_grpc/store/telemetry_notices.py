"""The ``lifebox_telemetry`` NOTIFY payload: which commits added rows of which device.

Ingest writes one or more notifications per device and facts flush; ``serve`` reads them.
A commit is ``(xid, min_us, max_us, rows)``: the writing transaction's id
(``pg_current_xact_id()`` as an integer), the oldest and newest reading time it inserted for
the device (Unix µs) and how many rows (what a stream's buffer weighs it by; a notice of
three elements, from an older ingest, counts as one row).
Rows of a commit are exactly ``device_id = d AND time BETWEEN min AND max AND xmin = xid``
(low 32 bits), because ingest writes them at the top level of that transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

CHANNEL = "lifebox_telemetry"
# PostgreSQL refuses payloads of 8000 bytes or more. A commit entry is at most ~66
# characters (three signed 64-bit integers and a count), so 90 of them plus the ids stay below.
COMMITS_PER_NOTICE = 90


@dataclass(frozen=True)
class Commit:
    """One committed transaction's rows of one device."""

    xid: int
    min_us: int
    max_us: int
    rows: int = 1


def encode_notices(
    device_id: uuid.UUID, client_id: uuid.UUID, commits: Sequence[Commit]
) -> list[str]:
    """The payloads announcing ``commits`` (in commit order) of a device."""
    return [
        json.dumps(
            {
                "device_id": str(device_id),
                "client_id": str(client_id),
                "commits": [
                    [c.xid, c.min_us, c.max_us, c.rows] for c in commits[i : i + COMMITS_PER_NOTICE]
                ],
            },
            separators=(",", ":"),
        )
        for i in range(0, len(commits), COMMITS_PER_NOTICE)
    ]


def decode_notice(payload: str) -> tuple[uuid.UUID, list[Commit]]:
    """The device and commits of a payload; ValueError when it is not one of ours."""
    device_id, _client_id, commits = decode_notice_of_client(payload)
    return device_id, commits


def decode_notice_of_client(payload: str) -> tuple[uuid.UUID, uuid.UUID, list[Commit]]:
    """The device, its client and the commits of a payload; ValueError when it is not one
    of ours."""
    try:
        notice = json.loads(payload)
        device_id = uuid.UUID(notice["device_id"])
        client_id = uuid.UUID(notice["client_id"])
        commits = [Commit(*(int(v) for v in c[:4])) for c in notice["commits"]]
        if any(len(c) < 3 for c in notice["commits"]):
            raise ValueError("a commit needs its xid and time range")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("not a telemetry notification") from exc
    return device_id, client_id, commits
