"""Make the broker's password and ACL files match the database, and reload it on change.

mosquitto re-reads both files on SIGHUP and re-authenticates every connected client, so a
revoked credential, a disabled device or a suspended client loses its live session too.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterable
from pathlib import Path

import asyncpg

from lifebox_grpc.broker import files
from lifebox_grpc.store.device_credentials import broker_entries
from lifebox_grpc.store.pool import tenant_transaction


def _write_if_changed(path: Path, text: str, owner: str | None) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if owner is not None:
        shutil.chown(tmp, owner)
    os.replace(tmp, path)
    return True


async def reconcile(
    conn: asyncpg.Connection,
    *,
    password_path: Path,
    acl_path: Path,
    broker_pid: int | None,
    service_entries: Iterable[tuple[str, str]] = (),
    owner: str | None = None,
) -> bool:
    """Write both files atomically (0600, owned by ``owner``); SIGHUP ``broker_pid`` only
    when one changed. Returns whether anything changed."""
    async with tenant_transaction(conn, None, staff=True):  # every tenant's credentials
        devices = await broker_entries(conn)
    entries = [*service_entries, *devices]
    changed = _write_if_changed(password_path, files.password_file(entries), owner)
    changed = _write_if_changed(acl_path, files.acl_file(), owner) or changed
    if changed and broker_pid is not None:
        os.kill(broker_pid, signal.SIGHUP)
    return changed
