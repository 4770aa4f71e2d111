"""Reactions end to end: a rule saved through the API, a reading through a real broker and
ingest worker, `lifebox reactions` and `lifebox dispatch` as real subprocesses, the command
reaching a simulated device and the webhook a local receiver; and a worker SIGKILLed
mid-delivery losing nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import struct_pb2

from lifebox.v1 import alarms_pb2 as A
from lifebox.v1 import alarms_pb2_grpc
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarm_reactions import (
    jobs_of,
    make_reaction,
    outcomes_of,
    running_reactions,
    webhook_receiver,
)
from tests.helpers.alarms import make_event, make_rule
from tests.helpers.commands import (
    broker_url,
    dispatch_dsn,
    drop_dispatch_role,
    running_dispatcher,
    simulated_devices,
    statuses,
)
from tests.helpers.grpc import Server, make_tenant
from tests.helpers.ingest import IngestProcess, publisher, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(240)

FAST = {"LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "30", "LIFEBOX_DISPATCH_POLL_SECONDS": "0.2"}
REACTIONS = {"LIFEBOX_REACTIONS_POLL_SECONDS": "0.2", "LIFEBOX_REACTIONS_BACKOFF_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def ingest(database: Database, broker: EmbeddedMosquitto) -> Iterator[IngestProcess]:
    with running_ingest(
        database, broker_url(broker, "lifebox-ingest"), broker.port, LIFEBOX_INGEST_BATCH_MS="5"
    ) as worker:
        yield worker


@pytest.fixture(scope="module")
async def dsn(database: Database) -> AsyncIterator[str]:
    yield await dispatch_dsn(database)
    await drop_dispatch_role(database)


def home() -> Path:
    return Path(tempfile.mkdtemp(prefix="lifebox-reactions-home-"))


async def test_a_command_reaction_reaches_the_device_and_a_webhook_gets_a_signed_body(
    grpc_server: Server,
    database: Database,
    owner_conn: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"].md
    device, serial = await factories.make_device(owner_conn, tenant.client_id)
    api = alarms_pb2_grpc.AlarmServiceStub(grpc_server.channel)
    async with webhook_receiver() as receiver:
        params = struct_pb2.Struct()
        params.update({"delay_s": 7})
        created = await api.CreateAlarmRule(
            A.CreateAlarmRuleRequest(
                rule=A.AlarmRule(
                    name="hot",
                    device_id=str(device),
                    kind=A.ALARM_RULE_KIND_THRESHOLD,
                    field="temperature_c",
                    condition=A.ALARM_CONDITION_GT,
                    threshold=30.0,
                    severity=A.ALARM_SEVERITY_MAJOR,
                    reactions=[
                        A.AlarmReaction(
                            kind=A.ALARM_REACTION_KIND_COMMAND,
                            timing=A.ALARM_REACTION_TIMING_ON_RAISE,
                            command_template_code="reboot",
                            parameters=params,
                        ),
                        A.AlarmReaction(
                            kind=A.ALARM_REACTION_KIND_WEBHOOK,
                            timing=A.ALARM_REACTION_TIMING_ON_RAISE,
                            webhook_url=receiver.url,
                        ),
                        # Recorded by the trigger as ingest raises the event, on its role.
                        A.AlarmReaction(
                            kind=A.ALARM_REACTION_KIND_NOTIFY,
                            timing=A.ALARM_REACTION_TIMING_ON_RAISE,
                        ),
                    ],
                )
            ),
            metadata=admin,
        )
        secret = created.webhook_secret
        assert len(secret) == 64
        with (
            simulated_devices(broker, [serial]) as devices,
            running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=FAST),
            running_reactions(database.app_dsn, home(), REACTIONS),
            publisher(broker.port) as pub,
        ):
            now_ms = int(time.time() * 1000)
            pub.publish_all(
                [
                    (
                        f"lifebox/v1/{serial}/telemetry",
                        json.dumps({"ts": now_ms, "temperature_c": 35.5}).encode(),
                    )
                ]
            )
            done = await async_wait_until(
                lambda: _completed(owner_conn, tenant.client_id), 60, "the reaction's command"
            )

            async def posted() -> bool:
                return bool(receiver.received)

            await async_wait_until(posted, 30, "the webhook")
    (command_id,) = done
    (got,) = devices.received
    assert got.serial == serial
    assert got.command_id == str(command_id)
    assert got.payload["command"] == "reboot"
    assert got.payload["parameters"] == {"delay_s": 7}
    (post,) = receiver.received
    expected = "sha256=" + hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-LifeBox-Signature"] == expected
    body = json.loads(post.body)
    assert body["change"] == "raised"
    assert body["event"]["trigger_value"] == 35.5
    assert body["device"]["serial"] == serial
    # GetAlarmEvent says what each reaction did.
    listed = await api.ListAlarmEvents(
        A.ListAlarmEventsRequest(rule_id=created.rule.id), metadata=admin
    )
    (event,) = listed.events
    got_event = await api.GetAlarmEvent(A.GetAlarmEventRequest(event_id=event.id), metadata=admin)
    outcomes = {o.kind: o for o in got_event.reaction_outcomes}
    assert set(outcomes) == {
        A.ALARM_REACTION_KIND_COMMAND,
        A.ALARM_REACTION_KIND_WEBHOOK,
        A.ALARM_REACTION_KIND_NOTIFY,
    }
    assert len(got_event.reaction_outcomes) == 3
    assert outcomes[A.ALARM_REACTION_KIND_COMMAND].outcome == A.ALARM_REACTION_OUTCOME_KIND_SENT
    assert outcomes[A.ALARM_REACTION_KIND_COMMAND].command_id == str(command_id)
    assert outcomes[A.ALARM_REACTION_KIND_WEBHOOK].outcome == A.ALARM_REACTION_OUTCOME_KIND_SENT
    assert outcomes[A.ALARM_REACTION_KIND_WEBHOOK].change == A.ALARM_EVENT_CHANGE_KIND_RAISED


async def _completed(conn: asyncpg.Connection, client_id: uuid.UUID) -> list[uuid.UUID]:
    found = await statuses(conn, client_id)
    return list(found) if found and all(s == "completed" for s in found.values()) else []


async def test_a_worker_sigkilled_mid_delivery_loses_no_reaction(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    events = []
    async with webhook_receiver() as receiver:
        receiver.hold = asyncio.Event()
        for _ in range(5):
            device, _serial = await factories.make_device(owner_conn, client)
            rule = await make_rule(owner_conn, client, device_id=device)
            await make_reaction(owner_conn, client, rule, "webhook", webhook_url=receiver.url)
            events.append(await make_event(owner_conn, client, rule, device, datetime.now(UTC)))
        env = {**REACTIONS, "LIFEBOX_REACTIONS_LEASE_SECONDS": "2"}
        with running_reactions(database.app_dsn, home(), env) as first:
            await asyncio.wait_for(receiver.arrived.wait(), 30)
            first.kill()  # mid-delivery: the receiver holds the requests it got
        killed_with = {json.loads(r.body)["delivery_id"] for r in receiver.received}
        assert killed_with
        receiver.hold.set()
        with running_reactions(database.app_dsn, home(), env):

            async def all_done() -> bool:
                for event in events:
                    if any(j["done_at"] is None for j in await jobs_of(owner_conn, event)):
                        return False
                return True

            await async_wait_until(all_done, 60, "every job done after the restart")
    jobs = [j for event in events for j in await jobs_of(owner_conn, event)]
    delivered = [p["delivery_id"] for p in receiver.payloads()]
    # Every job reached the receiver; those in flight at the kill twice, with the same id.
    assert {str(j["id"]) for j in jobs} == set(delivered)
    for delivery_id in killed_with:
        assert delivered.count(delivery_id) == 2
    for event in events:
        outcomes = await outcomes_of(owner_conn, event)
        assert [o["outcome"] for o in outcomes] == ["sent"]
    async with tenant_transaction(owner_conn, None, staff=True):
        attempts = await owner_conn.fetch(
            "SELECT attempts FROM alarm_reaction_jobs WHERE id = ANY($1::uuid[])",
            [j["id"] for j in jobs],
        )
    assert sorted(a["attempts"] for a in attempts)[-1] == 2
