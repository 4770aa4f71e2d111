"""Where a webhook may be sent: the URL rule and the SSRF guard.

In prod mode a webhook is HTTPS only and never reaches a loopback, private, link-local,
multicast, reserved or unspecified address. The guard is a resolver: aiohttp connects only
to the addresses it returns, so the check is on the addresses actually used (a name that
resolves, or later re-resolves, to 10.0.0.1 is refused), not on the name.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

MAX_URL = 2000


class TargetRefused(Exception):
    """The webhook's target is not allowed (the reason is safe to record)."""


def url_problem(url: str, *, prod: bool) -> str | None:
    """Why ``url`` cannot be a webhook target (None: it can, up to its resolved addresses)."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "is not a URL"
    allowed = ("https",) if prod else ("https", "http")
    if parts.scheme not in allowed:
        return "must be an https:// URL" if prod else "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if prod:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return None
        if not address_allowed(address):
            return "must not be a loopback, private or link-local address"
    return None


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a prod webhook may connect to ``address`` (a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default, then drops every address a prod webhook may not
    reach; none left is :class:`TargetRefused`."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if address_allowed(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise TargetRefused(
                f"{host} resolves only to loopback, private or link-local addresses"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
