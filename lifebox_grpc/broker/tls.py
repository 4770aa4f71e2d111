"""The device PKI: one CA that signs the broker's server certificate and devices' client
certificates, and the revocation list the broker checks at every TLS handshake.

A device certificate's subject CN is the device's serial, whatever the request asked for: the
broker's mutual-TLS listener takes the CN as the MQTT username (``use_identity_as_username``),
so the same ``%u`` topics apply as for a password. The CA's key signs certificates (the API,
at CreateDeviceCredential) and revocation lists (the broker reconciler); nothing else reads it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lifebox_grpc.broker.files import write_private

CA_CERT, CA_KEY = "ca.crt", "ca.key"
BROKER_CERT, BROKER_KEY = "broker.crt", "broker.key"
CA_VALIDITY = timedelta(days=3650)
BROKER_VALIDITY = timedelta(days=825)
# A revocation list is valid this long; the reconciler signs a new one well before (half-way),
# since OpenSSL refuses every client certificate once the broker's list has expired.
CRL_VALIDITY = timedelta(days=7)
_MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MAX_CSR_BYTES = 16 * 1024


class CertificateRequestError(ValueError):
    """A certificate signing request LifeBox will not sign; the message says why."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed device certificate and what the credential row keeps of it."""

    pem: str
    serial_number: str  # hex, as the revocation list and `openssl x509 -serial` show it
    fingerprint: str  # SHA-256 of the DER, hex
    not_after: datetime


@dataclass(frozen=True)
class Revocation:
    """A certificate the broker must refuse: revoked for good, or on hold (device disabled or
    client suspended; the entry leaves the list when they are active again)."""

    serial_number: str
    since: datetime
    on_hold: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_public_key(key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise CertificateRequestError(
                f"an RSA key must have at least {_MIN_RSA_BITS} bits, not {key.key_size}"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise CertificateRequestError(
                f"EC keys must be on P-256 or P-384, not {key.curve.name}"
            )
        return
    raise CertificateRequestError("the key must be EC (P-256, P-384) or RSA (2048 bits or more)")


@dataclass(frozen=True)
class Authority:
    """The device CA: its certificate and private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: the device CA key must be an EC key")
        return cls(certificate, key)

    @classmethod
    def create(cls, common_name: str = "LifeBox device CA") -> Authority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def save(self, directory: Path) -> None:
        (directory / CA_CERT).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        write_private(directory / CA_KEY, _key_pem(self.key))

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def _leaf(
        self,
        subject: str,
        public_key: CertificatePublicKeyTypes,
        validity: timedelta,
        usage: x509.ObjectIdentifier,
    ) -> x509.CertificateBuilder:
        now = _now()
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + validity, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value), False
            )
        )

    def issue_device(
        self, csr_pem: str, serial: str, validity: timedelta = timedelta(days=365)
    ) -> IssuedCertificate:
        """Sign a device's request: its own key, CN forced to ``serial``, client auth only."""
        if len(csr_pem) > _MAX_CSR_BYTES:
            raise CertificateRequestError(f"the request is longer than {_MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise CertificateRequestError("not a PEM certificate signing request") from exc
        if not csr.is_signature_valid:
            raise CertificateRequestError("the request's signature does not match its key")
        public_key = csr.public_key()
        _check_public_key(public_key)
        certificate = (
            self._leaf(serial, public_key, validity, ExtendedKeyUsageOID.CLIENT_AUTH)
            .add_extension(_leaf_key_usage(), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            serial_number=f"{certificate.serial_number:x}",
            fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
            not_after=certificate.not_valid_after_utc,
        )

    def issue_broker(self, hostnames: Sequence[str]) -> tuple[bytes, bytes]:
        """The broker's server certificate for ``hostnames`` (names or IP addresses): PEM
        certificate and PEM key."""
        key = _new_key()
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        certificate = (
            self._leaf(
                hostnames[0], key.public_key(), BROKER_VALIDITY, ExtendedKeyUsageOID.SERVER_AUTH
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(_leaf_key_usage(), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def revocation_list(self, revoked: Iterable[Revocation], number: int) -> str:
        """A CRL of ``revoked``, valid :data:`CRL_VALIDITY` from now, numbered ``number``."""
        now = _now()
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value), False
            )
        )
        for entry in revoked:
            reason = (
                x509.ReasonFlags.certificate_hold if entry.on_hold else x509.ReasonFlags.unspecified
            )
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry.serial_number, 16))
                .revocation_date(entry.since)
                .add_extension(x509.CRLReason(reason), critical=False)
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def crl_needs_renewal(pem: str) -> bool:
    """True when a CRL has used half its validity (or is unreadable)."""
    try:
        crl = x509.load_pem_x509_crl(pem.encode("ascii"))
    except ValueError:
        return True
    due = crl.next_update_utc
    return due is None or due - _now() < CRL_VALIDITY / 2


def ensure_dev_pki(directory: Path, hostnames: Sequence[str]) -> Authority:
    """The development CA and broker certificate under ``directory`` (made once, 0600 keys):
    what `lifebox dev` and the tests' broker use. Production mounts its own."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CA_CERT).exists() and (directory / CA_KEY).exists():
        authority = Authority.load(directory / CA_CERT, directory / CA_KEY)
    else:
        authority = Authority.create()
        authority.save(directory)
    if not (directory / BROKER_CERT).exists():
        cert, key = authority.issue_broker(hostnames)
        (directory / BROKER_CERT).write_bytes(cert)
        write_private(directory / BROKER_KEY, key)
    return authority


def configured_authority(
    cert_file: Path | None, key_file: Path | None, home: Path
) -> Authority | None:
    """The device CA named by the settings (unset: the embedded one under ``home/tls``), or
    None when its files do not exist (certificate credentials are then unavailable)."""
    cert = cert_file or home / "tls" / CA_CERT
    key = key_file or home / "tls" / CA_KEY
    if not (cert.exists() and key.exists()):
        return None
    return Authority.load(cert, key)
