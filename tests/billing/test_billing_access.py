"""Who sees and changes which billing: the two-tenant matrix and the role matrix over every
BillingService RPC (a test checks both cover every method).

Client A's tenant administrator naming anything of client B gets NOT_FOUND and no data;
methods that name nothing return nothing of B. Operators and viewers hold no billing
permission; tenant administrators read and pay; only platform staff change billing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import billing_pb2
from lifebox_grpc.services.registry import method_names
from tests.helpers import factories
from tests.helpers.billing import egp, make_invoiced_period, make_plan, stub, webhook_url
from tests.helpers.fawry_fake import FakeFawry
from tests.helpers.grpc import Account, Server, Tenant, make_staff, make_tenant

SERVICE = "/lifebox.v1.BillingService/"


@dataclass
class Side:
    """One tenant's billing resources."""

    tenant: Tenant
    subscription: str
    entry: str
    payment: str  # a paid Fawry payment
    period: str  # an invoiced postpaid period
    cards: list[str]  # saved cards, one used up by each DeleteFawryCard call


@dataclass
class World:
    staff: Account
    plans: list[billing_pb2.Plan]
    a: Side
    b: Side
    fresh_client: uuid.UUID  # a client without a subscription (for CreateSubscription)


async def _side(
    server: Server,
    fawry: FakeFawry,
    conn: asyncpg.Connection,
    staff: Account,
    plan: billing_pb2.Plan,
    tenant: Tenant,
) -> Side:
    api = stub(server)
    client = str(tenant.client_id)
    entry = await api.CreateCreditAdjustment(
        billing_pb2.CreateCreditAdjustmentRequest(
            client_id=client, amount=egp("5000.00"), description="opening"
        ),
        metadata=staff.md,
    )
    sub = await api.CreateSubscription(
        billing_pb2.CreateSubscriptionRequest(client_id=client, plan_id=plan.id, auto_renew=True),
        metadata=staff.md,
    )
    await api.CreateCustomerPrice(
        billing_pb2.CreateCustomerPriceRequest(
            price=billing_pb2.CustomerPrice(
                client_id=client, item="command", unit_price=egp("0.50")
            )
        ),
        metadata=staff.md,
    )
    payment = await api.CreateFawryPayment(
        billing_pb2.CreateFawryPaymentRequest(amount=egp("300.00")),
        metadata=tenant.users["client"].md,
    )
    charge = fawry.pay(payment.payment.merchant_ref_number)
    assert await fawry.notify(webhook_url(server), charge) == 200
    for _ in range(6):
        fawry.save_card(client)
    cards = await api.ListFawryCards(
        billing_pb2.ListFawryCardsRequest(client_id=client), metadata=staff.md
    )
    return Side(
        tenant,
        sub.subscription.id,
        entry.credit_transaction.id,
        payment.payment.id,
        str(await make_invoiced_period(conn, tenant.client_id, Decimal(100_000))),
        [c.id for c in cards.cards],
    )


@pytest.fixture(scope="module")
async def world(
    billing_server: Server, fawry: FakeFawry, session_owner_conn: asyncpg.Connection
) -> World:
    conn = session_owner_conn
    staff = await make_staff(billing_server, conn, "admin")
    plans = [await make_plan(billing_server, staff, price="100.00") for _ in range(3)]
    a = await _side(
        billing_server, fawry, conn, staff, plans[0], await make_tenant(billing_server, conn)
    )
    b = await _side(
        billing_server, fawry, conn, staff, plans[0], await make_tenant(billing_server, conn)
    )
    return World(staff, plans, a, b, await factories.make_client(conn))


@pytest.fixture(scope="module")
async def session_owner_conn(database: Any) -> Any:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


# Each method: (a request naming side `s` of world `w`, what it needs: read, write, pay).
Build = Callable[[World, Side], Any]
P = billing_pb2


def _plan_update(w: World, s: Side) -> Any:
    return P.UpdatePlanRequest(
        plan=P.Plan(id=w.plans[2].id, name="Renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )


METHODS: dict[str, tuple[Build, str]] = {
    "CreatePlan": (
        lambda w, s: P.CreatePlanRequest(
            plan=P.Plan(
                code=factories.unique("m").lower(),
                name="M",
                billing_interval=P.BILLING_INTERVAL_MONTH,
                price=egp("1.00"),
                device_quota=1,
            )
        ),
        "write",
    ),
    "ListPlans": (lambda w, s: P.ListPlansRequest(), "read"),
    "UpdatePlan": (_plan_update, "write"),
    "CreateSubscription": (
        lambda w, s: P.CreateSubscriptionRequest(
            client_id=str(w.fresh_client if s is w.a else s.tenant.client_id),
            plan_id=w.plans[0].id,
        ),
        "write",
    ),
    "GetSubscription": (lambda w, s: P.GetSubscriptionRequest(id=s.subscription), "read"),
    "ListSubscriptions": (
        lambda w, s: P.ListSubscriptionsRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "ChangeSubscriptionPlan": (
        lambda w, s: P.ChangeSubscriptionPlanRequest(id=s.subscription, plan_id=w.plans[1].id),
        "write",
    ),
    "CancelSubscription": (
        lambda w, s: P.CancelSubscriptionRequest(id=s.subscription, at_period_end=True),
        "write",
    ),
    "CreateCustomerPrice": (
        lambda w, s: P.CreateCustomerPriceRequest(
            price=P.CustomerPrice(
                client_id=str(s.tenant.client_id), item="device_month", unit_price=egp("3.00")
            )
        ),
        "write",
    ),
    "ListCustomerPrices": (
        lambda w, s: P.ListCustomerPricesRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "GetUsage": (lambda w, s: P.GetUsageRequest(client_id=str(s.tenant.client_id)), "read"),
    "GetBillingAccount": (
        lambda w, s: P.GetBillingAccountRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "ListCreditTransactions": (
        lambda w, s: P.ListCreditTransactionsRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "CreateCreditAdjustment": (
        lambda w, s: P.CreateCreditAdjustmentRequest(
            client_id=str(s.tenant.client_id), amount=egp("1.00"), description="goodwill"
        ),
        "write",
    ),
    "ReverseCreditTransaction": (
        lambda w, s: P.ReverseCreditTransactionRequest(id=s.entry, amount="1.00", reason="typo"),
        "write",
    ),
    "CreateExchangeRate": (
        lambda w, s: P.CreateExchangeRateRequest(
            rate=P.ExchangeRate(
                base_currency="USD", quote_currency="EGP", rate="48.5", source=factories.unique("t")
            )
        ),
        "write",
    ),
    "ListExchangeRates": (lambda w, s: P.ListExchangeRatesRequest(), "read"),
    "ListPostpaidPeriods": (
        lambda w, s: P.ListPostpaidPeriodsRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "CreateFawryPayment": (
        lambda w, s: P.CreateFawryPaymentRequest(
            client_id=str(s.tenant.client_id), amount=egp("10.00")
        ),
        "pay",
    ),
    "GetFawryPayment": (lambda w, s: P.GetFawryPaymentRequest(id=s.payment), "read"),
    "ListFawryPayments": (
        lambda w, s: P.ListFawryPaymentsRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "RefundFawryPayment": (
        lambda w, s: P.RefundFawryPaymentRequest(id=s.payment, amount="1.00"),
        "write",
    ),
    "ListFawryNotifications": (lambda w, s: P.ListFawryNotificationsRequest(), "read"),
    "VoidPostpaidPeriod": (
        lambda w, s: P.VoidPostpaidPeriodRequest(id=s.period, reason="billed in error"),
        "write",
    ),
    "CreateFawryCardCheckout": (
        lambda w, s: P.CreateFawryCardCheckoutRequest(
            client_id=str(s.tenant.client_id),
            amount=egp("10.00"),
            return_url="https://app.example.com/paid",
        ),
        "pay",
    ),
    "ListFawryCards": (
        lambda w, s: P.ListFawryCardsRequest(client_id=str(s.tenant.client_id)),
        "read",
    ),
    "DeleteFawryCard": (lambda w, s: P.DeleteFawryCardRequest(id=s.cards.pop()), "pay"),
}
# Methods that name no client or resource: A's administrator is refused for lack of a
# permission, or gets a reply with no trace of B.
NAMES_NOTHING = {
    "CreatePlan",
    "ListPlans",
    "UpdatePlan",
    "CreateExchangeRate",
    "ListExchangeRates",
    "ListFawryNotifications",
}


def test_the_matrices_cover_every_billing_method() -> None:
    ours = {m.removeprefix(SERVICE) for m in method_names() if m.startswith(SERVICE)}
    assert ours == set(METHODS)


async def _call(server: Server, method: str, request: Any, md: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        reply = await getattr(stub(server), method)(request, metadata=md, timeout=20)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None
    return grpc.StatusCode.OK, reply


def _no_trace_of(b: Side, reply: Any) -> None:
    text = str(reply)
    names = (str(b.tenant.client_id), b.subscription, b.entry, b.payment, b.period, *b.cards)
    for value in names:
        assert value not in text


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_client_a_naming_client_b_gets_not_found_and_no_data(
    billing_server: Server, world: World, method: str
) -> None:
    build, need = METHODS[method]
    code, reply = await _call(
        billing_server, method, build(world, world.b), world.a.tenant.users["client"].md
    )
    if method in NAMES_NOTHING:
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED)
        assert (code == grpc.StatusCode.OK) == (need == "read")
        _no_trace_of(world.b, reply)
    else:
        assert code == grpc.StatusCode.NOT_FOUND, method


def _expected(role: str, need: str) -> grpc.StatusCode:
    if role in ("operator", "viewer"):
        return grpc.StatusCode.PERMISSION_DENIED
    if role == "client" and need == "write":
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.OK


@pytest.mark.parametrize("role", ["viewer", "operator", "client", "admin"])
async def test_role_matrix_only_staff_change_billing(
    billing_server: Server, world: World, role: str
) -> None:
    md = world.staff.md if role == "admin" else world.a.tenant.users[role].md
    got = {}
    for method, (build, need) in sorted(METHODS.items()):
        request = build(world, world.a)
        if method == "CreateSubscription" and role != "admin":
            request.client_id = str(world.a.tenant.client_id)  # their own (staff: a new one)
        code, _ = await _call(billing_server, method, request, md)
        got[method] = (code, _expected(role, need))
    assert {m: c for m, (c, e) in got.items() if c != e} == {}


async def test_staff_see_every_tenants_billing(billing_server: Server, world: World) -> None:
    api = stub(billing_server)
    for side in (world.a, world.b):
        reply = await api.ListCreditTransactions(
            P.ListCreditTransactionsRequest(client_id=str(side.tenant.client_id)),
            metadata=world.staff.md,
        )
        assert side.entry in {t.id for t in reply.credit_transactions}
    notes = await api.ListFawryNotifications(
        P.ListFawryNotificationsRequest(page_size=500), metadata=world.staff.md
    )
    clients = {n.client_id for n in notes.notifications}
    assert {str(world.a.tenant.client_id), str(world.b.tenant.client_id)} <= clients
