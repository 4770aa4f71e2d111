"""Reactions run by the worker: events raised and cleared as ingest writes them (the trigger
enqueues), delivered to a local webhook receiver, the e-mail outbox and the CommandService
path, with every attempt's outcome recorded."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from lifebox_grpc.alarms.reactions.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    secret_text,
    verify,
)
from lifebox_grpc.alarms.reactions.targets import url_problem
from lifebox_grpc.alarms.reactions.worker import ReactionWorker
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import alarm_reactions as reaction_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarm_reactions import (
    clear_event,
    jobs_of,
    make_due,
    make_reaction,
    outcomes_of,
    reaction_worker,
    rule_secret,
    set_owner,
    webhook_receiver,
)
from tests.helpers.alarms import make_event, make_rule
from tests.helpers.grpc import server_settings
from tests.helpers.services import Database

pytestmark = pytest.mark.timeout(120)


def settings_for(database: Database, broker: EmbeddedMosquitto, **values: Any) -> Settings:
    # Other tests' jobs may be due too (the worker claims every tenant's): claim them all.
    fast = {
        "reactions_backoff_seconds": 0.05,
        "reactions_backoff_max_seconds": 0.2,
        "reactions_batch_size": 500,
    }
    return server_settings(database, broker, **{**fast, **values})


async def run_until_idle(worker: ReactionWorker, conn: asyncpg.Connection, event: uuid.UUID) -> int:
    """Passes until the event's jobs are all done (retries made due at once); passes made."""
    passes = 0
    while any(j["done_at"] is None for j in await jobs_of(conn, event)):
        await make_due(conn, event)
        await worker.run_once()
        passes += 1
        assert passes < 50, "jobs never finished"
    return passes


async def _device_rule(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, str]:
    client = await factories.make_client(conn)
    device, serial = await factories.make_device(conn, client)
    rule = await make_rule(conn, client, device_id=device)
    return client, device, rule, serial


async def test_a_webhook_gets_a_correctly_signed_body_on_raise_and_on_clear(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, serial = await _device_rule(owner_conn)
    async with webhook_receiver() as receiver:
        both = await make_reaction(
            owner_conn, client, rule, "webhook", timing="both", webhook_url=receiver.url
        )
        await make_reaction(
            owner_conn, client, rule, "webhook", timing="clear", webhook_url=receiver.url + "?c"
        )
        secret = await rule_secret(owner_conn, rule)
        raised_at = datetime.now(UTC) - timedelta(minutes=1)
        event = await make_event(owner_conn, client, rule, device, raised_at)
        assert [(j["phase"], j["reaction_id"]) for j in await jobs_of(owner_conn, event)] == [
            ("raise", both)
        ]
        async with reaction_worker(database.app_dsn, settings_for(database, broker)) as worker:
            await run_until_idle(worker, owner_conn, event)
            assert len(receiver.received) == 1
            await clear_event(owner_conn, event, raised_at + timedelta(seconds=30))
            await run_until_idle(worker, owner_conn, event)
    assert len(receiver.received) == 3
    first = receiver.received[0]
    assert verify(secret, first.body, first.headers[SIGNATURE_HEADER])
    assert not verify(secret, first.body + b" ", first.headers[SIGNATURE_HEADER])
    assert not verify(b"x" * 32, first.body, first.headers[SIGNATURE_HEADER])
    body = receiver.payloads()[0]
    assert body["change"] == "raised"
    assert body["event"]["id"] == str(event)
    assert body["event"]["raise_time"] == raised_at.isoformat()
    assert body["device"] == {"id": str(device), "serial": serial, "name": body["device"]["name"]}
    assert body["rule"]["id"] == str(rule)
    assert first.headers[DELIVERY_HEADER] == body["delivery_id"]
    sent_at = datetime.fromisoformat(body["sent_at"])
    assert int(first.headers[TIMESTAMP_HEADER]) == int(sent_at.timestamp())
    assert abs((sent_at - datetime.now(UTC)).total_seconds()) < 60
    assert len(secret_text(secret)) == 64
    # The clear went to both reactions that run on clear, each with its own delivery id.
    cleared = receiver.payloads()[1:]
    assert {b["change"] for b in cleared} == {"cleared"}
    assert len({b["delivery_id"] for b in receiver.payloads()}) == 3
    outcomes = await outcomes_of(owner_conn, event)
    assert sorted((o["phase"], o["outcome"]) for o in outcomes) == [
        ("clear", "sent"),
        ("clear", "sent"),
        ("raise", "sent"),
    ]


async def test_a_failing_receiver_gets_retries_with_the_same_delivery_id(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver([500, 503]) as receiver:
        await make_reaction(owner_conn, client, rule, "webhook", webhook_url=receiver.url)
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        async with reaction_worker(database.app_dsn, settings_for(database, broker)) as worker:
            attempted = datetime.now(UTC)
            await worker.run_once()
            (job,) = await jobs_of(owner_conn, event)
            # Backed off: due again only later than the attempt (it was due when created; the
            # test's backoff is short, so "later than now" would depend on the machine's load).
            assert job["done_at"] is None
            assert job["due_at"] > attempted
            await run_until_idle(worker, owner_conn, event)
    assert [(o["outcome"], o["attempt"]) for o in await outcomes_of(owner_conn, event)] == [
        ("retried", 1),
        ("retried", 2),
        ("sent", 3),
    ]
    reasons = [o["reason"] for o in await outcomes_of(owner_conn, event)]
    assert reasons[:2] == ["HTTP 500", "HTTP 503"]
    assert len(receiver.received) == 3
    assert len({p["delivery_id"] for p in receiver.payloads()}) == 1
    assert [p["attempt"] for p in receiver.payloads()] == [1, 2, 3]


async def test_a_reaction_that_fails_every_attempt_ends_failed(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver([500] * 10) as receiver:
        await make_reaction(owner_conn, client, rule, "webhook", webhook_url=receiver.url)
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        settings = settings_for(database, broker, reactions_max_attempts=3)
        async with reaction_worker(database.app_dsn, settings) as worker:
            await run_until_idle(worker, owner_conn, event)
    outcomes = await outcomes_of(owner_conn, event)
    assert [o["outcome"] for o in outcomes] == ["retried", "retried", "failed"]
    assert "last" in outcomes[-1]["reason"]
    assert len(receiver.received) == 3


async def test_an_endpoint_that_keeps_failing_is_marked_failing_and_tried_at_most_every_n_minutes(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver([503] * 3) as receiver:
        reaction = await make_reaction(
            owner_conn, client, rule, "webhook", webhook_url=receiver.url
        )
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        settings = settings_for(
            database, broker, reactions_failing_after=2, reactions_failing_retry_minutes=10
        )
        async with reaction_worker(database.app_dsn, settings) as worker:
            await worker.run_once()
            async with tenant_transaction(owner_conn, None, staff=True):
                await owner_conn.execute(
                    "UPDATE alarm_reaction_jobs SET due_at = now() WHERE event_id = $1", event
                )
            await worker.run_once()
            async with tenant_transaction(owner_conn, None, staff=True):
                health = await owner_conn.fetchrow(
                    "SELECT consecutive_failures, failing_since, next_attempt_at "
                    "FROM alarm_webhook_health WHERE reaction_id = $1",
                    reaction,
                )
                await owner_conn.execute(
                    "UPDATE alarm_reaction_jobs SET due_at = now() WHERE event_id = $1", event
                )
            assert health["consecutive_failures"] == 2
            assert health["failing_since"] is not None
            wait = health["next_attempt_at"] - datetime.now(UTC)
            assert timedelta(minutes=9) < wait <= timedelta(minutes=10)
            # The API shows it failing (AlarmReaction.failing).
            async with tenant_transaction(owner_conn, None, staff=True):
                (shown,) = (await reaction_store.reactions_of(owner_conn, [rule]))[rule]
            assert shown.failing
            # Due, but its endpoint is failing: it waits for the endpoint's next try.
            await worker.run_once()
            (job,) = await jobs_of(owner_conn, event)
            assert job["attempts"] == 2
            assert len(receiver.received) == 2
            # The endpoint's next try: still failing, then it answers and is healthy again.
            await run_until_idle(worker, owner_conn, event)
    assert [o["outcome"] for o in await outcomes_of(owner_conn, event)] == [
        "retried", "retried", "retried", "sent",
    ]  # fmt: skip
    assert "endpoint failing" in (await outcomes_of(owner_conn, event))[1]["reason"]
    async with tenant_transaction(owner_conn, None, staff=True):
        after = await owner_conn.fetchrow(
            "SELECT consecutive_failures, failing_since FROM alarm_webhook_health "
            "WHERE reaction_id = $1",
            reaction,
        )
    assert after["consecutive_failures"] == 0
    assert after["failing_since"] is None


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/hook",
        "https://localhost:{port}/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]:{port}/hook",
        "https://[::ffff:127.0.0.1]:{port}/hook",
        "http://example.com/hook",
    ],
)
async def test_prod_mode_refuses_loopback_private_and_link_local_targets(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection, url: str
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        target = url.format(port=port)
        await make_reaction(owner_conn, client, rule, "webhook", webhook_url=target)
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        settings = settings_for(database, broker, mode="prod")
        async with reaction_worker(database.app_dsn, settings) as worker:
            await run_until_idle(worker, owner_conn, event)
        assert receiver.received == []
    (outcome,) = await outcomes_of(owner_conn, event)
    assert outcome["outcome"] == "skipped"
    assert outcome["reason"].startswith("target_refused")
    # The same URL passes outside prod mode (the scheme aside).
    if "localhost" in target or "127.0.0.1" in target:
        assert url_problem(target, prod=False) is None


def test_url_rules_by_mode() -> None:
    assert url_problem("https://hooks.example.com/x", prod=True) is None
    assert url_problem("http://hooks.example.com/x", prod=True) == "must be an https:// URL"
    assert url_problem("http://127.0.0.1:9/x", prod=False) is None
    assert url_problem("ftp://example.com/x", prod=False) is not None
    assert url_problem("https://user:pw@example.com/x", prod=True) is not None
    assert url_problem("https://192.168.1.1/x", prod=True) is not None
    assert url_problem("https://8.8.8.8/x", prod=True) is None


async def test_an_email_reaction_goes_through_the_outbox_sender(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    await make_reaction(
        owner_conn, client, rule, "email", timing="both", email_to=["ops@example.com"]
    )
    event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
    settings = settings_for(database, broker)
    async with reaction_worker(database.app_dsn, settings) as worker:
        await run_until_idle(worker, owner_conn, event)
    (job,) = await jobs_of(owner_conn, event)
    path = settings.home.resolve() / "outbox" / f"alarm-{job['id']}.txt"
    text = path.read_text()
    assert text.startswith("To: ops@example.com\nSubject: [LifeBox major]")
    assert "raised" in text
    assert str(event) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [o["outcome"] for o in await outcomes_of(owner_conn, event)] == ["sent"]


async def test_a_command_reaction_acts_as_the_rule_owner_or_is_skipped_owner_missing(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    owner = await factories.make_user(owner_conn, client, role="client")
    await set_owner(owner_conn, rule, owner)
    command = await make_reaction(
        owner_conn, client, rule, "command", timing="both", template_code="reboot",
        parameters={"delay_s": 5},
    )  # fmt: skip
    async with webhook_receiver() as receiver:
        await make_reaction(owner_conn, client, rule, "webhook", webhook_url=receiver.url)
        settings = settings_for(database, broker)
        async with reaction_worker(database.app_dsn, settings) as worker:
            first = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
            await run_until_idle(worker, owner_conn, first)
            # The owner loses the permission (a viewer may not send commands): skipped.
            async with tenant_transaction(owner_conn, None, staff=True):
                await owner_conn.execute("UPDATE users SET role = 'viewer' WHERE id = $1", owner)
            await clear_event(owner_conn, first, datetime.now(UTC))
            await run_until_idle(worker, owner_conn, first)
            # The owner is deleted: skipped too; the webhook goes on.
            async with tenant_transaction(owner_conn, None, staff=True):
                await owner_conn.execute("DELETE FROM users WHERE id = $1", owner)
            second = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
            await run_until_idle(worker, owner_conn, second)
        assert len(receiver.received) == 2
    sent = [o for o in await outcomes_of(owner_conn, first) if o["reaction_id"] == command]
    assert [(o["phase"], o["outcome"]) for o in sent] == [("raise", "sent"), ("clear", "skipped")]
    assert sent[1]["reason"].startswith("owner_missing")
    async with tenant_transaction(owner_conn, None, staff=True):
        made = await owner_conn.fetchrow(
            "SELECT device_id, command_type, parameters::text, status FROM control_commands "
            "WHERE id = $1",
            sent[0]["command_id"],
        )
        trail = await owner_conn.fetchrow(
            "SELECT actor_kind, detail::text FROM command_executions WHERE command_id = $1",
            sent[0]["command_id"],
        )
    assert made["device_id"] == device
    assert made["command_type"] == "reboot"
    assert '"delay_s": 5' in made["parameters"]
    assert trail["actor_kind"] == "system"
    assert str(rule) in trail["detail"]
    outcomes = await outcomes_of(owner_conn, second)
    assert sorted((o["kind"], o["outcome"]) for o in outcomes) == [
        ("command", "skipped"),
        ("webhook", "sent"),
    ]
    assert next(o for o in outcomes if o["kind"] == "command")["reason"].startswith("owner_missing")


async def test_a_notify_reaction_is_recorded_with_its_change_and_queues_nothing(
    owner_conn: asyncpg.Connection,
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    await make_reaction(owner_conn, client, rule, "notify", timing="clear")
    event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
    assert await outcomes_of(owner_conn, event) == []
    await clear_event(owner_conn, event, datetime.now(UTC))
    assert await jobs_of(owner_conn, event) == []
    (outcome,) = await outcomes_of(owner_conn, event)
    assert (outcome["kind"], outcome["phase"], outcome["outcome"]) == ("notify", "clear", "sent")


async def test_a_disabled_reaction_or_another_rules_reaction_is_not_enqueued(
    owner_conn: asyncpg.Connection,
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    other = await make_rule(owner_conn, client, device_id=device)
    reaction = await make_reaction(
        owner_conn, client, rule, "webhook", webhook_url="http://x.test/"
    )
    await make_reaction(owner_conn, client, other, "webhook", webhook_url="http://y.test/")
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE alarm_reactions SET enabled = false WHERE id = $1", reaction
        )
    event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
    assert await jobs_of(owner_conn, event) == []


async def test_a_job_claimed_max_attempts_times_without_an_outcome_ends_failed(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver() as receiver:
        await make_reaction(owner_conn, client, rule, "webhook", webhook_url=receiver.url)
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        # As if workers had claimed it three times and died each time before recording.
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE alarm_reaction_jobs SET attempts = 3 WHERE event_id = $1", event
            )
        settings = settings_for(database, broker, reactions_max_attempts=3)
        async with reaction_worker(database.app_dsn, settings) as worker:
            await run_until_idle(worker, owner_conn, event)
        assert receiver.received == []
    ((outcome, reason),) = [
        (o["outcome"], o["reason"]) for o in await outcomes_of(owner_conn, event)
    ]
    assert outcome == "failed"
    assert reason == "no outcome after 3 attempts"


async def test_a_reactions_clear_waits_for_its_raise(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    client, device, rule, _ = await _device_rule(owner_conn)
    async with webhook_receiver([500]) as receiver:
        await make_reaction(
            owner_conn, client, rule, "webhook", timing="both", webhook_url=receiver.url
        )
        event = await make_event(owner_conn, client, rule, device, datetime.now(UTC))
        async with reaction_worker(database.app_dsn, settings_for(database, broker)) as worker:
            await worker.run_once()  # the raise fails: retried later
            await clear_event(owner_conn, event, datetime.now(UTC))
            await worker.run_once()  # the clear is due, but its raise is not done
            assert [p["change"] for p in receiver.payloads()] == ["raised"]
            await run_until_idle(worker, owner_conn, event)
    assert [p["change"] for p in receiver.payloads()] == ["raised", "raised", "cleared"]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT webhook_url FROM alarm_reactions",
        "SELECT parameters FROM alarm_reactions",
        "SELECT email_to FROM alarm_reactions",
        "SELECT secret FROM alarm_rule_webhook_secrets",
        "SELECT reason FROM alarm_reaction_outcomes",
        "SELECT * FROM alarm_webhook_health",
        "UPDATE alarm_reaction_jobs SET done_at = now()",
    ],
)
async def test_ingest_enqueues_reactions_but_reads_none_of_their_targets_or_secrets(
    database: Database, query: str
) -> None:
    conn = await asyncpg.connect(database.ingest_dsn)
    try:
        async with tenant_transaction(conn, None, staff=True):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(query)
    finally:
        await conn.close()
