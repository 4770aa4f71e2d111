"""Make the broker's password and ACL files match the database, and reload it on change.

mosquitto re-reads both files on SIGHUP and re-authenticates every connected client, so a
revoked credential, a disabled device or a suspended client loses its live session too.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from lifebox_grpc.broker import files
from lifebox_grpc.store.device_credentials import broker_entries
from lifebox_grpc.store.pool import tenant_transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileResult:
    """What one pass did: whether a file changed (and the broker was told), how many device
    entries the broker now holds, and which device usernames were left out because they name
    a service account."""

    changed: bool
    devices: int
    reserved_skipped: tuple[str, ...]
    signalled: bool


async def reconcile_files(
    conn: asyncpg.Connection,
    *,
    password_path: Path,
    acl_path: Path,
    broker_pid: int | None,
    service_entries: Iterable[tuple[str, str]] = (),
    extra_acl: str = "",
    owner: str | None = None,
) -> ReconcileResult:
    """Write both files atomically (0600, owned by ``owner``); SIGHUP ``broker_pid`` only
    when one changed. A device whose username is a service account's is left out (a tenant
    could otherwise name a device ``lifebox-ingest`` and log in with ingest's rights)."""
    async with tenant_transaction(conn, None, staff=True):  # every tenant's credentials
        devices = await broker_entries(conn)
    services = list(service_entries)
    reserved = files.RESERVED_USERNAMES | {user for user, _ in services}
    kept = [(user, encoded) for user, encoded in devices if user not in reserved]
    skipped = tuple(user for user, _ in devices if user in reserved)
    if skipped:
        log.warning("device credentials named like service accounts left out: %s", skipped)
    changed = files.write_if_changed(password_path, files.password_file([*services, *kept]), owner)
    changed = files.write_if_changed(acl_path, files.acl_file(extra_acl), owner) or changed
    signalled = changed and reload_broker(broker_pid)
    return ReconcileResult(changed, len(kept), skipped, signalled)


def reload_broker(broker_pid: int | None) -> bool:
    """SIGHUP the broker (it re-reads its files and re-authenticates every client); False
    when there is no broker to tell."""
    if broker_pid is None:
        return False
    try:
        os.kill(broker_pid, signal.SIGHUP)
    except ProcessLookupError:  # the broker is restarting: it reads the files at start
        log.warning("broker pid %s is gone; it reads the files when it starts", broker_pid)
        return False
    return True


async def reconcile(
    conn: asyncpg.Connection,
    *,
    password_path: Path,
    acl_path: Path,
    broker_pid: int | None,
    service_entries: Iterable[tuple[str, str]] = (),
    extra_acl: str = "",
    owner: str | None = None,
) -> bool:
    """:func:`reconcile_files`; returns whether anything changed."""
    result = await reconcile_files(
        conn,
        password_path=password_path,
        acl_path=acl_path,
        broker_pid=broker_pid,
        service_entries=service_entries,
        extra_acl=extra_acl,
        owner=owner,
    )
    return result.changed
