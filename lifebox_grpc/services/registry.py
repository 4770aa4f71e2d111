"""Every gRPC service `serve` offers, registered in one place.

Add a service here (and its methods to ``auth/permissions.py``); health checking and
reflection list exactly the names :func:`register_services` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import grpc

from lifebox.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    billing_pb2,  # billing (issue 16)
    billing_pb2_grpc,  # billing (issue 16)
    clients_pb2,
    clients_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from lifebox_grpc.auth.sessions import AuthFlows
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.services.auth import AuthServicer
from lifebox_grpc.services.billing import BillingServicer  # billing (issue 16)
from lifebox_grpc.services.clients import ClientServicer
from lifebox_grpc.services.devices import DeviceServicer
from lifebox_grpc.services.telemetry import TelemetryServicer
from lifebox_grpc.streams.telemetry import TelemetryHub


@dataclass(frozen=True)
class Dependencies:
    """What service constructors may use."""

    pool: asyncpg.Pool
    settings: Settings
    auth: AuthFlows


@dataclass(frozen=True)
class ServiceSpec:
    """A service's full proto name and how to add its servicer to a server."""

    full_name: str
    add: Callable[[grpc.aio.Server, Dependencies], None]


def _add_auth(server: grpc.aio.Server, deps: Dependencies) -> None:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(deps.pool, deps.auth), server)


def _add_clients(server: grpc.aio.Server, deps: Dependencies) -> None:
    clients_pb2_grpc.add_ClientServiceServicer_to_server(ClientServicer(deps.pool), server)


def _add_devices(server: grpc.aio.Server, deps: Dependencies) -> None:
    devices_pb2_grpc.add_DeviceServiceServicer_to_server(
        DeviceServicer(deps.pool, deps.settings), server
    )


def _add_telemetry(server: grpc.aio.Server, deps: Dependencies) -> None:
    # One LISTEN hub per server (process), shared by every StreamTelemetry call.
    fanout = TelemetryHub(resolve_endpoints(deps.settings).app_dsn)
    telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(
        TelemetryServicer(deps.pool, fanout, max_cells=deps.settings.telemetry_max_cells_per_call),
        server,
    )


# --- commands (issue 14) ---
def _add_commands(server: grpc.aio.Server, deps: Dependencies) -> None:
    from lifebox.v1 import commands_pb2_grpc
    from lifebox_grpc.services.commands import CommandFanout, CommandServicer

    # One LISTEN hub per server (process), shared by every StreamCommandUpdates call.
    fanout = CommandFanout(resolve_endpoints(deps.settings).app_dsn)
    commands_pb2_grpc.add_CommandServiceServicer_to_server(
        CommandServicer(deps.pool, deps.settings, fanout), server
    )


def _commands_name() -> str:
    from lifebox.v1 import commands_pb2

    return str(commands_pb2.DESCRIPTOR.services_by_name["CommandService"].full_name)


# --- end commands ---


# --- alarms (issue 15) ---
def _add_alarms(server: grpc.aio.Server, deps: Dependencies) -> None:
    from lifebox.v1 import alarms_pb2_grpc
    from lifebox_grpc.services.alarms import AlarmFanout, AlarmServicer

    # One hub per server (process) on its one LISTEN connection, for every StreamAlarmEvents.
    fanout = AlarmFanout(resolve_endpoints(deps.settings).app_dsn)
    alarms_pb2_grpc.add_AlarmServiceServicer_to_server(
        AlarmServicer(deps.pool, deps.settings, fanout), server
    )


def _alarms_name() -> str:
    from lifebox.v1 import alarms_pb2

    return str(alarms_pb2.DESCRIPTOR.services_by_name["AlarmService"].full_name)


# --- end alarms (issue 15) ---


# --- billing (issue 16) ---
def _add_billing(server: grpc.aio.Server, deps: Dependencies) -> None:
    billing_pb2_grpc.add_BillingServiceServicer_to_server(
        BillingServicer(deps.pool, deps.settings), server
    )


# --- end billing (issue 16) ---


# --- dashboards (issue 17) ---
def _add_dashboards(server: grpc.aio.Server, deps: Dependencies) -> None:
    from lifebox.v1 import dashboards_pb2_grpc
    from lifebox_grpc.services.dashboards import DashboardServicer

    dashboards_pb2_grpc.add_DashboardServiceServicer_to_server(
        DashboardServicer(deps.pool, deps.settings), server
    )


def _dashboards_name() -> str:
    from lifebox.v1 import dashboards_pb2

    return str(dashboards_pb2.DESCRIPTOR.services_by_name["DashboardService"].full_name)


# --- end dashboards (issue 17) ---


# --- calculations (issue 17) ---
def _add_calculations(server: grpc.aio.Server, deps: Dependencies) -> None:
    from lifebox.v1 import calculations_pb2_grpc
    from lifebox_grpc.services.calculations import CalculationServicer

    calculations_pb2_grpc.add_CalculationServiceServicer_to_server(
        CalculationServicer(deps.pool, deps.settings), server
    )


def _calculations_name() -> str:
    from lifebox.v1 import calculations_pb2

    return str(calculations_pb2.DESCRIPTOR.services_by_name["CalculationService"].full_name)


# --- end calculations (issue 17) ---


# --- files (issue 17) ---
def _add_files(server: grpc.aio.Server, deps: Dependencies) -> None:
    from lifebox.v1 import files_pb2_grpc
    from lifebox_grpc.services.files import FileServicer

    files_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(deps.pool, deps.settings), server)


def _files_name() -> str:
    from lifebox.v1 import files_pb2

    return str(files_pb2.DESCRIPTOR.services_by_name["FileService"].full_name)


# --- end files (issue 17) ---


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name, _add_auth),
    ServiceSpec(clients_pb2.DESCRIPTOR.services_by_name["ClientService"].full_name, _add_clients),
    ServiceSpec(devices_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name, _add_devices),
    ServiceSpec(
        telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name, _add_telemetry
    ),
    # --- billing (issue 16) ---
    ServiceSpec(billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name, _add_billing),
    ServiceSpec(_commands_name(), _add_commands),  # --- commands (issue 14)
    ServiceSpec(_alarms_name(), _add_alarms),  # --- alarms (issue 15)
    ServiceSpec(_dashboards_name(), _add_dashboards),  # --- dashboards (issue 17)
    ServiceSpec(_calculations_name(), _add_calculations),  # --- calculations (issue 17)
    ServiceSpec(_files_name(), _add_files),  # --- files (issue 17)
)


def register_services(server: grpc.aio.Server, deps: Dependencies) -> list[str]:
    """Add every service to ``server``; return their full names (for health, reflection)."""
    for spec in SERVICES:
        spec.add(server, deps)
    return [spec.full_name for spec in SERVICES]


def method_names() -> list[str]:
    """Every RPC of every registered service, as ``/pkg.Service/Method``."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    names = []
    for spec in SERVICES:
        service = pool.FindServiceByName(spec.full_name)
        names += [f"/{spec.full_name}/{m.name}" for m in service.methods]
    return names
