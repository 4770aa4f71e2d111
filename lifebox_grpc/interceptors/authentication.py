"""Authentication and authorization of every call, from one declarative table.

``authorization: Bearer <access JWT>`` → verified claims → the :class:`Principal` as the
database knows it now → the permission the method's :class:`Rule` names. A method of our
API without a rule is refused: forgetting to declare a permission fails closed. A server
stream gets the same decision again, periodically (:mod:`.stream_access`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from lifebox_grpc.auth.permissions import UNGUARDED_PREFIXES, Access, Rule
from lifebox_grpc.auth.principal import Principal, set_current_principal
from lifebox_grpc.auth.tokens import AccessClaims, Keyring, verify_access_token
from lifebox_grpc.errors import PermissionDenied, Unauthenticated
from lifebox_grpc.interceptors.base import AroundInterceptor, CallInfo
from lifebox_grpc.interceptors.state import current_call

log = logging.getLogger(__name__)

PrincipalLoader = Callable[[AccessClaims], Awaitable[Principal]]
# Verified tokens remembered at once (a client sends the same token on every call).
VERIFIED_TOKENS = 10_000


class VerifiedTokens:
    """Access tokens already verified, and their claims, until the tokens expire.

    A token's signature and claims cannot change, so verifying the same bytes again only
    repeats work; the expiry is still checked on every use. Whether the account behind the
    token may still act is not decided here (the principal load does that on every call).
    """

    def __init__(self, keyring: Keyring, max_entries: int = VERIFIED_TOKENS) -> None:
        self.keyring = keyring
        self.max_entries = max_entries
        self._claims: dict[str, AccessClaims] = {}

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid, unexpired access token; Unauthenticated otherwise."""
        claims = self._claims.get(token)
        now = time.time()
        if claims is None:
            claims = verify_access_token(self.keyring, token)
            if len(self._claims) >= self.max_entries:
                self._claims = {t: c for t, c in self._claims.items() if _alive(c, now)}
                if len(self._claims) >= self.max_entries:
                    self._claims.clear()
            self._claims[token] = claims
        elif not _alive(claims, now):
            del self._claims[token]
            raise Unauthenticated("invalid or expired access token")
        return claims


def _alive(claims: AccessClaims, now: float) -> bool:
    return claims.expires_at.timestamp() > now


def bearer_token(context: aio.ServicerContext[Any, Any]) -> str | None:
    """The token of an ``authorization: Bearer …`` header, or None when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be `Bearer <access token>`")
            return token.strip()
    return None


class AuthenticationInterceptor(AroundInterceptor):
    """Sets the call's principal and enforces :data:`permissions.METHOD_RULES`."""

    def __init__(
        self, keyring: Keyring, rules: Mapping[str, Rule], load_principal: PrincipalLoader
    ) -> None:
        self.tokens = VerifiedTokens(keyring)
        self.rules = rules
        self.load_principal = load_principal

    async def _authenticate(self, token: str) -> Principal:
        return await self.load_principal(self.tokens.verify(token))

    async def _reauthorize(self, token: str, rule: Rule) -> Principal:
        """What a call's start decided, decided again (a server stream's re-check)."""
        principal = await self._authenticate(token)
        if rule.permission is not None:
            principal.require(rule.permission)
        return principal

    @asynccontextmanager
    async def around(
        self, call: CallInfo, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if call.method.startswith(UNGUARDED_PREFIXES):
            yield
            return
        rule = self.rules.get(call.method)
        if rule is None:
            log.error("no permission rule for %s: refused", call.method)
            raise PermissionDenied("this method is not available")
        token = bearer_token(context)
        principal: Principal | None = None
        if token is not None:
            try:
                principal = await self._authenticate(token)
            except Unauthenticated:
                # A public method still works for a caller with a stale token.
                if rule.access is not Access.PUBLIC:
                    raise
        elif rule.access is not Access.PUBLIC:
            raise Unauthenticated("this method needs `authorization: Bearer <access token>`")
        if principal is not None:
            assert token is not None
            state = current_call()
            if state:
                state.principal = principal.describe()
                if call.response_streaming:
                    state.reauthorize = functools.partial(self._reauthorize, token, rule)
                    state.expires_at = self.tokens.verify(token).expires_at.timestamp()
            if rule.permission is not None:
                principal.require(rule.permission)
        set_current_principal(principal)
        yield
