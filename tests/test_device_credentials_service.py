"""DeviceService's credential RPCs (issue 13): the secret is returned once and stored only as a
hash the broker verifies; lists never carry a secret or a hash; rotation replaces the hash;
revocation keeps the row; one live credential per device; every change in the history."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import grpc
import pytest

from lifebox.v1 import devices_pb2 as D
from lifebox.v1 import devices_pb2_grpc
from lifebox_grpc.broker import passwords
from lifebox_grpc.serials import is_valid_serial
from lifebox_grpc.store import migrations
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Server, error_of, make_staff, make_tenant, violations
from tests.helpers.scratch_db import scratch_database
from tests.helpers.services import Database

OK = grpc.StatusCode.OK


def stub(server: Server) -> devices_pb2_grpc.DeviceServiceStub:
    return devices_pb2_grpc.DeviceServiceStub(server.channel)


async def stored_hash(conn: asyncpg.Connection, credential_id: str) -> passwords.PasswordHash:
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT hash_iterations, hash_salt, hash_digest, password_hash "
            "FROM device_credentials WHERE id = $1",
            uuid.UUID(credential_id),
        )
    assert row is not None
    hashed = passwords.PasswordHash(row["hash_iterations"], row["hash_salt"], row["hash_digest"])
    assert hashed.encoded == row["password_hash"]  # the $7$ form and its parts agree
    return hashed


async def failure(call: object) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc
    raise AssertionError("the call succeeded")


async def test_create_returns_a_secret_once_that_the_stored_hash_verifies(
    grpc_server: Server, owner_conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device_id, serial = await factories.make_device(owner_conn, tenant.client_id)
    caplog.set_level(logging.DEBUG)
    created = await api.CreateDeviceCredential(
        D.CreateDeviceCredentialRequest(device_id=str(device_id)), metadata=admin.md
    )
    credential, secret = created.credential, created.secret
    assert credential.username == serial  # the MQTT username is the serial
    assert credential.kind == D.CREDENTIAL_KIND_PASSWORD
    assert credential.device_id == str(device_id)
    assert credential.created_by == str(admin.user_id)
    assert not credential.HasField("revoke_time")
    assert not credential.HasField("rotate_time")
    assert len(secret) >= 43  # 256 random bits
    hashed = await stored_hash(owner_conn, credential.id)
    assert passwords.verify(secret, hashed)
    assert not passwords.verify(secret + "x", hashed)

    listed = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(device_id=str(device_id)), metadata=admin.md
    )
    assert [c.id for c in listed.credentials] == [credential.id]
    wire = listed.SerializeToString()
    for hidden in (secret, hashed.digest, hashed.salt, hashed.encoded):
        assert hidden.encode() not in wire
    # Neither the history nor the logs hold the secret or its hash.
    history = await api.ListDeviceHistory(
        D.ListDeviceHistoryRequest(device_id=str(device_id)), metadata=admin.md
    )
    entry = history.entries[0]
    assert entry.path == "credential"
    assert entry.changed_by == str(admin.user_id)
    assert not entry.HasField("old_value") or entry.old_value.HasField("null_value")
    assert dict(entry.new_value.struct_value) == {
        "id": credential.id,
        "kind": "password",
        "state": "live",
        "rotated_at": None,
    }
    for text in [history.SerializeToString().decode("latin-1")] + [
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records
    ]:
        for hidden in (secret, hashed.digest, hashed.salt):
            assert hidden not in text


async def test_a_second_live_credential_is_already_exists_until_revoked(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device_id, _ = await factories.make_device(owner_conn, tenant.client_id)
    create = D.CreateDeviceCredentialRequest(device_id=str(device_id))
    first = (await api.CreateDeviceCredential(create, metadata=admin.md)).credential
    code, exc = await failure(api.CreateDeviceCredential(create, metadata=admin.md))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "rotate" in (exc.details() or "")

    revoked = await api.RevokeDeviceCredential(
        D.RevokeDeviceCredentialRequest(device_id=str(device_id), credential_id=first.id),
        metadata=admin.md,
    )
    assert revoked.credential.HasField("revoke_time")
    assert revoked.credential.revoked_by == str(admin.user_id)
    second = (await api.CreateDeviceCredential(create, metadata=admin.md)).credential
    # Revocation is for good: neither revoked again nor rotated.
    for call in (
        api.RevokeDeviceCredential(
            D.RevokeDeviceCredentialRequest(device_id=str(device_id), credential_id=first.id),
            metadata=admin.md,
        ),
        api.RotateDeviceCredential(
            D.RotateDeviceCredentialRequest(device_id=str(device_id), credential_id=first.id),
            metadata=admin.md,
        ),
    ):
        code, exc = await failure(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "revoked" in (exc.details() or "")
    # Newest first, the revoked one kept as history; pages neither repeat nor skip.
    listed = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(device_id=str(device_id)), metadata=admin.md
    )
    assert [(c.id, c.HasField("revoke_time")) for c in listed.credentials] == [
        (second.id, False),
        (first.id, True),
    ]
    page = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(device_id=str(device_id), page_size=1), metadata=admin.md
    )
    rest = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(
            device_id=str(device_id), page_size=1, page_token=page.next_page_token
        ),
        metadata=admin.md,
    )
    assert [c.id for c in page.credentials] + [c.id for c in rest.credentials] == [
        second.id,
        first.id,
    ]
    assert rest.next_page_token == ""
    paths = [
        (e.path, e.new_value.struct_value["state"])
        for e in (
            await api.ListDeviceHistory(
                D.ListDeviceHistoryRequest(device_id=str(device_id)), metadata=admin.md
            )
        ).entries
    ]
    assert paths == [("credential", "live"), ("credential", "revoked"), ("credential", "live")]


async def test_rotation_replaces_the_hash_in_place_and_the_old_secret_stops_verifying(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    staff = await make_staff(grpc_server, owner_conn, "admin")  # staff act across tenants
    api = stub(grpc_server)
    device_id, _ = await factories.make_device(owner_conn, tenant.client_id)
    created = await api.CreateDeviceCredential(
        D.CreateDeviceCredentialRequest(device_id=str(device_id)), metadata=staff.md
    )
    before = await stored_hash(owner_conn, created.credential.id)
    rotated = await api.RotateDeviceCredential(
        D.RotateDeviceCredentialRequest(
            device_id=str(device_id), credential_id=created.credential.id
        ),
        metadata=staff.md,
    )
    after = await stored_hash(owner_conn, created.credential.id)
    assert rotated.credential.id == created.credential.id  # same credential, same username
    assert rotated.credential.HasField("rotate_time")
    assert rotated.secret != created.secret
    assert (after.salt, after.digest) != (before.salt, before.digest)
    assert passwords.verify(rotated.secret, after)
    assert not passwords.verify(created.secret, after)
    entry = (
        await api.ListDeviceHistory(
            D.ListDeviceHistoryRequest(device_id=str(device_id)), metadata=staff.md
        )
    ).entries[0]
    assert entry.old_value.struct_value["rotated_at"] is None
    assert entry.new_value.struct_value["rotated_at"]


async def test_bad_requests_say_which_field_and_foreign_ids_read_not_found(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = stub(grpc_server)
    device_id, _ = await factories.make_device(owner_conn, tenant.client_id)
    other_id, _ = await factories.make_device(owner_conn, tenant.client_id)
    other = await api.CreateDeviceCredential(
        D.CreateDeviceCredentialRequest(device_id=str(other_id)), metadata=admin.md
    )
    code, exc = await failure(
        api.RotateDeviceCredential(
            D.RotateDeviceCredentialRequest(device_id="nope", credential_id="x"), metadata=admin.md
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(exc)) == {"device_id", "credential_id"}
    code, exc = await failure(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(device_id=str(device_id), kind=99),  # type: ignore[arg-type]
            metadata=admin.md,
        )
    )
    assert (code, set(violations(exc))) == (grpc.StatusCode.INVALID_ARGUMENT, {"kind"})
    code, exc = await failure(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(
                device_id=str(device_id), kind=D.CREDENTIAL_KIND_CERTIFICATE
            ),
            metadata=admin.md,
        )
    )
    assert (code, set(violations(exc))) == (grpc.StatusCode.INVALID_ARGUMENT, {"csr_pem"})
    code, exc = await failure(
        api.ListDeviceCredentials(
            D.ListDeviceCredentialsRequest(device_id=str(device_id), page_token="garbage"),
            metadata=admin.md,
        )
    )
    assert (code, set(violations(exc))) == (grpc.StatusCode.INVALID_ARGUMENT, {"page_token"})
    # Another device's credential, or one that does not exist, is not this device's.
    for credential_id in (other.credential.id, str(uuid.uuid4())):
        for call in (
            api.RotateDeviceCredential(
                D.RotateDeviceCredentialRequest(
                    device_id=str(device_id), credential_id=credential_id
                ),
                metadata=admin.md,
            ),
            api.RevokeDeviceCredential(
                D.RevokeDeviceCredentialRequest(
                    device_id=str(device_id), credential_id=credential_id
                ),
                metadata=admin.md,
            ),
        ):
            assert (await failure(call))[0] == grpc.StatusCode.NOT_FOUND
    code, _ = await failure(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(device_id=str(uuid.uuid4())), metadata=admin.md
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    still = await api.ListDeviceCredentials(
        D.ListDeviceCredentialsRequest(device_id=str(other_id)), metadata=admin.md
    )
    assert not still.credentials[0].HasField("revoke_time")
    assert not still.credentials[0].HasField("rotate_time")


async def test_a_decommissioned_device_takes_no_new_credential(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    device_id, _ = await factories.make_device(
        owner_conn, tenant.client_id, status="decommissioned"
    )
    code, exc = await failure(
        api.CreateDeviceCredential(
            D.CreateDeviceCredentialRequest(device_id=str(device_id)),
            metadata=tenant.users["client"].md,
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert error_of(exc)[1]["ErrorInfo"].metadata["device_id"] == str(device_id)


# -- reserved serials -----------------------------------------------------------------------

RESERVED = ["lifebox-ingest", "lifebox-serve", "lifebox-health", "lifebox-broker-admin",
            "lifebox-", "LIFEBOX-INGEST", "Lifebox-x", "lifebox-0"]  # fmt: skip
ALLOWED = ["lifebox", "lifebox_ingest", "lifeboxingest", "my-lifebox-ingest", "lifebox.x",
           "lifebox:x", "A", "Pump-01"]  # fmt: skip


async def test_broker_account_names_are_refused_as_serials_everywhere(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    for serial in RESERVED:
        assert not is_valid_serial(serial), serial
        code, exc = await failure(
            api.CreateDevice(
                D.CreateDeviceRequest(device=D.Device(serial=serial, name="n")),
                metadata=tenant.users["client"].md,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, serial
        assert "lifebox-" in violations(exc)["device.serial"]
        with pytest.raises(asyncpg.CheckViolationError):
            await factories.make_device(owner_conn, tenant.client_id, serial)
    for serial in ALLOWED:
        assert is_valid_serial(serial), serial
    # One grammar: every CHECK on devices.serial together accepts exactly what Python does.
    checks = await owner_conn.fetch(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = 'devices'::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%serial%'"
    )
    predicate = " AND ".join(
        r["def"].removeprefix("CHECK ").replace("serial", "$1::text") for r in checks
    )
    for candidate in [*RESERVED, *ALLOWED, "-A", "a/b", "A" * 65, ""]:
        accepted = await owner_conn.fetchval(f"SELECT coalesce({predicate}, false)", candidate)
        assert accepted is is_valid_serial(candidate), candidate


async def test_the_migration_renames_existing_reserved_serials_and_revokes_them(
    database: Database,
) -> None:
    every = migrations.load_migrations()
    upto = next(i for i, m in enumerate(every) if m.name.startswith("0045_"))
    async with scratch_database(database) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.migrate(conn, every[:upto])
            client = await factories.make_client(conn)
            bad, _ = await factories.make_device(conn, client, "LifeBox-Serve")
            good, _ = await factories.make_device(conn, client, "PUMP-7")
            async with tenant_transaction(conn, None, staff=True):
                for device in (bad, good):
                    await conn.execute(
                        "INSERT INTO device_credentials (client_id, device_id, username, "
                        "password_hash, hash_iterations, hash_salt, hash_digest) "
                        "SELECT client_id, id, serial, $2, 101, 'AAAAAAAAAAAA', 'x' "
                        "FROM devices WHERE id = $1",
                        device,
                        "$7$101$x$x",
                    )
            await migrations.migrate(conn, every)
            async with tenant_transaction(conn, None, staff=True):
                serials = dict(await conn.fetch("SELECT id, serial FROM devices"))
                live = {
                    r["device_id"]
                    for r in await conn.fetch(
                        "SELECT device_id FROM device_credentials WHERE revoked_at IS NULL"
                    )
                }
                history = await conn.fetch(
                    "SELECT device_id, path, old_value #>> '{}' AS old, "
                    "new_value #>> '{}' AS new FROM device_metadata_history"
                )
        finally:
            await conn.close()
    assert serials[good] == "PUMP-7"
    assert serials[bad] == f"renamed-{bad.hex}"
    assert is_valid_serial(serials[bad])
    assert live == {good}
    assert [tuple(r) for r in history] == [(bad, "serial", "LifeBox-Serve", serials[bad])]
