"""Devices: all their SQL, including the metadata history every update writes.

Every read takes a :class:`DeviceFilter`: the tenant (None on the staff path) and, for
operators and viewers, the devices assigned to them. Row-level security enforces the tenant
part again; the assignment part is this filter's promise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists, InvalidArgument
from lifebox_grpc.store.pool import fetchrow_in_tenant
from lifebox_grpc.store.presence import Presence  # presence (issue 13)

# Online means "seen within this many expected intervals".
ONLINE_INTERVALS = 3


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices a caller may see: ``client_id`` None is every tenant (staff);
    ``device_ids`` None is every device of the tenant, otherwise only those.

    ``staff`` says the caller is platform staff, for the reads that set their own
    row-level security scope (:func:`get_device` outside a transaction): a None client
    without it is no tenant, and row-level security shows nothing.
    """

    client_id: uuid.UUID | None
    device_ids: tuple[uuid.UUID, ...] | None
    staff: bool = False

    @property
    def device_list(self) -> list[uuid.UUID] | None:
        return None if self.device_ids is None else list(self.device_ids)


@dataclass(frozen=True)
class Location:
    """A device's position at a time, as stored."""

    time: datetime
    latitude: float
    longitude: float
    altitude_m: float | None
    accuracy_m: float | None
    source: str


@dataclass(frozen=True)
class Device:
    """A device as stored, with its derived online flag and latest location."""

    id: uuid.UUID
    client_id: uuid.UUID
    serial: str
    name: str
    device_type: str
    model: str | None
    firmware_version: str | None
    status: str
    expected_interval_s: int
    last_seen_at: datetime | None
    online: bool
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None
    latest_location: Location | None
    # --- presence (issue 13) --- None: the device never published its status
    presence: Presence | None = None


@dataclass(frozen=True)
class NewDevice:
    """What creating a device takes (validated by the caller)."""

    serial: str
    name: str
    device_type: str
    model: str | None
    firmware_version: str | None
    status: str
    expected_interval_s: int
    metadata: dict[str, Any]


# Columns a caller may change, and the API path each change is recorded under.
UPDATABLE: dict[str, str] = {
    "name": "name",
    "device_type": "device_type",
    "model": "model",
    "firmware_version": "firmware_version",
    "status": "status",
    "expected_interval_s": "expected_interval_seconds",
    "decommissioned_at": "decommission_time",
}

_ONLINE = (
    f"coalesce(d.last_seen_at >= now() - make_interval(secs => d.expected_interval_s * "
    f"{ONLINE_INTERVALS}), false) AS online"
)
_DEVICE = (
    "d.id, d.client_id, d.serial, d.name, d.device_type, d.model, d.firmware_version, "
    "d.status, d.expected_interval_s, d.last_seen_at, d.metadata::text AS metadata, "
    "d.created_at, d.updated_at, d.decommissioned_at, " + _ONLINE
)
# --- presence (issue 13) --- online is the presence state once the device has one (a
# device just created has none: _DEVICE above is right for RETURNING).
_PRESENCE = (
    "CASE WHEN p.state IS NOT NULL THEN p.state = 'online' ELSE "
    + _ONLINE.removesuffix(" AS online")
    + " END AS online, p.state AS presence_state, p.session AS presence_session, "
    "p.cause AS presence_cause, p.last_connect_at AS presence_connect_at, "
    "p.last_disconnect_at AS presence_disconnect_at, p.updated_at AS presence_updated_at"
)
_SELECT = f"""
SELECT {_DEVICE.removesuffix(_ONLINE)}{_PRESENCE}, l.time AS loc_time, l.latitude,
       l.longitude, l.altitude_m, l.accuracy_m, l.source
FROM devices d
LEFT JOIN device_latest_locations l ON l.device_id = d.id
LEFT JOIN device_presence p ON p.device_id = d.id
"""
# What a DeviceFilter lets a caller see of ``devices d``: $1 the client (None: any), $2 the
# device ids (None: all). Callers number their own parameters from $3.
VISIBLE = "($1::uuid IS NULL OR d.client_id = $1) AND ($2::uuid[] IS NULL OR d.id = ANY($2))"
_ONE_DEVICE = f"{_SELECT} WHERE d.id = $3 AND {VISIBLE}"


def _device(row: Mapping[str, Any]) -> Device:
    location = None
    if row.get("loc_time") is not None:
        location = Location(
            row["loc_time"],
            row["latitude"],
            row["longitude"],
            row["altitude_m"],
            row["accuracy_m"],
            row["source"],
        )
    return Device(
        id=row["id"],
        client_id=row["client_id"],
        serial=row["serial"],
        name=row["name"],
        device_type=row["device_type"],
        model=row["model"],
        firmware_version=row["firmware_version"],
        status=row["status"],
        expected_interval_s=row["expected_interval_s"],
        last_seen_at=row["last_seen_at"],
        online=row["online"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        decommissioned_at=row["decommissioned_at"],
        latest_location=location,
        presence=_presence(row),  # presence (issue 13)
    )


def _presence(row: Mapping[str, Any]) -> Presence | None:
    """presence (issue 13): the joined device_presence columns, if the device has a row."""
    if row.get("presence_state") is None:
        return None
    return Presence(
        row["presence_state"],
        row["presence_session"],
        row["presence_cause"],
        row["presence_connect_at"],
        row["presence_disconnect_at"],
        row["presence_updated_at"],
    )


def _serial_taken(serial: str) -> AlreadyExists:
    return AlreadyExists(f"a device with serial {serial!r} already exists")


async def create_device(conn: asyncpg.Connection, client_id: uuid.UUID, new: NewDevice) -> Device:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO devices AS d (client_id, serial, name, device_type, model,
                firmware_version, status, expected_interval_s, metadata)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
            RETURNING {_DEVICE}
            """,
            client_id,
            new.serial,
            new.name,
            new.device_type,
            new.model,
            new.firmware_version,
            new.status,
            new.expected_interval_s,
            json.dumps(new.metadata),
        )
    except asyncpg.UniqueViolationError as exc:
        raise _serial_taken(new.serial) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise InvalidArgument.field("client_id", "no such client") from exc
    assert row is not None
    return _device(row)


async def create_devices(
    conn: asyncpg.Connection, client_id: uuid.UUID, rows: Sequence[NewDevice]
) -> dict[str, Device]:
    """Insert many devices in one statement; returns those created by serial (a serial
    already taken is skipped, not an error)."""
    if not rows:
        return {}
    try:
        records = await conn.fetch(
            f"""
            INSERT INTO devices AS d (client_id, serial, name, device_type, model,
                firmware_version, status, expected_interval_s, metadata)
            SELECT $1, s, n, t, m, f, st, i, md::jsonb
            FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                        $7::text[], $8::int[], $9::text[]) AS r(s, n, t, m, f, st, i, md)
            ON CONFLICT (serial) DO NOTHING
            RETURNING {_DEVICE}
            """,
            client_id,
            [r.serial for r in rows],
            [r.name for r in rows],
            [r.device_type for r in rows],
            [r.model for r in rows],
            [r.firmware_version for r in rows],
            [r.status for r in rows],
            [r.expected_interval_s for r in rows],
            [json.dumps(r.metadata) for r in rows],
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise InvalidArgument.field("client_id", "no such client") from exc
    return {rec["serial"]: _device(rec) for rec in records}


async def get_device(
    conn: asyncpg.Connection, device_id: uuid.UUID, scope: DeviceFilter, *, lock: bool = False
) -> Device | None:
    """The device if ``scope`` may see it; ``lock`` holds it for update until commit."""
    if lock:
        # Lock first (no outer join may carry FOR UPDATE), then read it whole.
        found = await conn.fetchval(
            f"SELECT d.id FROM devices d WHERE d.id = $3 AND {VISIBLE} FOR UPDATE",
            scope.client_id,
            scope.device_list,
            device_id,
        )
        if found is None:
            return None
    row = await fetchrow_in_tenant(
        conn,
        scope.client_id,
        scope.staff,
        _ONE_DEVICE,
        scope.client_id,
        scope.device_list,
        device_id,
    )
    return _device(row) if row else None


async def visible_device_ids(
    conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID], scope: DeviceFilter
) -> set[uuid.UUID]:
    """Those of ``device_ids`` that ``scope`` may see."""
    rows = await conn.fetch(
        f"SELECT d.id FROM devices d WHERE d.id = ANY($3::uuid[]) AND {VISIBLE}",
        scope.client_id,
        scope.device_list,
        list(device_ids),
    )
    return {row["id"] for row in rows}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_devices(
    conn: asyncpg.Connection,
    scope: DeviceFilter,
    *,
    status: str | None,
    device_type: str | None,
    search: str | None,
    after_serial: str | None,
    limit: int,
    presence_state: str | None = None,  # presence (issue 13)
) -> list[Device]:
    """Visible devices ordered by serial (unique and immutable, so a cursor on it neither
    repeats nor skips a device while others are added)."""
    rows = await conn.fetch(
        f"""
        {_SELECT}
        WHERE {VISIBLE}
          AND ($3::text IS NULL OR d.status = $3)
          AND ($4::text IS NULL OR d.device_type = $4)
          AND ($5::text IS NULL OR d.name ILIKE $5 OR d.serial ILIKE $5)
          AND ($6::text IS NULL OR d.serial > $6)
          AND ($8::text IS NULL OR p.state = $8)
        ORDER BY d.serial
        LIMIT $7
        """,
        scope.client_id,
        scope.device_list,
        status,
        device_type,
        _like(search) if search else None,
        after_serial,
        limit,
        presence_state,
    )
    return [_device(r) for r in rows]


def _history_rows(
    device: Device, changes: Mapping[str, Any], metadata: dict[str, Any] | None
) -> list[tuple[str, str | None, str | None]]:
    """(path, old JSON, new JSON) for every value that actually changes."""
    out: list[tuple[str, str | None, str | None]] = []
    for column, new in changes.items():
        old = getattr(device, column)
        if old != new:
            out.append((UPDATABLE[column], _json(old), _json(new)))
    if metadata is not None:
        for key in sorted(set(device.metadata) | set(metadata)):
            old, new = device.metadata.get(key), metadata.get(key)
            if key not in metadata or key not in device.metadata or old != new:
                out.append(
                    (
                        f"metadata.{key}",
                        json.dumps(old) if key in device.metadata else None,
                        json.dumps(new) if key in metadata else None,
                    )
                )
    return out


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    return json.dumps(value)


async def apply_update(
    conn: asyncpg.Connection,
    device: Device,
    changes: Mapping[str, Any],
    metadata: dict[str, Any] | None,
    actor: uuid.UUID | None,
) -> int:
    """Write ``changes`` (column → value, keys of :data:`UPDATABLE`) and the new
    ``metadata`` (None: unchanged) to a device locked by :func:`get_device`, and one history
    row per changed value, in the caller's transaction. Returns how many values changed."""
    history = _history_rows(device, changes, metadata)
    if not history:
        return 0
    sets = [f"{column} = ${i}" for i, column in enumerate(changes, start=2)]
    args: list[Any] = list(changes.values())
    if metadata is not None:
        sets.append(f"metadata = ${len(args) + 2}::jsonb")
        args.append(json.dumps(metadata))
    await conn.execute(f"UPDATE devices SET {', '.join(sets)} WHERE id = $1", device.id, *args)
    await conn.execute(
        """
        INSERT INTO device_metadata_history
            (client_id, device_id, changed_by, path, old_value, new_value)
        SELECT $1, $2, $3, p, o::jsonb, n::jsonb
        FROM unnest($4::text[], $5::text[], $6::text[]) AS h(p, o, n)
        """,
        device.client_id,
        device.id,
        actor,
        [h[0] for h in history],
        [h[1] for h in history],
        [h[2] for h in history],
    )
    return len(history)


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded change."""

    id: uuid.UUID
    changed_by: uuid.UUID | None
    path: str
    old_value: Any
    new_value: Any
    changed_at: datetime


async def list_history(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[HistoryEntry]:
    """A device's changes, newest first (keyset on changed_at, id)."""
    rows = await conn.fetch(
        """
        SELECT id, changed_by, path, old_value::text AS old, new_value::text AS new, changed_at
        FROM device_metadata_history
        WHERE device_id = $1 AND ($2::timestamptz IS NULL OR (changed_at, id) < ($2, $3))
        ORDER BY changed_at DESC, id DESC
        LIMIT $4
        """,
        device_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [
        HistoryEntry(
            r["id"],
            r["changed_by"],
            r["path"],
            None if r["old"] is None else json.loads(r["old"]),
            None if r["new"] is None else json.loads(r["new"]),
            r["changed_at"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Removed:
    """Row counts a hard delete removed along with the device."""

    telemetry_events: int
    locations: int
    history_entries: int
    snapshots: int
    assignments: int
    alarms: int
    data_points: int


async def hard_delete(conn: asyncpg.Connection, device_id: uuid.UUID) -> Removed:
    """Delete a device locked by :func:`get_device`; the foreign keys cascade to its rows,
    which are counted first in the same transaction."""
    row = await conn.fetchrow(
        """
        SELECT
          (SELECT count(*) FROM telemetry_events WHERE device_id = $1) AS telemetry_events,
          (SELECT count(*) FROM device_locations WHERE device_id = $1) AS locations,
          (SELECT count(*) FROM device_metadata_history WHERE device_id = $1) AS history_entries,
          (SELECT count(*) FROM device_metadata_snapshots WHERE device_id = $1) AS snapshots,
          (SELECT count(*) FROM user_device_assignments WHERE device_id = $1) AS assignments,
          (SELECT count(*) FROM device_alarms WHERE device_id = $1) AS alarms,
          (SELECT count(*) FROM device_data_points WHERE device_id = $1) AS data_points
        """,
        device_id,
    )
    assert row is not None
    await conn.execute("DELETE FROM devices WHERE id = $1", device_id)
    return Removed(**{name: int(row[name]) for name in Removed.__dataclass_fields__})
