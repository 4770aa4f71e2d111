"""CreateDeviceCredential of kind CERTIFICATE (issue 13): the API signs the device's own
request with the device CA, the CN is the serial whatever was asked, and revocation puts the
certificate on the broker's revocation list."""

from __future__ import annotations

import asyncpg
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lifebox.v1 import devices_pb2 as D
from lifebox.v1 import devices_pb2_grpc
from lifebox_grpc.broker import tls
from lifebox_grpc.store import device_certificates
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Server, make_tenant, violations
from tests.test_device_certificates_broker import device_key_and_csr


async def error_of(call: object) -> grpc.aio.AioRpcError:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def test_a_certificate_credential_is_signed_listed_and_revoked_onto_the_list(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    device_id, serial = await factories.make_device(owner_conn, tenant.client_id)
    _key, csr = device_key_and_csr("not-the-serial")
    request = D.CreateDeviceCredentialRequest(
        device_id=str(device_id), kind=D.CREDENTIAL_KIND_CERTIFICATE, csr_pem=csr
    )
    ca_dir = grpc_server.settings.home / "tls"
    if not (ca_dir / tls.CA_CERT).exists():
        refused = await error_of(api.CreateDeviceCredential(request, metadata=admin.md))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "device CA" in (refused.details() or "")
    authority = tls.ensure_dev_pki(ca_dir, ["localhost"])

    bad = await error_of(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(
                device_id=str(device_id), kind=D.CREDENTIAL_KIND_CERTIFICATE, csr_pem="junk"
            ),
            metadata=admin.md,
        )
    )
    assert (bad.code(), set(violations(bad))) == (grpc.StatusCode.INVALID_ARGUMENT, {"csr_pem"})
    passwordless = await error_of(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(device_id=str(device_id), csr_pem=csr),
            metadata=admin.md,
        )
    )
    assert set(violations(passwordless)) == {"csr_pem"}, "a password takes no request"

    made = await api.CreateDeviceCredential(request, metadata=admin.md)
    assert made.secret == ""
    assert made.ca_certificate_pem == authority.pem
    cert = x509.load_pem_x509_certificate(made.certificate_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == serial
    assert cert.issuer == authority.certificate.subject
    credential = made.credential
    assert credential.kind == D.CREDENTIAL_KIND_CERTIFICATE
    assert credential.username == serial
    assert credential.certificate_serial == f"{cert.serial_number:x}"
    assert credential.certificate_fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert credential.certificate_expire_time.ToDatetime().year > 2000

    again = await error_of(api.CreateDeviceCredential(request, metadata=admin.md))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    rotate = await error_of(
        api.RotateDeviceCredential(
            D.RotateDeviceCredentialRequest(device_id=str(device_id), credential_id=credential.id),
            metadata=admin.md,
        )
    )
    assert rotate.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(device_id=str(device_id)), metadata=admin.md
    )
    assert [c.certificate_serial for c in listed.credentials] == [credential.certificate_serial]

    async with tenant_transaction(owner_conn, None, staff=True):
        admitted = await device_certificates.admitted_certificate_users(owner_conn)
        refused = await device_certificates.revocations(owner_conn)
    assert serial in admitted
    assert credential.certificate_serial not in {r.serial_number for r in refused}
    await api.RevokeDeviceCredential(
        D.RevokeDeviceCredentialRequest(device_id=str(device_id), credential_id=credential.id),
        metadata=admin.md,
    )
    async with tenant_transaction(owner_conn, None, staff=True):
        admitted = await device_certificates.admitted_certificate_users(owner_conn)
        refused = await device_certificates.revocations(owner_conn)
    assert serial not in admitted
    entry = next(r for r in refused if r.serial_number == credential.certificate_serial)
    assert not entry.on_hold, "a revoked certificate is refused for good"
