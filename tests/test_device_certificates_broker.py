"""X.509 device certificates on a real mosquitto: the device CA, the mutual-TLS listener whose
username is the certificate's CN, the TLS password listener, and revocation (refused at the
handshake, live session without rights and taken over)."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from lifebox_grpc.broker import files, passwords, tls
from lifebox_grpc.broker.certificates import kick, reconcile_certificates
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import device_credentials
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import private_tmpdir
from tests.helpers.wait import wait_until

SERVICE = {name: passwords.new_secret() for name in (files.INGEST, files.DISPATCH, "kicker")}


def device_key_and_csr(common_name: str = "whatever") -> tuple[bytes, str]:
    """What a device does: its own key, and a request naming any CN (LifeBox sets it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def test_a_device_certificate_names_the_serial_and_bad_requests_are_refused() -> None:
    authority = tls.Authority.create()
    _key, csr = device_key_and_csr("someone-else")
    issued = authority.issue_device(csr, "meter-7")
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meter-7"
    assert cert.issuer == authority.certificate.subject
    assert f"{cert.serial_number:x}" == issued.serial_number
    assert cert.fingerprint(hashes.SHA256()).hex() == issued.fingerprint
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused: the point)
    weak_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    for bad, says in (
        ("not a request", "not a PEM"),
        (weak_csr, "at least 2048 bits"),
        ("x" * 20000, "longer than"),
    ):
        with pytest.raises(tls.CertificateRequestError, match=says):
            authority.issue_device(bad, "meter-7")


def test_the_revocation_list_holds_exactly_its_entries_and_is_renewed_half_way() -> None:
    authority = tls.Authority.create()
    now = datetime.now(UTC)
    pem = authority.revocation_list(
        [tls.Revocation("1a", now, on_hold=False), tls.Revocation("2b", now, on_hold=True)], 7
    )
    crl = x509.load_pem_x509_crl(pem.encode())
    assert crl.is_signature_valid(authority.key.public_key())
    reasons = {
        f"{r.serial_number:x}": r.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for r in crl
    }
    assert reasons == {"1a": x509.ReasonFlags.unspecified, "2b": x509.ReasonFlags.certificate_hold}
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert not tls.crl_needs_renewal(pem)
    assert tls.crl_needs_renewal("garbage")


@dataclass
class Broker:
    base: Path
    authority: tls.Authority
    plain: int  # services (password)
    tls_password: int  # devices with a password, over TLS
    mutual: int  # devices with a certificate
    proc: subprocess.Popen[bytes] | None = None

    async def reconcile(self, conn: asyncpg.Connection) -> tuple[str, ...]:
        result = await reconcile_certificates(
            conn,
            authority=self.authority,
            acl_path=self.base / "acl-certs",
            crl_path=self.base / "crl.pem",
            owner="mosquitto",
        )
        if result.changed and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)
        return result.dropped


def _conf(b: Broker, password_file: Path, acl: Path) -> str:
    pki = b.base / "pki"
    server_tls = (
        f"cafile {pki / tls.CA_CERT}\ncertfile {pki / tls.BROKER_CERT}\n"
        f"keyfile {pki / tls.BROKER_KEY}\n"
    )
    return (
        "per_listener_settings true\n"
        f"listener {b.plain} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {password_file}\nacl_file {acl}\n"
        f"listener {b.tls_password} 127.0.0.1\nallow_anonymous false\n{server_tls}"
        f"password_file {password_file}\nacl_file {acl}\n"
        f"listener {b.mutual} 127.0.0.1\nallow_anonymous false\n{server_tls}"
        "require_certificate true\nuse_identity_as_username true\n"
        f"crlfile {b.base / 'crl.pem'}\nacl_file {b.base / 'acl-certs'}\n"
    )


@pytest.fixture
async def tls_broker(owner_conn: asyncpg.Connection) -> AsyncIterator[Broker]:
    base = private_tmpdir("lifebox-test-tls-mqtt-")
    authority = tls.ensure_dev_pki(base / "pki", ["localhost", "127.0.0.1"])
    for path in (base / "pki", *(base / "pki").iterdir()):
        shutil.chown(path, "mosquitto", "mosquitto")
    broker = Broker(base, authority, free_port(), free_port(), free_port())
    await broker.reconcile(owner_conn)
    yield broker
    if broker.proc is not None:
        broker.proc.terminate()
        broker.proc.wait(10)
    shutil.rmtree(base, ignore_errors=True)


def start(b: Broker, device_entries: list[tuple[str, str]]) -> None:
    entries = [(n, passwords.hash_secret(s).encoded) for n, s in SERVICE.items()]
    password_file, acl = b.base / "passwd", b.base / "acl"
    password_file.write_text(files.password_file([*entries, *device_entries]))
    acl.write_text(files.acl_file())
    for path in (password_file, acl):
        shutil.chown(path, "mosquitto", "mosquitto")
        path.chmod(0o600)
    conf = b.base / "mosquitto.conf"
    conf.write_text(_conf(b, password_file, acl))
    b.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_until(lambda: _accepts(b.mutual), timeout=10, what="the broker to listen")


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Session:
    client: mqtt.Client
    connack: list[ReasonCode] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def connect(
    port: int,
    client_id: str,
    *,
    ca: Path | None = None,
    cert: tuple[Path, Path] | None = None,
    login: tuple[str, str] | None = None,
) -> Session:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    session = Session(client)
    if ca is not None:
        client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert[0]) if cert else None,
            keyfile=str(cert[1]) if cert else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if login is not None:
        client.username_pw_set(*login)
    client.on_connect = lambda c, u, f, rc, p: session.connack.append(rc)
    client.on_message = lambda c, u, m: session.received.append(m.topic)
    client.on_disconnect = lambda c, u, f, rc, p: session.disconnected.set()
    try:
        client.connect("127.0.0.1", port, keepalive=30, clean_start=True)
    except (OSError, ssl.SSLError) as exc:  # refused at the TLS handshake
        session.error = str(exc)
        return session
    client.loop_start()
    wait_until(lambda: session.connack or session.disconnected.is_set(), timeout=10, what="CONNACK")
    return session


def admitted(s: Session) -> bool:
    return s.error is None and bool(s.connack) and not s.connack[0].is_failure


def admits(port: int, client_id: str, ca: Path, cert: tuple[Path, Path]) -> bool:
    """Whether the mutual-TLS listener lets this certificate in now (the session is closed)."""
    session = connect(port, client_id, ca=ca, cert=cert)
    ok = admitted(session)
    close(session)
    return ok


def close(*sessions: Session) -> None:
    for s in sessions:
        s.client.disconnect()
        s.client.loop_stop()


async def enroll(
    conn: asyncpg.Connection, b: Broker, client: uuid.UUID, device: uuid.UUID, serial: str
) -> tuple[Path, Path]:
    key, csr = device_key_and_csr()
    issued = b.authority.issue_device(csr, serial)
    async with tenant_transaction(conn, None, staff=True):
        assert await device_credentials.insert_certificate(conn, client, device, issued, None)
    cert_path, key_path = b.base / f"{serial}.crt", b.base / f"{serial}.key"
    cert_path.write_text(issued.pem)
    key_path.write_bytes(key)
    return cert_path, key_path


async def test_certificates_confine_devices_and_revocation_refuses_and_closes_sessions(
    owner_conn: asyncpg.Connection, tls_broker: Broker
) -> None:
    b = tls_broker
    ca = b.base / "pki" / tls.CA_CERT
    tenant_1, tenant_2 = await make_client(owner_conn), await make_client(owner_conn)
    dev_a, serial_a = await make_device(owner_conn, tenant_1)
    dev_c, serial_c = await make_device(owner_conn, tenant_1)
    dev_b, serial_b = await make_device(owner_conn, tenant_2)
    cert_a = await enroll(owner_conn, b, tenant_1, dev_a, serial_a)
    cert_c = await enroll(owner_conn, b, tenant_1, dev_c, serial_c)
    secret_b = passwords.new_secret()
    async with tenant_transaction(owner_conn, None, staff=True):
        await device_credentials.insert_credential(
            owner_conn, tenant_2, dev_b, passwords.hash_secret(secret_b), None
        )
        everyone = await device_credentials.broker_entries(owner_conn)
    ours = {serial_a, serial_b, serial_c}
    entries = [(user, encoded) for user, encoded in everyone if user in ours]
    assert [u for u, _ in entries] == [serial_b], "certificates are not password entries"
    await b.reconcile(owner_conn)
    start(b, entries)

    ingest = connect(b.plain, "ingest", login=(files.INGEST, SERVICE[files.INGEST]))
    assert admitted(ingest)
    ingest.client.subscribe("lifebox/v1/+/telemetry", qos=1)
    serve = connect(b.plain, "dispatch", login=(files.DISPATCH, SERVICE[files.DISPATCH]))

    a = connect(b.mutual, serial_a, ca=ca, cert=cert_a)
    assert admitted(a), "the CA's certificate for A is accepted, its CN is the username"
    a.client.subscribe(
        [(f"lifebox/v1/{serial_c}/commands/#", 1), (f"lifebox/v1/{serial_a}/commands/#", 1)]
    )
    a.client.publish(f"lifebox/v1/{serial_c}/telemetry", b"{}", qos=1).wait_for_publish(10)
    a.client.publish(f"lifebox/v1/{serial_a}/telemetry", b"{}", qos=1).wait_for_publish(10)
    own = f"lifebox/v1/{serial_a}/telemetry"
    wait_until(lambda: own in ingest.received, timeout=10, what="A's reading")
    assert ingest.received == [own], "A published on C's topic"
    for serial in (serial_c, serial_a):
        serve.client.publish(f"lifebox/v1/{serial}/commands/1", b"{}", qos=1).wait_for_publish(10)
    mine = f"lifebox/v1/{serial_a}/commands/1"
    wait_until(lambda: mine in a.received, timeout=10, what="A's command")
    assert a.received == [mine], "A received C's command"

    # B: a password over TLS, the broker's certificate checked against the device CA.
    over_tls = connect(b.tls_password, "b", ca=ca, login=(serial_b, secret_b))
    assert admitted(over_tls)
    assert not admitted(connect(b.tls_password, "b2", ca=ca, login=(serial_b, "wrong")))
    assert not admitted(connect(b.mutual, "b3", ca=ca, login=(serial_b, secret_b))), (
        "the mutual-TLS listener takes no password without a certificate"
    )
    # A certificate of another CA naming C's serial is refused at the handshake.
    rogue = tls.Authority.create("not ours")
    key, csr = device_key_and_csr()
    forged = b.base / "forged.crt"
    forged.write_text(rogue.issue_device(csr, serial_c).pem)
    (b.base / "forged.key").write_bytes(key)
    assert not admitted(connect(b.mutual, "forged", ca=ca, cert=(forged, b.base / "forged.key")))

    # Revoke A: refused at the next handshake; the live session loses its rights at the
    # reload and is taken over.
    async with tenant_transaction(owner_conn, None, staff=True):
        cred_a = await owner_conn.fetchval(
            "SELECT id FROM device_credentials WHERE device_id = $1", dev_a
        )
        assert await device_credentials.revoke_credential(owner_conn, cred_a, None)
    dropped = await b.reconcile(owner_conn)
    assert dropped == (serial_a,)
    wait_until(
        lambda: not admits(b.mutual, "again", ca, cert_a),
        timeout=10,
        what="the revoked certificate to be refused",
    )
    assert not a.disconnected.is_set()
    a.client.publish(own, b"{}", qos=1).wait_for_publish(10)
    assert kick("127.0.0.1", b.plain, "kicker", SERVICE["kicker"], dropped) == 1
    assert a.disconnected.wait(10), "the revoked certificate's session stays open"
    c = connect(b.mutual, serial_c, ca=ca, cert=cert_c)
    assert admitted(c), "C's certificate still works"
    c.client.publish(f"lifebox/v1/{serial_c}/telemetry", b"{}", qos=1).wait_for_publish(10)
    wait_until(lambda: len(ingest.received) == 2, timeout=10, what="C's reading")
    assert ingest.received == [own, f"lifebox/v1/{serial_c}/telemetry"], (
        "A published after its certificate was revoked"
    )
    close(c)

    # Disabling C puts its certificate on hold; enabling it again lifts the hold.
    for status, expected in (("disabled", False), ("active", True)):
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE devices SET status = $2, updated_at = now() WHERE id = $1", dev_c, status
            )
        await b.reconcile(owner_conn)
        wait_until(
            lambda: admits(b.mutual, f"c-{status}", ca, cert_c) == expected,  # noqa: B023
            timeout=10,
            what=f"C's certificate with the device {status}",
        )
    close(ingest, serve, over_tls)
