"""Streams that follow one channel's notices (presence changes, command updates).

A notice names a committed row (its transaction sent it, so it arrives only once that
commits) and whose it is; the hub queues it on every subscription whose ``accepts`` lets it
in (asked as it arrives, so a stream's audience may change) and the stream reads the rows
itself, under its caller's scope. Queues are bounded like every stream's
(:mod:`lifebox_grpc.streams.subscription`); when the process's listener is lost, every
subscription is marked to resynchronise by time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from lifebox_grpc.streams import limits
from lifebox_grpc.streams.listener import Listener
from lifebox_grpc.streams.subscription import Subscription

log = logging.getLogger(__name__)

T = TypeVar("T")


class NoticeHub(Generic[T]):
    """One channel's notices, decoded by ``decode`` (ValueError, KeyError or TypeError:
    not one of ours, ignored), for the streams of one kind (``stream``)."""

    def __init__(self, dsn: str, channel: str, decode: Callable[[str], T], stream: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._decode = decode
        self._stream = stream
        self._subscriptions: dict[Subscription[T], Callable[[T], bool] | None] = {}

    @property
    def listener(self) -> Listener:
        return Listener.shared(self._dsn)

    @property
    def listening(self) -> bool:
        return self.listener.listening

    async def ensure_listening(self) -> None:
        await self.listener.ensure_listening()

    @asynccontextmanager
    async def subscribe(
        self, accepts: Callable[[T], bool] | None = None
    ) -> AsyncIterator[Subscription[T]]:
        """Queue every committed notice ``accepts`` lets in (None: all) from now on (the
        LISTEN is up when this yields, or the subscription is marked to resynchronise)
        until the block exits."""
        sub: Subscription[T] = Subscription(self._stream, limits.buffer_limit())
        self._subscriptions[sub] = accepts
        try:
            async with self.listener.channel(self._channel, self._notified, self._gap):
                yield sub
        finally:
            del self._subscriptions[sub]

    def _gap(self) -> None:
        for sub in self._subscriptions:
            sub.mark_resync()

    def _notified(self, payload: str) -> None:
        try:
            notice = self._decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable %s notification ignored", self._stream)
            return
        for sub, accepts in self._subscriptions.items():
            if accepts is None or accepts(notice):
                sub.add(notice)
