"""Every gRPC service `serve` offers, registered in one place.

Add a service here (and its methods to ``auth/permissions.py``); health checking and
reflection list exactly the names :func:`register_services` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import grpc

from lifebox.v1 import auth_pb2, auth_pb2_grpc, clients_pb2, clients_pb2_grpc
from lifebox_grpc.auth.sessions import AuthFlows
from lifebox_grpc.config import Settings
from lifebox_grpc.services.auth import AuthServicer
from lifebox_grpc.services.clients import ClientServicer


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


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name, _add_auth),
    ServiceSpec(clients_pb2.DESCRIPTOR.services_by_name["ClientService"].full_name, _add_clients),
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
