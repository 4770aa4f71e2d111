"""Who may do what with dashboards: the two-tenant matrix over every DashboardService method
(another tenant's resources read NOT_FOUND) and the role matrix on one page (owner, view
share, no share, client administrator, staff)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.services.registry import method_names
from tests.helpers import factories
from tests.helpers.dashboards import (
    POS,
    Stub,
    assign,
    hour_window,
    make_page,
    make_widget,
    stub,
    ts,
)
from tests.helpers.grpc import Server, make_staff, make_tenant, violations

_SERVICE = "/lifebox.v1.DashboardService/"
OK, NF, PD, IA, FP = (
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@dataclass
class Target:
    """A page with a device, a widget and a share, and a user of its tenant to share with."""

    page: str
    widget: str
    device: str
    user: str
    shared_user: str


async def _target(s: Stub, md: Any, conn: asyncpg.Connection, t: Any, owner: Any) -> Target:
    device, _ = await factories.make_device(conn, t.client_id)
    if owner.role != "client":
        await assign(conn, t.client_id, owner.user_id, device)
    page = await make_page(s, owner.md, [device])
    widget = await make_widget(s, owner.md, page.id, text=pb.TextConfig(markdown="x"))
    shared = t.users["viewer"]
    await s.SharePage(
        pb.SharePageRequest(page_id=page.id, user_id=str(shared.user_id),
                            permission=pb.SHARE_PERMISSION_VIEW),
        metadata=owner.md,
    )  # fmt: skip
    other = await factories.make_user(conn, t.client_id, role="operator")
    return Target(page.id, widget.id, str(device), str(other), str(shared.user_id))


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


Call = Callable[[Stub, Any, Target], Awaitable[Any]]
START, END = hour_window()
# In an order a run can go through on one page: deletions last.
CALLS: dict[str, Call] = {
    "CreatePage": lambda s, md, t: s.CreatePage(
        pb.CreatePageRequest(page=pb.QuickViewPage(title="n", device_ids=[t.device])), metadata=md
    ),
    "ListPages": lambda s, md, t: s.ListPages(pb.ListPagesRequest(), metadata=md),
    "GetPage": lambda s, md, t: s.GetPage(pb.GetPageRequest(page_id=t.page), metadata=md),
    "UpdatePage": lambda s, md, t: s.UpdatePage(
        pb.UpdatePageRequest(
            page=pb.QuickViewPage(id=t.page, title="u"), update_mask=_mask("title")
        ),
        metadata=md,
    ),
    "SharePage": lambda s, md, t: s.SharePage(
        pb.SharePageRequest(page_id=t.page, user_id=t.user, permission=pb.SHARE_PERMISSION_VIEW),
        metadata=md,
    ),
    "ListPageShares": lambda s, md, t: s.ListPageShares(
        pb.ListPageSharesRequest(page_id=t.page), metadata=md
    ),
    "RevokePageShare": lambda s, md, t: s.RevokePageShare(
        pb.RevokePageShareRequest(page_id=t.page, user_id=t.shared_user), metadata=md
    ),
    "CreateWidget": lambda s, md, t: s.CreateWidget(
        pb.CreateWidgetRequest(
            widget=pb.Widget(
                page_id=t.page,
                type=pb.WIDGET_TYPE_TEXT,
                text=pb.TextConfig(markdown="y"),
                position=POS,
            )
        ),
        metadata=md,
    ),
    "GetWidget": lambda s, md, t: s.GetWidget(pb.GetWidgetRequest(widget_id=t.widget), metadata=md),
    "ListWidgets": lambda s, md, t: s.ListWidgets(
        pb.ListWidgetsRequest(page_id=t.page), metadata=md
    ),
    "UpdateWidget": lambda s, md, t: s.UpdateWidget(
        pb.UpdateWidgetRequest(
            widget=pb.Widget(id=t.widget, title="t"), update_mask=_mask("title")
        ),
        metadata=md,
    ),
    "GetPageLayout": lambda s, md, t: s.GetPageLayout(
        pb.GetPageLayoutRequest(page_id=t.page), metadata=md
    ),
    "UpdatePageLayout": lambda s, md, t: s.UpdatePageLayout(
        pb.UpdatePageLayoutRequest(layout=pb.PageLayout(page_id=t.page, positions={t.widget: POS})),
        metadata=md,
    ),
    "DeletePageLayout": lambda s, md, t: s.DeletePageLayout(
        pb.DeletePageLayoutRequest(page_id=t.page), metadata=md
    ),
    "GetPageData": lambda s, md, t: s.GetPageData(
        pb.GetPageDataRequest(page_id=t.page, start_time=ts(START), end_time=ts(END)), metadata=md
    ),
    "DeleteWidget": lambda s, md, t: s.DeleteWidget(
        pb.DeleteWidgetRequest(widget_id=t.widget), metadata=md
    ),
    "DeletePage": lambda s, md, t: s.DeletePage(pb.DeletePageRequest(page_id=t.page), metadata=md),
}

_READ = {"GetPage", "GetWidget", "ListWidgets", "GetPageLayout", "GetPageData"}
_LAYOUT = {"UpdatePageLayout", "DeletePageLayout"}
_EDIT = {"UpdatePage", "CreateWidget", "UpdateWidget", "DeleteWidget"}
_OWNER = {"SharePage", "RevokePageShare", "DeletePage"}


def _expect(
    reads: grpc.StatusCode, writes: grpc.StatusCode, **special: grpc.StatusCode
) -> dict[str, grpc.StatusCode]:
    out = {m: reads for m in _READ | _LAYOUT} | {m: writes for m in _EDIT | _OWNER}
    return out | {"ListPages": OK} | special


# Caller -> method -> status, on a page an operator owns and shares (view) with the viewer.
ROLES: dict[str, dict[str, grpc.StatusCode]] = {
    "owner": _expect(OK, OK, CreatePage=OK, ListPageShares=OK),
    "shared viewer": _expect(OK, PD, CreatePage=PD, ListPageShares=PD),
    "unshared operator": _expect(NF, NF, CreatePage=OK, ListPageShares=NF),
    "client admin": _expect(OK, PD, CreatePage=OK, ListPageShares=OK),
    "staff": _expect(
        OK, PD, CreatePage=IA, ListPageShares=OK, UpdatePageLayout=FP, DeletePageLayout=NF
    ),
}


def test_the_matrices_cover_every_dashboard_method() -> None:
    ours = {m.removeprefix(_SERVICE) for m in method_names() if m.startswith(_SERVICE)}
    assert ours == set(CALLS)
    assert all(set(expected) == ours for expected in ROLES.values())


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


@pytest.mark.parametrize("caller", sorted(ROLES))
async def test_role_matrix_on_a_shared_page(
    grpc_server: Server, owner_conn: asyncpg.Connection, caller: str
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    owner = a.users["operator"]
    target = await _target(s, owner.md, owner_conn, a, owner)
    accounts = {
        "owner": owner,
        "shared viewer": a.users["viewer"],
        "client admin": a.users["client"],
        "staff": await make_staff(grpc_server, owner_conn, "admin"),
    }
    if caller == "unshared operator":
        # An operator of the tenant with the page's device assigned, but no share.
        from tests.helpers.grpc import make_account, sign_in

        acct = await sign_in(grpc_server, await make_account(owner_conn, "operator", a.client_id))
        await assign(owner_conn, a.client_id, acct.user_id, uuid.UUID(target.device))
        accounts[caller] = acct
    md = accounts[caller].md
    got = {name: await _code(call(s, md, target)) for name, call in CALLS.items()}
    assert got == ROLES[caller]


@pytest.mark.parametrize("method", sorted(CALLS))
async def test_naming_another_tenants_dashboard_resources_is_not_found(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    theirs = await _target(s, b.users["client"].md, owner_conn, b, b.users["client"])
    admin = a.users["client"]
    if method == "ListPages":
        reply = await s.ListPages(pb.ListPagesRequest(page_size=500), metadata=admin.md)
        assert theirs.page not in {p.id for p in reply.pages}
        return
    if method == "CreatePage":
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await CALLS[method](s, admin.md, theirs)
        assert violations(err.value) == {"page.device_ids[0]": "no such device"}
        return
    assert await _code(CALLS[method](s, admin.md, theirs)) is NF
    if method == "SharePage":
        # Their user, on our own page: no such user.
        mine = await make_page(s, admin.md)
        call = s.SharePage(
            pb.SharePageRequest(page_id=mine.id, user_id=theirs.user,
                                permission=pb.SHARE_PERMISSION_VIEW),
            metadata=admin.md,
        )  # fmt: skip
        assert await _code(call) is NF
