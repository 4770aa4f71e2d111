"""ClientService: tenants. Staff manage every client; a client's users see only their own,
and naming another client reads NOT_FOUND."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import asyncpg

from lifebox.v1 import clients_pb2, clients_pb2_grpc, common_pb2
from lifebox_grpc.auth.permissions import CLIENTS_WRITE
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound, PermissionDenied
from lifebox_grpc.services.common import (
    check_text,
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.store import clients as client_store

log = logging.getLogger(__name__)

MAX_NAME = 200
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
CLIENT_MASK_PATHS = ("name", "slug", "billing_mode", "currency_code")
DEFAULT_CURRENCY = "EGP"

_STATUS_TO_PB = {
    "active": clients_pb2.CLIENT_STATUS_ACTIVE,
    "suspended": clients_pb2.CLIENT_STATUS_SUSPENDED,
}
_BILLING_TO_PB = {
    "prepaid": clients_pb2.BILLING_MODE_PREPAID,
    "postpaid": clients_pb2.BILLING_MODE_POSTPAID,
}
_BILLING_FROM_PB = {v: k for k, v in _BILLING_TO_PB.items()}


def client_pb(client: client_store.Client) -> clients_pb2.Client:
    return clients_pb2.Client(
        id=str(client.id),
        name=client.name,
        slug=client.slug,
        status=_STATUS_TO_PB.get(client.status, clients_pb2.CLIENT_STATUS_UNSPECIFIED),
        billing_mode=_BILLING_TO_PB.get(client.billing_mode, clients_pb2.BILLING_MODE_UNSPECIFIED),
        currency_code=client.currency,
        balance=common_pb2.Money(currency_code=client.currency, amount=f"{client.balance:f}"),
        create_time=timestamp(client.created_at),
        update_time=timestamp(client.updated_at),
    )


def _check_slug(errors: ErrorCollector, field: str, slug: str) -> None:
    if not slug:
        errors.add(field, "required")
    elif not _SLUG.match(slug):
        errors.add(field, "3-63 lowercase letters, digits or hyphens, not starting with a hyphen")


def _check_currency(errors: ErrorCollector, field: str, code: str) -> None:
    if not _CURRENCY.match(code):
        errors.add(field, "must be an ISO 4217 code such as EGP")


def _require_staff_write(principal: Principal) -> None:
    principal.require(CLIENTS_WRITE)
    if not principal.is_staff:
        raise PermissionDenied("only platform staff change clients")


class ClientServicer(clients_pb2_grpc.ClientServiceServicer):
    """The ClientService handlers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def CreateClient(
        self, request: clients_pb2.CreateClientRequest, context: Any
    ) -> clients_pb2.CreateClientResponse:
        principal = require_principal()
        if not principal.is_staff:
            raise PermissionDenied("only platform staff create clients")
        errors = ErrorCollector()
        new = request.client
        check_text(errors, "client.name", new.name, max_length=MAX_NAME)
        _check_slug(errors, "client.slug", new.slug)
        billing = "prepaid"
        if new.billing_mode != clients_pb2.BILLING_MODE_UNSPECIFIED:
            billing = _BILLING_FROM_PB.get(new.billing_mode, "")
            if not billing:
                errors.add("client.billing_mode", "unknown billing mode")
        currency = new.currency_code or DEFAULT_CURRENCY
        _check_currency(errors, "client.currency_code", currency)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            created = await client_store.create_client(
                conn, name=new.name, slug=new.slug, billing_mode=billing, currency=currency
            )
        log.info("client created", extra={"client_id": str(created.id), "by": principal.describe()})
        return clients_pb2.CreateClientResponse(client=client_pb(created))

    async def _visible(
        self, conn: asyncpg.Connection, principal: Principal, client_id: uuid.UUID
    ) -> client_store.Client:
        found = await client_store.get_client(conn, client_id, principal.client_id)
        if found is None:
            raise NotFound("client not found")
        return found

    async def GetClient(
        self, request: clients_pb2.GetClientRequest, context: Any
    ) -> clients_pb2.GetClientResponse:
        principal = require_principal()
        client_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            client = await self._visible(conn, principal, client_id)
        return clients_pb2.GetClientResponse(client=client_pb(client))

    async def ListClients(
        self, request: clients_pb2.ListClientsRequest, context: Any
    ) -> clients_pb2.ListClientsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 1)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            rows = await client_store.list_clients(
                conn, principal.client_id, after=key[0] if key else None, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        token = encode_page_token([page[-1].slug]) if more else ""
        return clients_pb2.ListClientsResponse(
            clients=[client_pb(c) for c in page], next_page_token=token
        )

    async def UpdateClient(
        self, request: clients_pb2.UpdateClientRequest, context: Any
    ) -> clients_pb2.UpdateClientResponse:
        principal = require_principal()
        errors = ErrorCollector()
        new = request.client
        client_id = parse_uuid(errors, "client.id", new.id)
        paths = mask_paths(errors, request.update_mask, CLIENT_MASK_PATHS)
        changes: dict[str, object] = {}
        if "name" in paths:
            check_text(errors, "client.name", new.name, max_length=MAX_NAME)
            changes["name"] = new.name
        if "slug" in paths:
            _check_slug(errors, "client.slug", new.slug)
            changes["slug"] = new.slug
        if "billing_mode" in paths:
            billing = _BILLING_FROM_PB.get(new.billing_mode)
            if billing is None:
                errors.add("client.billing_mode", "must be PREPAID or POSTPAID")
            changes["billing_mode"] = billing
        if "currency_code" in paths:
            _check_currency(errors, "client.currency_code", new.currency_code)
            changes["currency"] = new.currency_code
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await self._visible(conn, principal, client_id)
            _require_staff_write(principal)
            updated = await client_store.update_client(
                conn, client_id, principal.client_id, changes
            )
        if updated is None:
            raise NotFound("client not found")
        return clients_pb2.UpdateClientResponse(client=client_pb(updated))

    async def _set_status(
        self, principal: Principal, client_id: uuid.UUID, status: str
    ) -> client_store.Client:
        async with scoped(self.pool, principal) as conn:
            await self._visible(conn, principal, client_id)
            _require_staff_write(principal)
            updated = await client_store.update_client(
                conn, client_id, principal.client_id, {"status": status}
            )
        if updated is None:
            raise NotFound("client not found")
        return updated

    async def SuspendClient(
        self, request: clients_pb2.SuspendClientRequest, context: Any
    ) -> clients_pb2.SuspendClientResponse:
        principal = require_principal()
        client_id = require_uuid("id", request.id)
        errors = ErrorCollector()
        check_text(errors, "reason", request.reason, max_length=500, required=False)
        errors.raise_if_any()
        client = await self._set_status(principal, client_id, "suspended")
        # The reason is the operator's words, kept in the log (length-capped above).
        log.info(
            "client suspended",
            extra={
                "client_id": str(client_id),
                "by": principal.describe(),
                "reason": request.reason,
            },
        )
        return clients_pb2.SuspendClientResponse(client=client_pb(client))

    async def ResumeClient(
        self, request: clients_pb2.ResumeClientRequest, context: Any
    ) -> clients_pb2.ResumeClientResponse:
        principal = require_principal()
        client_id = require_uuid("id", request.id)
        client = await self._set_status(principal, client_id, "active")
        log.info("client resumed", extra={"client_id": str(client_id), "by": principal.describe()})
        return clients_pb2.ResumeClientResponse(client=client_pb(client))
