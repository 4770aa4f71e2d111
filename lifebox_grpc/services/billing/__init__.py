"""BillingService: plans, subscriptions, prices and usage, the ledger and exchange rates,
Fawry payments; one module per resource. Validation and mapping only: the SQL is in the
``store.billing_*`` modules, the rules shared with `lifebox maintain` and the webhook in
:mod:`lifebox_grpc.billing`."""

from __future__ import annotations

from lifebox_grpc.services.billing.ledger import LedgerRpcs
from lifebox_grpc.services.billing.payments import PaymentRpcs
from lifebox_grpc.services.billing.plans import PlanRpcs
from lifebox_grpc.services.billing.subscriptions import SubscriptionRpcs
from lifebox_grpc.services.billing.usage import UsageRpcs

__all__ = ["BillingServicer"]


class BillingServicer(PlanRpcs, SubscriptionRpcs, UsageRpcs, LedgerRpcs, PaymentRpcs):
    """The BillingService handlers."""
