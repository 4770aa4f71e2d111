"""A credential made through the API works on a real mosquitto (issue 13): created by
CreateDeviceCredential and reconciled, it lets a paho client connect as the serial; rotated,
only the new secret connects; revoked, the live session is dropped and reconnects refused."""

from __future__ import annotations

import asyncpg

from lifebox.v1 import devices_pb2 as D
from lifebox.v1 import devices_pb2_grpc
from tests.helpers import factories
from tests.helpers.grpc import Server, make_tenant
from tests.helpers.wait import wait_until
from tests.test_device_credentials_broker import (  # the broker fixture and its MQTT helpers
    INGEST_SECRET,
    Broker,
    close,
    connect,
    cred_broker,
)

__all__ = ["cred_broker"]  # a fixture this module uses


async def test_an_api_credential_connects_and_its_revocation_drops_the_session(
    grpc_server: Server, owner_conn: asyncpg.Connection, cred_broker: Broker
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    api = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    device_id, serial = await factories.make_device(owner_conn, tenant.client_id)
    created = await api.CreateDeviceCredential(
        D.CreateDeviceCredentialRequest(device_id=str(device_id)), metadata=admin.md
    )
    assert created.credential.username == serial
    assert await cred_broker.reconcile(owner_conn)

    ingest = connect(cred_broker.port, "lifebox-ingest", INGEST_SECRET)
    ingest.client.subscribe(f"lifebox/v1/{serial}/telemetry", qos=1)
    wait_until(lambda: bool(ingest.suback), timeout=10, what="SUBACK")
    device = connect(cred_broker.port, serial, created.secret)
    assert not device.connack[0].is_failure, "the API's secret is what the broker accepts"
    own = f"lifebox/v1/{serial}/telemetry"
    device.client.publish(own, b"{}", qos=1).wait_for_publish(10)
    wait_until(lambda: own in ingest.received, timeout=10, what="the device's reading")
    close(device)

    # Rotation: the new secret connects, the old one no longer does (no overlap).
    rotated = await api.RotateDeviceCredential(
        D.RotateDeviceCredentialRequest(
            device_id=str(device_id), credential_id=created.credential.id
        ),
        metadata=admin.md,
    )
    assert await cred_broker.reconcile(owner_conn)
    old = connect(cred_broker.port, serial, created.secret)
    assert old.connack[0].is_failure, "the rotated-out secret still connects"
    close(old)
    live = connect(cred_broker.port, serial, rotated.secret)
    assert not live.connack[0].is_failure, "the rotated secret is refused"

    # Revocation: the live session is closed at the reload, and reconnects are refused.
    await api.RevokeDeviceCredential(
        D.RevokeDeviceCredentialRequest(
            device_id=str(device_id), credential_id=created.credential.id
        ),
        metadata=admin.md,
    )
    assert await cred_broker.reconcile(owner_conn)
    assert live.disconnected.wait(10), "the revoked credential's live session stays open"
    again = connect(cred_broker.port, serial, rotated.secret)
    assert again.connack[0].is_failure, "a revoked credential is refused at CONNECT"
    close(again, live, ingest)
