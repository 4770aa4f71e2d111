"""The broker's mutual-TLS listener, made to match the database: its ACL and revocation list.

mosquitto takes a client certificate's CN as the username on that listener and checks no
password, so two files decide who gets in and what they may do:
- the revocation list refuses, at the TLS handshake, every certificate that is revoked (for
  good) or whose device or client is not active (on hold); mosquitto reloads it on SIGHUP;
- the ACL names each admitted certificate's user with its device's topics (the same rules as
  the password listeners' ``%u`` patterns, written out per user). A certificate whose user
  is not there may do nothing: that is what takes effect at once for a session that was
  already connected when its certificate was revoked, since mosquitto re-reads the username
  of a certificate session on SIGHUP but does not check it against the list again. Such
  sessions are then closed by taking over their client id (the device contract makes it the
  serial); see :func:`kick`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from lifebox_grpc.broker import files, tls
from lifebox_grpc.store import device_certificates as store
from lifebox_grpc.store.pool import tenant_transaction


@dataclass(frozen=True)
class CertificateResult:
    """What a pass changed, and the users that lost the right to be connected."""

    changed: bool
    admitted: int
    refused: int
    dropped: tuple[str, ...]


def _acl_users(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line[5:] for line in path.read_text().splitlines() if line.startswith("user ")}


def _listed(path: Path) -> tuple[set[str], int, bool]:
    """The serial numbers, the CRL number and whether a new list is due."""
    if not path.exists():
        return set(), 0, True
    text = path.read_text()
    try:
        crl = x509.load_pem_x509_crl(text.encode("ascii"))
    except ValueError:
        return set(), 0, True
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return {f"{r.serial_number:x}" for r in crl}, number, tls.crl_needs_renewal(text)


async def reconcile_certificates(
    conn: asyncpg.Connection,
    *,
    authority: tls.Authority,
    acl_path: Path,
    crl_path: Path,
    owner: str | None = None,
) -> CertificateResult:
    """Write the listener's ACL and (when its entries change or it is half-way to expiry) a
    newly signed revocation list. The caller reloads the broker when ``changed`` and then
    kicks ``dropped``."""
    async with tenant_transaction(conn, None, staff=True):  # every tenant's certificates
        users = await store.admitted_certificate_users(conn)
        refused = await store.revocations(conn)
    before = _acl_users(acl_path)
    changed = files.write_if_changed(acl_path, files.certificate_acl_file(users), owner)
    listed, number, due = _listed(crl_path)
    if due or listed != {r.serial_number for r in refused}:
        files.write_if_changed(crl_path, authority.revocation_list(refused, number + 1), owner)
        changed = True
    dropped = tuple(sorted(before - set(users)))
    return CertificateResult(changed, len(users), len(refused), dropped)


def kick(host: str, port: int, username: str, password: str, client_ids: tuple[str, ...]) -> int:
    """Close the sessions of ``client_ids`` by connecting under each id (MQTT session takeover:
    the broker drops the older connection and sends its Will), then leaving at once. Blocking;
    returns how many takeovers the broker accepted."""
    done = 0
    for client_id in client_ids:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        accepted = threading.Event()
        client.on_connect = lambda c, u, f, rc, p, ok=accepted: None if rc.is_failure else ok.set()
        try:
            client.connect(host, port, keepalive=10, clean_start=True)
        except OSError:
            continue
        client.loop_start()
        if accepted.wait(10):
            done += 1
        client.disconnect()
        client.loop_stop()
    return done
