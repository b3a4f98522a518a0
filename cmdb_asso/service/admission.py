"""Bounds on the heavy work one process takes on at once, so that no few callers take the store from the rest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cmdb_asso.errors import Busy

# How long a request waits for a place before it is answered 503 (a burst of page loads is queued, a flood
# is not), and how many may wait at once per place.
QUEUE_SECONDS = 1.0
WAITING_PER_PLACE = 4


class Gate:
    """At most `limit` requests of one kind of heavy work at once in this process (0: no bound). One more waits
    up to QUEUE_SECONDS for a place (at most WAITING_PER_PLACE per place wait), else is answered Busy (503 and
    Retry-After)."""

    def __init__(self, name: str, limit: int, *, queue_seconds: float = QUEUE_SECONDS) -> None:
        self.name = name
        self.limit = limit
        self.queue_seconds = queue_seconds
        self.in_flight = 0
        self.waiting = 0
        self.refused = 0
        self._places = asyncio.Semaphore(limit) if limit else None

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one place for the block, or raise Busy when none frees up in time."""
        if self._places is None:
            yield
            return
        if self._places.locked():
            await self._wait_for_place()
        else:
            await self._places.acquire()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._places.release()

    async def _wait_for_place(self) -> None:
        assert self._places is not None
        if self.waiting >= self.limit * WAITING_PER_PLACE:
            self.refused += 1
            raise Busy(self.name)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_seconds):
                await self._places.acquire()
        except TimeoutError:
            self.refused += 1
            raise Busy(self.name) from None
        finally:
            self.waiting -= 1
