"""SQL of device_credentials (migrations 0043, 0046): a device's own MQTT credential.

The secret itself is never here: only its hash parts (broker/passwords.py). Reading a
credential returns its metadata and never the hash either; only :func:`broker_entries`, for
the broker's password file, reads the ``$7$`` form.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.broker.passwords import PasswordHash
from lifebox_grpc.broker.tls import IssuedCertificate
from lifebox_grpc.errors import AlreadyExists

PASSWORD = "password"  # noqa: S105 (a kind of credential, not a password)
CERTIFICATE = "certificate"
HISTORY_PATH = "credential"


@dataclass(frozen=True)
class Credential:
    """What a credential is, without its secret or hash."""

    id: uuid.UUID
    client_id: uuid.UUID
    device_id: uuid.UUID
    username: str
    kind: str
    created_at: datetime
    created_by: uuid.UUID | None
    rotated_at: datetime | None
    revoked_at: datetime | None
    revoked_by: uuid.UUID | None
    certificate_serial: str | None = None
    certificate_fingerprint: str | None = None
    certificate_not_after: datetime | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def history_value(self) -> dict[str, Any]:
        """How the device's history records this credential's state (no secret, no hash)."""
        return {
            "id": str(self.id),
            "kind": self.kind,
            "state": "live" if self.live else "revoked",
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
        }


_COLUMNS = (
    "id, client_id, device_id, username, kind, created_at, created_by, rotated_at, "
    "revoked_at, revoked_by, certificate_serial, certificate_fingerprint, certificate_not_after"
)


def _credential(row: asyncpg.Record) -> Credential:
    return Credential(
        row["id"],
        row["client_id"],
        row["device_id"],
        row["username"],
        row["kind"],
        row["created_at"],
        row["created_by"],
        row["rotated_at"],
        row["revoked_at"],
        row["revoked_by"],
        row["certificate_serial"],
        row["certificate_fingerprint"],
        row["certificate_not_after"],
    )


async def insert_credential(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    hashed: PasswordHash,
    created_by: uuid.UUID | None,
) -> uuid.UUID:
    """A live password credential whose username is the device's serial. ALREADY_EXISTS
    when the device already has a live one (one live per device: rotate it instead)."""
    return await _insert(
        conn,
        "INSERT INTO device_credentials (client_id, device_id, username, password_hash, "
        "hash_iterations, hash_salt, hash_digest, created_by) "
        "SELECT client_id, id, serial, $3, $4, $5, $6, $7 FROM devices "
        "WHERE id = $2 AND client_id = $1 RETURNING id",
        client_id,
        device_id,
        hashed.encoded,
        hashed.iterations,
        hashed.salt,
        hashed.digest,
        created_by,
    )


async def insert_certificate(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    issued: IssuedCertificate,
    created_by: uuid.UUID | None,
) -> uuid.UUID:
    """A live certificate credential (0080) whose username is the device's serial, the CN
    the certificate was issued for. ALREADY_EXISTS as for a password."""
    return await _insert(
        conn,
        "INSERT INTO device_credentials (client_id, device_id, username, kind, "
        "certificate_serial, certificate_fingerprint, certificate_not_after, created_by) "
        "SELECT client_id, id, serial, 'certificate', $3, $4, $5, $6 FROM devices "
        "WHERE id = $2 AND client_id = $1 RETURNING id",
        client_id,
        device_id,
        issued.serial_number,
        issued.fingerprint,
        issued.not_after,
        created_by,
    )


async def _insert(conn: asyncpg.Connection, sql: str, *args: Any) -> uuid.UUID:
    device_id = args[1]
    try:
        credential_id: uuid.UUID = await conn.fetchval(sql, *args)
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(
            "the device already has a live credential: rotate it, or revoke it first",
            metadata={"device_id": str(device_id)},
        ) from exc
    return credential_id


async def get_credential(
    conn: asyncpg.Connection, device_id: uuid.UUID, credential_id: uuid.UUID
) -> Credential | None:
    """One of the device's credentials, locked for update until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_credentials WHERE id = $1 AND device_id = $2 FOR UPDATE",
        credential_id,
        device_id,
    )
    return _credential(row) if row is not None else None


async def list_credentials(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Credential]:
    """A device's credentials, revoked ones included, newest first (keyset on created_at, id)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM device_credentials "
        "WHERE device_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) "
        "ORDER BY created_at DESC, id DESC LIMIT $4",
        device_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_credential(r) for r in rows]


async def rotate_credential(
    conn: asyncpg.Connection, credential_id: uuid.UUID, hashed: PasswordHash
) -> Credential | None:
    """Replace a live password credential's hash in place; None when it is not one."""
    row = await conn.fetchrow(
        "UPDATE device_credentials SET password_hash = $2, hash_iterations = $3, "
        "hash_salt = $4, hash_digest = $5, rotated_at = clock_timestamp() "
        "WHERE id = $1 AND revoked_at IS NULL AND password_hash IS NOT NULL "
        f"RETURNING {_COLUMNS}",
        credential_id,
        hashed.encoded,
        hashed.iterations,
        hashed.salt,
        hashed.digest,
    )
    return _credential(row) if row is not None else None


async def revoke_credential(
    conn: asyncpg.Connection, credential_id: uuid.UUID, revoked_by: uuid.UUID | None
) -> bool:
    """Revoke a live credential (the row stays); False when it was not live."""
    status: str = await conn.execute(
        "UPDATE device_credentials SET revoked_at = now(), revoked_by = $2 "
        "WHERE id = $1 AND revoked_at IS NULL",
        credential_id,
        revoked_by,
    )
    return status == "UPDATE 1"


async def record_change(
    conn: asyncpg.Connection,
    before: Credential | None,
    after: Credential,
    actor: uuid.UUID | None,
) -> None:
    """The device's history row for a credential change, in the caller's transaction."""
    await conn.execute(
        "INSERT INTO device_metadata_history "
        "(client_id, device_id, changed_by, path, old_value, new_value) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)",
        after.client_id,
        after.device_id,
        actor,
        HISTORY_PATH,
        json.dumps(before.history_value()) if before is not None else None,
        json.dumps(after.history_value()),
    )


async def broker_entries(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(username, $7$ hash) of every password credential the broker must accept
    (``broker_device_credentials``, migration 0046: live, of a provisioned or active device
    of an active client). Run by the owner (every tenant)."""
    rows = await conn.fetch(
        "SELECT username, password_hash FROM broker_device_credentials "
        "WHERE password_hash IS NOT NULL ORDER BY username"
    )
    return [(r["username"], r["password_hash"]) for r in rows]
