"""page_access: owner, edit share, view share, expiry, tenant administrators, other tenants."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.services.dashboards.access import PageRole, page_access
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories

READ = frozenset({"dashboards.read"})
WRITE = frozenset({"dashboards.read", "dashboards.write"})


def who(user: uuid.UUID, role: str, client: uuid.UUID | None, perms: frozenset[str]) -> Principal:
    return Principal(user, "x@test", role, client, perms)


async def _page(conn: asyncpg.Connection, client: uuid.UUID, owner: uuid.UUID) -> uuid.UUID:
    async with tenant_transaction(conn, client):
        page: uuid.UUID = await conn.fetchval(
            "INSERT INTO quick_view_pages (client_id, owner_id, title) VALUES ($1, $2, 'P') "
            "RETURNING id",
            client,
            owner,
        )
    return page


async def _share(
    conn: asyncpg.Connection,
    client: uuid.UUID,
    page: uuid.UUID,
    user: uuid.UUID,
    permission: str,
    expires: str | None = None,
) -> None:
    async with tenant_transaction(conn, client):
        await conn.execute(
            "INSERT INTO quick_view_page_shares (client_id, page_id, user_id, permission, "
            "expires_at) VALUES ($1, $2, $3, $4, now() + $5::text::interval)",
            client,
            page,
            user,
            permission,
            expires,
        )


async def _access(conn: asyncpg.Connection, p: Principal, page: uuid.UUID) -> PageRole | None:
    async with tenant_transaction(conn, p.client_id, staff=p.is_staff):
        access = await page_access(conn, p, page)
    return None if access is None else access.role


async def test_page_access_roles(app_conn: asyncpg.Connection) -> None:
    conn = app_conn
    a = await factories.make_client(conn)
    b = await factories.make_client(conn)
    owner = await factories.make_user(conn, a, role="operator")
    editor = await factories.make_user(conn, a, role="operator")
    viewer = await factories.make_user(conn, a, role="viewer")
    lapsed = await factories.make_user(conn, a, role="operator")
    stranger = await factories.make_user(conn, a, role="operator")
    admin = await factories.make_user(conn, a, role="client")
    other = await factories.make_user(conn, b, role="client")
    staff = await factories.make_user(conn, None, role="admin")
    page = await _page(conn, a, owner)
    await _share(conn, a, page, editor, "edit")
    await _share(conn, a, page, viewer, "edit", "1 hour")
    await _share(conn, a, page, lapsed, "view", "-1 second")

    assert await _access(conn, who(owner, "operator", a, WRITE), page) is PageRole.OWNER
    got = await _access(conn, who(editor, "operator", a, WRITE), page)
    assert got is PageRole.EDIT
    assert await _access(conn, who(lapsed, "operator", a, WRITE), page) is None
    assert await _access(conn, who(stranger, "operator", a, WRITE), page) is None
    assert await _access(conn, who(admin, "client", a, WRITE), page) is PageRole.TENANT
    assert await _access(conn, who(other, "client", b, WRITE), page) is None
    assert await _access(conn, who(staff, "admin", None, WRITE), page) is PageRole.TENANT
    assert await _access(conn, who(owner, "operator", a, WRITE), uuid.uuid4()) is None

    # An edit share to a viewer (no dashboards.write) edits nothing.
    v = who(viewer, "viewer", a, READ)
    async with tenant_transaction(conn, a):
        access = await page_access(conn, v, page)
    assert access is not None
    assert access.role is PageRole.EDIT
    assert not access.may_edit
    assert not access.may_share
    async with tenant_transaction(conn, a):
        access = await page_access(conn, who(editor, "operator", a, WRITE), page)
    assert access is not None
    assert access.may_edit
    assert not access.may_share
