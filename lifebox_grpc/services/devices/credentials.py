"""DeviceService: a device's own broker credential (issue 13).

The MQTT username is the device's serial; the secret is made here, returned once, and only
its hash is stored (broker/passwords.py). The broker learns of a change at its next reload
(mosquitto: the reconciler's files and SIGHUP; a clustered broker reads the database at each
connect). Every change writes the device's history row in the same transaction, and neither
history nor logs ever hold the secret or its hash.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from lifebox.v1 import devices_pb2
from lifebox_grpc.auth.permissions import DeviceAction
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.broker import passwords, tls
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import (
    ErrorCollector,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from lifebox_grpc.services.common import page_size, parse_uuid, scoped, timestamp
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.devices.base import DeviceRpcs
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import device_credentials as credential_store

log = logging.getLogger(__name__)

_KIND_TO_PB = {
    credential_store.PASSWORD: devices_pb2.CREDENTIAL_KIND_PASSWORD,
    credential_store.CERTIFICATE: devices_pb2.CREDENTIAL_KIND_CERTIFICATE,
}
_KINDS = frozenset(devices_pb2.CredentialKind.values())


def _credential_pb(credential: credential_store.Credential) -> devices_pb2.DeviceCredential:
    return devices_pb2.DeviceCredential(
        id=str(credential.id),
        device_id=str(credential.device_id),
        kind=_KIND_TO_PB[credential.kind],
        username=credential.username,
        create_time=timestamp(credential.created_at),
        created_by=str(credential.created_by) if credential.created_by else "",
        rotate_time=timestamp(credential.rotated_at),
        revoke_time=timestamp(credential.revoked_at),
        revoked_by=str(credential.revoked_by) if credential.revoked_by else "",
        certificate_serial=credential.certificate_serial or "",
        certificate_fingerprint=credential.certificate_fingerprint or "",
        certificate_expire_time=timestamp(credential.certificate_not_after),
    )


def _log(event: str, credential: credential_store.Credential, principal: Principal) -> None:
    log.info(
        f"device credential {event}",
        extra={
            "credential_id": str(credential.id),
            "device_id": str(credential.device_id),
            "by": principal.describe(),
        },
    )


class CredentialRpcs(DeviceRpcs):
    """Create, list, rotate and revoke a device's broker credential."""

    async def CreateDeviceCredential(
        self, request: devices_pb2.CreateDeviceCredentialRequest, context: Any
    ) -> devices_pb2.CreateDeviceCredentialResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        if request.kind not in _KINDS:
            errors.add("kind", "unknown credential kind")
        certificate = request.kind == devices_pb2.CREDENTIAL_KIND_CERTIFICATE
        if certificate and not request.csr_pem:
            errors.add("csr_pem", "required for a CERTIFICATE credential")
        elif request.csr_pem and not certificate:
            errors.add("csr_pem", "only a CERTIFICATE credential takes a signing request")
        errors.raise_if_any()
        authority = self._device_ca() if certificate else None
        secret = "" if certificate else passwords.new_secret()
        issued: tls.IssuedCertificate | None = None
        async with scoped(self.pool, principal) as conn:
            device = await require_device(
                conn, principal, device_id, DeviceAction.UPDATE_CREDENTIALS, lock=True
            )
            if device.status == "decommissioned":
                raise FailedPrecondition(
                    "the device is decommissioned: it takes no new credential",
                    metadata={"device_id": str(device_id)},
                )
            if authority is not None:
                issued = _sign(authority, request.csr_pem, device.serial, self.settings)
                credential_id = await credential_store.insert_certificate(
                    conn, device.client_id, device.id, issued, principal.user_id
                )
            else:
                credential_id = await credential_store.insert_credential(
                    conn,
                    device.client_id,
                    device.id,
                    passwords.hash_secret(secret),
                    principal.user_id,
                )
            credential = await credential_store.get_credential(conn, device.id, credential_id)
            assert credential is not None  # inserted in this transaction
            await credential_store.record_change(conn, None, credential, principal.user_id)
        _log("created", credential, principal)
        return devices_pb2.CreateDeviceCredentialResponse(
            credential=_credential_pb(credential),
            secret=secret,
            certificate_pem=issued.pem if issued else "",
            ca_certificate_pem=authority.pem if authority else "",
        )

    def _device_ca(self) -> tls.Authority:
        s = self.settings
        authority = tls.configured_authority(s.device_ca_cert_file, s.device_ca_key_file, s.home)
        if authority is None:
            raise FailedPrecondition(
                "no device CA is configured (LIFEBOX_DEVICE_CA_CERT_FILE and "
                "LIFEBOX_DEVICE_CA_KEY_FILE): certificate credentials are unavailable"
            )
        return authority

    async def ListDeviceCredentials(
        self, request: devices_pb2.ListDeviceCredentialsRequest, context: Any
    ) -> devices_pb2.ListDeviceCredentialsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id, DeviceAction.UPDATE_CREDENTIALS)
            rows = await credential_store.list_credentials(
                conn, device_id, after=after, limit=size + 1
            )
        page, token = time_id_page(rows, size, lambda row: row.created_at)
        return devices_pb2.ListDeviceCredentialsResponse(
            credentials=[_credential_pb(c) for c in page], next_page_token=token
        )

    async def RotateDeviceCredential(
        self, request: devices_pb2.RotateDeviceCredentialRequest, context: Any
    ) -> devices_pb2.RotateDeviceCredentialResponse:
        principal = require_principal()
        device_id, credential_id = _ids(request.device_id, request.credential_id)
        secret = passwords.new_secret()
        async with scoped(self.pool, principal) as conn:
            before = await self._live_credential(conn, principal, device_id, credential_id)
            if before.kind != credential_store.PASSWORD:
                raise FailedPrecondition(
                    "only a password credential is rotated: issue a new certificate instead",
                    metadata={"credential_id": str(credential_id)},
                )
            after = await credential_store.rotate_credential(
                conn, credential_id, passwords.hash_secret(secret)
            )
            assert after is not None  # locked live password credential
            await credential_store.record_change(conn, before, after, principal.user_id)
        _log("rotated", after, principal)
        return devices_pb2.RotateDeviceCredentialResponse(
            credential=_credential_pb(after), secret=secret
        )

    async def RevokeDeviceCredential(
        self, request: devices_pb2.RevokeDeviceCredentialRequest, context: Any
    ) -> devices_pb2.RevokeDeviceCredentialResponse:
        principal = require_principal()
        device_id, credential_id = _ids(request.device_id, request.credential_id)
        async with scoped(self.pool, principal) as conn:
            before = await self._live_credential(conn, principal, device_id, credential_id)
            revoked = await credential_store.revoke_credential(
                conn, credential_id, principal.user_id
            )
            assert revoked  # locked and live
            after = await credential_store.get_credential(conn, device_id, credential_id)
            assert after is not None
            await credential_store.record_change(conn, before, after, principal.user_id)
        _log("revoked", after, principal)
        return devices_pb2.RevokeDeviceCredentialResponse(credential=_credential_pb(after))

    @staticmethod
    async def _live_credential(
        conn: Any, principal: Principal, device_id: uuid.UUID, credential_id: uuid.UUID
    ) -> credential_store.Credential:
        """The device's credential, locked: NOT_FOUND when it is not one of the device's,
        FAILED_PRECONDITION when it is revoked (revocation is for good)."""
        await require_device(conn, principal, device_id, DeviceAction.UPDATE_CREDENTIALS, lock=True)
        credential = await credential_store.get_credential(conn, device_id, credential_id)
        if credential is None:
            raise NotFound("credential not found", metadata={"credential_id": str(credential_id)})
        if not credential.live:
            raise FailedPrecondition(
                "the credential is revoked: create a new one for the device",
                metadata={"credential_id": str(credential_id)},
            )
        return credential


def _sign(
    authority: tls.Authority, csr_pem: str, serial: str, settings: Settings
) -> tls.IssuedCertificate:
    validity = timedelta(days=settings.device_certificate_days)
    try:
        return authority.issue_device(csr_pem, serial, validity)
    except tls.CertificateRequestError as exc:
        raise InvalidArgument([FieldViolation("csr_pem", str(exc))]) from exc


def _ids(device: str, credential: str) -> tuple[uuid.UUID, uuid.UUID]:
    errors = ErrorCollector()
    device_id = parse_uuid(errors, "device_id", device)
    credential_id = parse_uuid(errors, "credential_id", credential)
    errors.raise_if_any()
    return device_id, credential_id
