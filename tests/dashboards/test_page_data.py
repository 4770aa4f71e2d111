"""GetPageData: every widget's data equals, field by field, what the TelemetryService call
for that widget returns; a share never shows data of devices the caller may not see."""

from __future__ import annotations

import asyncpg
from google.protobuf import field_mask_pb2

from lifebox.v1 import dashboards_pb2 as pb
from lifebox.v1 import telemetry_pb2 as tpb
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarms import make_rule
from tests.helpers.dashboards import (
    agg,
    assign,
    hour_window,
    hours,
    make_page,
    make_widget,
    minutes,
    seed_readings,
    stub,
    ts,
)
from tests.helpers.grpc import Server, make_tenant

F = tpb


async def test_page_data_equals_the_separate_telemetry_calls(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    telemetry = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    devices = [(await factories.make_device(owner_conn, a.client_id))[0] for _ in range(4)]
    start, end = hour_window()
    # Readings in the hour and around it (outside the range: must not count).
    await seed_readings(owner_conn, a.client_id, devices[:3], start - hours(1).ToTimedelta(), end)
    ids = [str(d) for d in devices]
    page = await make_page(s, md, devices)
    series_aggs = [
        agg("voltage_l1", F.AGGREGATE_FUNCTION_AVG),
        agg("temperature_c", F.AGGREGATE_FUNCTION_MAX),
        agg("status", F.AGGREGATE_FUNCTION_COUNT),
        agg("relay_on", F.AGGREGATE_FUNCTION_FIRST),
        agg("status", F.AGGREGATE_FUNCTION_LAST),
    ]
    w = [
        await make_widget(s, md, page.id, time_series=pb.TimeSeriesConfig(
            device_ids=ids[:2], aggregations=series_aggs, bucket_width=minutes(5))),
        await make_widget(s, md, page.id, time_series=pb.TimeSeriesConfig(
            device_ids=ids[1:], aggregations=series_aggs[1:3], bucket_width=minutes(15))),
        await make_widget(s, md, page.id, time_series=pb.TimeSeriesConfig(
            device_ids=ids[2:3], aggregations=series_aggs[:1], bucket_width=minutes(5))),
        await make_widget(s, md, page.id, gauge=pb.GaugeConfig(
            device_id=ids[0], field="temperature_c", min=0, max=50)),
        await make_widget(s, md, page.id, stat=pb.StatConfig(
            device_ids=[ids[0], ids[2]], aggregation=agg("voltage_l1", F.AGGREGATE_FUNCTION_SUM))),
        await make_widget(s, md, page.id, table=pb.TableConfig(device_ids=ids, fields=[
            "voltage_l1", "status", "relay_on", "uptime_s", "temperature_c"])),
        await make_widget(s, md, page.id, map=pb.MapConfig(device_ids=[ids[3], ids[1]])),
        await make_widget(s, md, page.id, text=pb.TextConfig(markdown="notes")),
        await make_widget(s, md, page.id, alarm_list=pb.AlarmListConfig(device_ids=ids)),
    ]  # fmt: skip
    data = await s.GetPageData(
        pb.GetPageDataRequest(page_id=page.id, start_time=ts(start), end_time=ts(end)), metadata=md
    )
    assert [x.widget_id for x in data.widgets] == [x.id for x in w]
    got = {x.widget_id: x for x in data.widgets}

    async def aggregate(
        devs: list[str], aggs: list[tpb.Aggregation], width: object
    ) -> list[tpb.Series]:
        reply = await telemetry.AggregateTelemetry(
            tpb.AggregateTelemetryRequest(
                device_ids=devs, start_time=ts(start), end_time=ts(end), bucket_width=width,
                aggregations=aggs,
            ),
            metadata=md,
        )  # fmt: skip
        return list(reply.series)

    async def latest(devs: list[str], fields: list[str]) -> pb.LatestValues:
        reply = await telemetry.GetLatestTelemetry(
            tpb.GetLatestTelemetryRequest(device_ids=devs, fields=fields), metadata=md
        )
        return pb.LatestValues(
            device_ids=reply.device_ids, time_micros=reply.time_micros, columns=reply.columns
        )

    for widget in w[:3]:
        c = widget.time_series
        expected = await aggregate(list(c.device_ids), list(c.aggregations), c.bucket_width)
        assert expected, "seeded readings make series"
        assert list(got[widget.id].series.series) == expected
    assert got[w[3].id].latest == await latest([ids[0]], ["temperature_c"])
    # STAT over an epoch-aligned hour is AggregateTelemetry's one bucket of an hour.
    stat = await aggregate([ids[0], ids[2]], [w[4].stat.aggregation], hours(1))
    assert len(stat) == 2
    assert list(got[w[4].id].series.series) == stat
    table = await latest(ids, list(w[5].table.fields))
    assert len(table.device_ids) == 3  # the fourth device never sent anything
    assert got[w[5].id].latest == table
    assert got[w[6].id].latest == await latest([ids[3], ids[1]], ["latitude", "longitude"])
    assert got[w[7].id].WhichOneof("data") is None
    assert got[w[8].id].alarms == pb.AlarmCounts()
    assert all(x.hidden_device_count == 0 for x in data.widgets)


async def test_a_viewer_sees_no_data_of_unassigned_devices_on_a_shared_page(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    owner, viewer = a.users["client"], a.users["viewer"]
    s = stub(grpc_server)
    devices = [(await factories.make_device(owner_conn, a.client_id))[0] for _ in range(3)]
    ids = [str(d) for d in devices]
    await assign(owner_conn, a.client_id, viewer.user_id, devices[0])
    start, end = hour_window()
    await seed_readings(owner_conn, a.client_id, devices, start, end)
    page = await make_page(s, owner.md, devices)
    table = await make_widget(
        s, owner.md, page.id, table=pb.TableConfig(device_ids=ids, fields=["voltage_l1"])
    )
    chart = await make_widget(s, owner.md, page.id, time_series=pb.TimeSeriesConfig(
        device_ids=ids[1:], aggregations=[agg("voltage_l1", F.AGGREGATE_FUNCTION_AVG)],
        bucket_width=minutes(10)))  # fmt: skip
    await s.SharePage(
        pb.SharePageRequest(
            page_id=page.id, user_id=str(viewer.user_id), permission=pb.SHARE_PERMISSION_VIEW
        ),
        metadata=owner.md,
    )
    request = pb.GetPageDataRequest(page_id=page.id, start_time=ts(start), end_time=ts(end))
    full = await s.GetPageData(request, metadata=owner.md)
    assert [len(x.latest.device_ids) + len(x.series.series) for x in full.widgets] == [3, 2]
    seen = await s.GetPageData(request, metadata=viewer.md)
    by_id = {x.widget_id: x for x in seen.widgets}
    assert list(by_id[table.id].latest.device_ids) == [ids[0]]
    assert by_id[table.id].hidden_device_count == 2
    assert by_id[chart.id].series == pb.SeriesValues()
    assert by_id[chart.id].hidden_device_count == 2
    text = seen.SerializeToString()
    assert all(d.encode() not in text for d in ids[1:])
    # The page and its widgets' configs name only the viewer's device.
    listed = await s.ListWidgets(pb.ListWidgetsRequest(page_id=page.id), metadata=viewer.md)
    assert [list(w.table.device_ids) or list(w.time_series.device_ids) for w in listed.widgets] == [
        [ids[0]],
        [],
    ]
    got = (await s.GetPage(pb.GetPageRequest(page_id=page.id), metadata=viewer.md)).page
    assert list(got.device_ids) == [ids[0]]


async def test_alarm_list_counts_open_events_per_device_and_severity(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    d1, _ = await factories.make_device(owner_conn, a.client_id)
    d2, _ = await factories.make_device(owner_conn, a.client_id)
    rules = [
        await make_rule(owner_conn, a.client_id, severity=sev)
        for sev in ("major", "major", "critical")
    ]
    events = [
        (rules[0], d1, "major", "active_unack", None),
        (rules[1], d1, "major", "active_ack", None),
        (rules[2], d1, "critical", "cleared_unack", "now()"),  # cleared: not open
        (rules[2], d2, "critical", "active_unack", None),
    ]
    async with tenant_transaction(owner_conn, a.client_id):
        for rule, device, severity, status, cleared in events:
            await owner_conn.execute(
                "INSERT INTO alarm_events (client_id, rule_id, device_id, severity, status, "
                f"cleared_at) VALUES ($1, $2, $3, $4, $5, {cleared or 'NULL'})",
                a.client_id, rule, device, severity, status,
            )  # fmt: skip
    page = await make_page(s, md, [d1, d2])
    widget = await make_widget(
        s, md, page.id, alarm_list=pb.AlarmListConfig(device_ids=[str(d2), str(d1)])
    )
    start, end = hour_window()
    data = await s.GetPageData(
        pb.GetPageDataRequest(page_id=page.id, start_time=ts(start), end_time=ts(end)), metadata=md
    )
    (part,) = data.widgets
    assert part.widget_id == widget.id
    assert part.alarms == pb.AlarmCounts(
        device_ids=[str(d2), str(d1)], severities=["critical", "major"], counts=[1, 2],
        unacknowledged=[1, 1],
    )  # fmt: skip


async def test_a_device_taken_off_the_page_leaves_its_widgets_data(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    md = a.users["client"].md
    s = stub(grpc_server)
    devices = [(await factories.make_device(owner_conn, a.client_id))[0] for _ in range(2)]
    ids = [str(d) for d in devices]
    start, end = hour_window()
    await seed_readings(owner_conn, a.client_id, devices, start, end)
    page = await make_page(s, md, devices)
    await make_widget(s, md, page.id, table=pb.TableConfig(device_ids=ids, fields=["status"]))
    await s.UpdatePage(
        pb.UpdatePageRequest(
            page=pb.QuickViewPage(id=page.id, device_ids=ids[:1]),
            update_mask=field_mask_pb2.FieldMask(paths=["device_ids"]),
        ),
        metadata=md,
    )
    data = await s.GetPageData(
        pb.GetPageDataRequest(page_id=page.id, start_time=ts(start), end_time=ts(end)), metadata=md
    )
    (part,) = data.widgets
    assert list(part.latest.device_ids) == ids[:1]
    assert part.hidden_device_count == 1
