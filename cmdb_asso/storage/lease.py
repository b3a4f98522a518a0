"""Leases that need no shared clock, with an epoch that fences out a holder that lost its lease.

A lease is one document: its holder, an epoch (raised at every change of holder) and a heartbeat counter the
holder raises at every renewal. Another process takes the lease only after it has seen the same holder, epoch
and heartbeat for `seconds` of its own monotonic clock (or at once when the holder released it), so hosts whose
wall clocks disagree still agree on who holds it. A holder that was paused (a stopped process, a long pause of
the machine) finds its epoch gone at its next renewal, and every write it fences with `renew` changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import DuplicateKeyError

from cmdb_asso.storage.failures import translate_errors

LEASES = "cmdb_asso_Leases"
# What a holder changes when it renews (`until`: the wall-clock lease of earlier versions, renewed by them).
_WATCHED = ("owner", "epoch", "beat", "until")


class LeaseLost(Exception):
    """Another process took the lease: this holder's epoch is stale, and it must stop writing."""


class Lease:
    """One named lease in `collection`, as seen by one owner."""

    def __init__(
        self,
        collection: Any,
        lease_id: str,
        owner: str,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collection = collection
        self.lease_id = lease_id
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        self.epoch: int | None = None
        # Another holder's (owner, epoch, heartbeat) as last read, and when (this process's clock) it was first read.
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0

    def held_epoch(self) -> int:
        """The epoch this owner holds the lease at (as of its last renewal); LeaseLost when it holds none."""
        if self.epoch is None:
            raise LeaseLost(self.lease_id)
        return self.epoch

    async def hold(self) -> bool:
        """Renew the lease when this owner holds it, else take it when it is free, released, or its holder has
        not renewed it for `seconds`; whether this owner holds it now."""
        if self.epoch is not None:
            try:
                await self.renew()
                return True
            except LeaseLost:
                pass
        with translate_errors(write=True):
            doc = await self.collection.find_one({"_id": self.lease_id})
            if doc is None:
                try:
                    await self.collection.insert_one(
                        {"_id": self.lease_id, "owner": self.owner, "epoch": 1, "beat": 0, "released": False}
                    )
                except DuplicateKeyError:
                    return False  # another process took it first
                self.epoch = 1
                return True
            state = tuple(doc.get(name) for name in _WATCHED)
            if not doc.get("released"):
                now = self.clock()
                if state != self._seen:
                    self._seen, self._seen_at = state, now
                    return False
                if now - self._seen_at < self.seconds:
                    return False
            epoch = (doc.get("epoch") if isinstance(doc.get("epoch"), int) else 0) + 1
            taken = await self.collection.update_one(
                {"_id": self.lease_id, **_unchanged(doc, (*_WATCHED, "released"))},
                {"$set": {"owner": self.owner, "epoch": epoch, "beat": 0, "released": False}},
            )
        if not taken.modified_count:
            return False  # another process took it first
        self.epoch, self._seen = epoch, None
        return True

    async def renew(self) -> None:
        """Raise the heartbeat if this owner still holds the lease at its epoch; LeaseLost otherwise. Every write
        made for the lease is preceded by this check."""
        epoch = self.held_epoch()
        with translate_errors(write=True):
            renewed = await self.collection.update_one(
                # `released` is always present: `$ne` does not match a missing field on every store
                {"_id": self.lease_id, "owner": self.owner, "epoch": epoch, "released": False},
                {"$inc": {"beat": 1}},
            )
        if not renewed.matched_count:
            self.epoch = None
            raise LeaseLost(self.lease_id)

    async def release(self) -> None:
        """Give the lease up (on shutdown), so that another process takes it at once."""
        if self.epoch is None:
            return
        epoch, self.epoch = self.epoch, None
        with translate_errors(write=True):
            await self.collection.update_one(
                {"_id": self.lease_id, "owner": self.owner, "epoch": epoch}, {"$set": {"released": True}}
            )


def _unchanged(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A filter that matches the document only while these fields are as read (a missing one still missing)."""
    return {name: doc.get(name, {"$exists": False}) for name in fields}
