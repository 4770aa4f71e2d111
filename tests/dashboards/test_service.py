"""DashboardService happy paths, bad input named by field path, and etag conflicts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import dashboards_pb2 as pb
from lifebox.v1 import telemetry_pb2 as tpb
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.dashboards import POS, agg, make_page, make_widget, minutes, stub, ts
from tests.helpers.grpc import Server, error_of, make_tenant, violations


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def test_page_create_get_list_update_delete(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    d1, _ = await factories.make_device(owner_conn, a.client_id)
    d2, _ = await factories.make_device(owner_conn, a.client_id)
    reboot = await factories.template_id(owner_conn, "reboot")
    page = await make_page(s, md, [d2, d1], [reboot])
    assert page.device_ids == [str(d2), str(d1)]
    assert page.command_template_ids == [str(reboot)]
    assert page.caller_role == pb.PAGE_ROLE_OWNER
    assert page.etag
    got = (await s.GetPage(pb.GetPageRequest(page_id=page.id), metadata=md)).page
    assert got == page
    listed = await s.ListPages(pb.ListPagesRequest(), metadata=md)
    assert [p.id for p in listed.pages] == [page.id]

    updated = (
        await s.UpdatePage(
            pb.UpdatePageRequest(
                page=pb.QuickViewPage(
                    id=page.id, title="Renamed", device_ids=[str(d1)], etag=page.etag
                ),
                update_mask=mask("title", "device_ids"),
            ),
            metadata=md,
        )
    ).page
    assert updated.title == "Renamed"
    assert updated.device_ids == [str(d1)]
    assert updated.etag != page.etag

    # The first etag is stale now: ABORTED, for update and delete alike.
    for call in (
        s.UpdatePage(
            pb.UpdatePageRequest(
                page=pb.QuickViewPage(id=page.id, title="Lost", etag=page.etag),
                update_mask=mask("title"),
            ),
            metadata=md,
        ),
        s.DeletePage(pb.DeletePageRequest(page_id=page.id, etag=page.etag), metadata=md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() is grpc.StatusCode.ABORTED
    await s.DeletePage(pb.DeletePageRequest(page_id=page.id, etag=updated.etag), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.GetPage(pb.GetPageRequest(page_id=page.id), metadata=md)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_bad_pages_name_each_field(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await factories.make_client(owner_conn)
    foreign, _ = await factories.make_device(owner_conn, b)
    mine, _ = await factories.make_device(owner_conn, a.client_id)
    s = stub(grpc_server)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.CreatePage(
            pb.CreatePageRequest(
                page=pb.QuickViewPage(
                    title=" ",
                    device_ids=[str(mine), str(mine), "nope"],
                    command_template_ids=[str(uuid.uuid4())],
                )
            ),
            metadata=a.users["client"].md,
        )
    bad = violations(err.value)
    assert set(bad) == {"page.title", "page.device_ids[1]", "page.device_ids[2]"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.CreatePage(
            pb.CreatePageRequest(
                page=pb.QuickViewPage(
                    title="x", device_ids=[str(foreign)], command_template_ids=[str(uuid.uuid4())]
                )
            ),
            metadata=a.users["client"].md,
        )
    assert set(violations(err.value)) == {"page.device_ids[0]", "page.command_template_ids[0]"}
    # An operator may put on a page only the devices assigned to them.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await make_page(s, a.users["operator"].md, [mine])
    assert set(violations(err.value)) == {"page.device_ids[0]"}
    # ... and only templates they may send: an operator holds no grant of reboot's permission.
    reboot = await factories.template_id(owner_conn, "reboot")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await make_page(s, a.users["operator"].md, [], [reboot])
    assert "page.command_template_ids[0]" in violations(err.value)
    page = await make_page(s, a.users["client"].md, [mine])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.UpdatePage(
            pb.UpdatePageRequest(page=pb.QuickViewPage(id=page.id), update_mask=mask("owner_id")),
            metadata=a.users["client"].md,
        )
    assert "update_mask" in violations(err.value)


async def test_widgets_of_every_type_layouts_and_etags(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    d1, _ = await factories.make_device(owner_conn, a.client_id)
    reboot = await factories.template_id(owner_conn, "reboot")
    page = await make_page(s, md, [d1], [reboot])
    dev = [str(d1)]
    made = [
        await make_widget(s, md, page.id, time_series=pb.TimeSeriesConfig(
            device_ids=dev, aggregations=[agg("voltage_l1", tpb.AGGREGATE_FUNCTION_AVG)],
            bucket_width=minutes(5))),
        await make_widget(s, md, page.id, gauge=pb.GaugeConfig(
            device_id=str(d1), field="temperature_c", min=0, max=50)),
        await make_widget(s, md, page.id, stat=pb.StatConfig(
            device_ids=dev, aggregation=agg("voltage_l1", tpb.AGGREGATE_FUNCTION_MAX))),
        await make_widget(s, md, page.id, table=pb.TableConfig(device_ids=dev, fields=["status"])),
        await make_widget(s, md, page.id, map=pb.MapConfig(device_ids=dev)),
        await make_widget(s, md, page.id, command_button=pb.CommandButtonConfig(
            command_template_id=str(reboot), device_id=str(d1), label="Reboot")),
        await make_widget(s, md, page.id, text=pb.TextConfig(markdown="# Hello")),
        await make_widget(s, md, page.id, alarm_list=pb.AlarmListConfig(device_ids=dev)),
    ]  # fmt: skip
    assert [w.type for w in made] == list(range(1, 9))
    listed = await s.ListWidgets(pb.ListWidgetsRequest(page_id=page.id, page_size=5), metadata=md)
    rest = await s.ListWidgets(
        pb.ListWidgetsRequest(page_id=page.id, page_token=listed.next_page_token), metadata=md
    )
    assert [w.id for w in [*listed.widgets, *rest.widgets]] == [w.id for w in made]
    assert (
        await s.GetWidget(pb.GetWidgetRequest(widget_id=made[1].id), metadata=md)
    ).widget == made[1]

    gauge = made[1]
    changed = pb.Widget(
        id=gauge.id, etag=gauge.etag, title="Temp",
        gauge=pb.GaugeConfig(device_id=str(d1), field="humidity_pct", min=0, max=100),
    )  # fmt: skip
    saved = (
        await s.UpdateWidget(
            pb.UpdateWidgetRequest(widget=changed, update_mask=mask("title", "config")), metadata=md
        )
    ).widget
    assert saved.title == "Temp"
    assert saved.gauge.field == "humidity_pct"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.UpdateWidget(
            pb.UpdateWidgetRequest(widget=changed, update_mask=mask("title")), metadata=md
        )
    assert err.value.code() is grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.DeleteWidget(
            pb.DeleteWidgetRequest(widget_id=gauge.id, etag=gauge.etag), metadata=md
        )
    assert err.value.code() is grpc.StatusCode.ABORTED
    await s.DeleteWidget(pb.DeleteWidgetRequest(widget_id=gauge.id, etag=saved.etag), metadata=md)

    # Layouts: the default is the widgets' positions; the caller's own replaces it for them.
    default = (await s.GetPageLayout(pb.GetPageLayoutRequest(page_id=page.id), metadata=md)).layout
    assert default.is_default
    assert default.positions[made[0].id] == POS
    moved = pb.WidgetPosition(x=5, y=6, width=2, height=2)
    mine = pb.PageLayout(page_id=page.id, positions={made[0].id: moved})
    saved_layout = (
        await s.UpdatePageLayout(pb.UpdatePageLayoutRequest(layout=mine), metadata=md)
    ).layout
    assert not saved_layout.is_default
    assert saved_layout.positions[made[0].id] == moved
    other = await s.GetPageLayout(
        pb.GetPageLayoutRequest(page_id=page.id), metadata=a.users["client"].md
    )
    assert other.layout == saved_layout
    stale = pb.PageLayout(page_id=page.id, positions={}, etag='"999"')
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.UpdatePageLayout(pb.UpdatePageLayoutRequest(layout=stale), metadata=md)
    assert err.value.code() is grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.UpdatePageLayout(
            pb.UpdatePageLayoutRequest(
                layout=pb.PageLayout(page_id=page.id, positions={str(uuid.uuid4()): moved})
            ),
            metadata=md,
        )
    assert len(violations(err.value)) == 1
    await s.DeletePageLayout(
        pb.DeletePageLayoutRequest(page_id=page.id, etag=saved_layout.etag), metadata=md
    )
    back = (await s.GetPageLayout(pb.GetPageLayoutRequest(page_id=page.id), metadata=md)).layout
    assert back.is_default


async def test_widget_configs_are_checked_per_type(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    d1, _ = await factories.make_device(owner_conn, a.client_id)
    off_page, _ = await factories.make_device(owner_conn, a.client_id)
    page = await make_page(s, md, [d1])
    cases = [
        (pb.Widget(type=pb.WIDGET_TYPE_TIME_SERIES, time_series=pb.TimeSeriesConfig(
            device_ids=[str(off_page)],
            aggregations=[agg("no_such", tpb.AGGREGATE_FUNCTION_AVG),
                          agg("status", tpb.AGGREGATE_FUNCTION_SUM)])),
         {"widget.time_series.device_ids[0]", "widget.time_series.aggregations[0].field",
          "widget.time_series.aggregations[1].function", "widget.time_series.bucket_width"}),
        (pb.Widget(type=pb.WIDGET_TYPE_GAUGE, gauge=pb.GaugeConfig(
            device_id=str(d1), field="relay_on", min=5, max=1)),
         {"widget.gauge.field", "widget.gauge.max"}),
        (pb.Widget(type=pb.WIDGET_TYPE_TABLE, table=pb.TableConfig(device_ids=[], fields=["x"])),
         {"widget.table.device_ids", "widget.table.fields[0]"}),
        (pb.Widget(type=pb.WIDGET_TYPE_COMMAND_BUTTON, command_button=pb.CommandButtonConfig(
            command_template_id=str(uuid.uuid4()), device_id=str(d1))),
         {"widget.command_button.command_template_id"}),
        (pb.Widget(type=pb.WIDGET_TYPE_GAUGE, text=pb.TextConfig(markdown="x")),
         {"widget.text"}),
        (pb.Widget(type=pb.WIDGET_TYPE_UNSPECIFIED), {"widget.type"}),
        (pb.Widget(type=pb.WIDGET_TYPE_TEXT, position=pb.WidgetPosition(x=-1, width=0, height=1)),
         {"widget.position.x", "widget.position.width"}),
    ]  # fmt: skip
    for widget, fields in cases:
        widget.page_id = page.id
        if not widget.HasField("position"):
            widget.position.CopyFrom(POS)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.CreateWidget(pb.CreateWidgetRequest(widget=widget), metadata=md)
        code, _ = error_of(err.value)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(violations(err.value)) == fields, widget


async def test_shares_view_edit_expiry_revoke_and_same_tenant_only(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    owner, op, viewer = a.users["client"], a.users["operator"], a.users["viewer"]
    page = await make_page(s, owner.md)

    async def code_of(call: object) -> grpc.StatusCode:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    get = pb.GetPageRequest(page_id=page.id)
    assert await code_of(s.GetPage(get, metadata=op.md)) is grpc.StatusCode.NOT_FOUND
    share = (
        await s.SharePage(
            pb.SharePageRequest(page_id=page.id, user_id=str(op.user_id),
                                permission=pb.SHARE_PERMISSION_EDIT),
            metadata=owner.md,
        )
    ).share  # fmt: skip
    assert share.permission == pb.SHARE_PERMISSION_EDIT
    assert not share.expired
    seen = (await s.GetPage(get, metadata=op.md)).page
    assert seen.caller_role == pb.PAGE_ROLE_EDIT
    await s.UpdatePage(
        pb.UpdatePageRequest(
            page=pb.QuickViewPage(id=page.id, title="By op"), update_mask=mask("title")
        ),
        metadata=op.md,
    )
    # An edit share does not share on: only the owner shares, revokes or deletes.
    assert await code_of(
        s.SharePage(pb.SharePageRequest(page_id=page.id, user_id=str(viewer.user_id),
                                        permission=pb.SHARE_PERMISSION_VIEW), metadata=op.md)
    ) is grpc.StatusCode.PERMISSION_DENIED  # fmt: skip
    assert (
        await code_of(s.DeletePage(pb.DeletePageRequest(page_id=page.id), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # A viewer with an edit share still edits nothing (no dashboards.write).
    await s.SharePage(
        pb.SharePageRequest(page_id=page.id, user_id=str(viewer.user_id),
                            permission=pb.SHARE_PERMISSION_EDIT,
                            expire_time=ts(datetime.now(UTC) + timedelta(hours=1))),
        metadata=owner.md,
    )  # fmt: skip
    assert (await s.GetPage(get, metadata=viewer.md)).page.title == "By op"
    assert await code_of(
        s.UpdatePage(pb.UpdatePageRequest(page=pb.QuickViewPage(id=page.id, title="v"),
                                          update_mask=mask("title")), metadata=viewer.md)
    ) is grpc.StatusCode.PERMISSION_DENIED  # fmt: skip
    shares = await s.ListPageShares(pb.ListPageSharesRequest(page_id=page.id), metadata=owner.md)
    assert {x.user_id for x in shares.shares} == {str(op.user_id), str(viewer.user_id)}
    assert (
        await code_of(s.ListPageShares(pb.ListPageSharesRequest(page_id=page.id), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # Another tenant's user is no such user; an expiry in the past is refused.
    assert await code_of(
        s.SharePage(pb.SharePageRequest(page_id=page.id, user_id=str(b.users["operator"].user_id),
                                        permission=pb.SHARE_PERMISSION_VIEW), metadata=owner.md)
    ) is grpc.StatusCode.NOT_FOUND  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.SharePage(
            pb.SharePageRequest(page_id=page.id, user_id=str(op.user_id),
                                expire_time=ts(datetime.now(UTC) - timedelta(seconds=1))),
            metadata=owner.md,
        )  # fmt: skip
    assert set(violations(err.value)) == {"permission", "expire_time"}
    await s.RevokePageShare(
        pb.RevokePageShareRequest(page_id=page.id, user_id=str(op.user_id)), metadata=owner.md
    )
    assert await code_of(s.GetPage(get, metadata=op.md)) is grpc.StatusCode.NOT_FOUND
    # An expired share grants nothing.
    async with tenant_transaction(owner_conn, a.client_id):
        await owner_conn.execute(
            "UPDATE quick_view_page_shares SET expires_at = now() - interval '1 second' "
            "WHERE page_id = $1",
            uuid.UUID(page.id),
        )
    assert await code_of(s.GetPage(get, metadata=viewer.md)) is grpc.StatusCode.NOT_FOUND
    shares = await s.ListPageShares(pb.ListPageSharesRequest(page_id=page.id), metadata=owner.md)
    assert [x.expired for x in shares.shares] == [True]
