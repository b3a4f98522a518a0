"""Idempotency keys: the first request with a key runs, later ones with the same key get its answer again.

Each key is one document in `cmdb_asso_idempotency`, claimed by inserting it (the `_id` is unique, so of many
concurrent requests exactly one claims it, in any number of processes), completed with the answer, and
removed by a TTL index after the retention period. Before a create writes, the ids it reserved are recorded
in the key's document, so that a retry after an ambiguous failure (a crash, an unknown commit result) can
tell whether the first attempt's link exists and answer with its id.

Times this module reasons about are stored as numbers (epoch seconds): the embedded server reads a datetime
written by `$set` back as a string. `created_at` (a datetime, written once by the insert) serves the TTL
index only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from cmdb_asso.clock import utc_now
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import link_oid
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.indexes import create_indexes

IDEMPOTENCY = "cmdb_asso_idempotency"
_POLL_SECONDS = 0.02


# Set by the idempotency layer around an operation: storage calls it with the ids a create reserved and the
# table it writes first, before its first write.
Reservation = Callable[[list[int], str], Awaitable[None]]
_RESERVATION: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar("cmdb_asso_reservation", default=None)


# Set by the idempotency layer while a request runs again after its key was taken over: the link ids every
# write of the earlier attempt reserved (a link found with one of them was written by that attempt).
_EARLIER: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("cmdb_asso_earlier", default=frozenset())


def earlier_attempt_ids() -> frozenset[int]:
    """The link ids an earlier, interrupted attempt of the current request reserved (empty: none)."""
    return _EARLIER.get()


@contextlib.contextmanager
def earlier_attempt(ids: frozenset[int]) -> Iterator[None]:
    """Within the block, links with these ids count as written by the current request's earlier attempt."""
    token = _EARLIER.set(ids)
    try:
        yield
    finally:
        _EARLIER.reset(token)


def current_reservation() -> Reservation | None:
    """Where creates in the current context report the ids they reserve, if anywhere."""
    return _RESERVATION.get()


@contextlib.contextmanager
def reservations_to(record: Reservation) -> Iterator[None]:
    """Within the block, creates report the link ids they reserve to `record` before writing."""
    token = _RESERVATION.set(record)
    try:
        yield
    finally:
        _RESERVATION.reset(token)


async def report_reservation(link_ids: list[int], table: str) -> None:
    """Called by a create before its first write: hands its ids to the idempotency key, if any."""
    record = _RESERVATION.get()
    if record is not None:
        await record(link_ids, table)


@dataclass(frozen=True)
class Claim:
    """What claiming a key found: it is ours to run (`reserved` says what an earlier, interrupted holder
    had reserved), an answer to replay, a key used for another body, or a holder still working."""

    outcome: Literal["run", "replay", "mismatch", "busy"]
    answer: dict[str, Any] | None = None
    reserved: dict[str, Any] | None = None
    # Raised at every take-over: what a holder writes for the key changes nothing once its epoch is stale.
    epoch: int = 0


class IdempotencyStore:
    """Claims, completes and releases idempotency keys."""

    def __init__(self, mongo: MongoConnection, retention_seconds: float) -> None:
        self.mongo = mongo
        self.retention_seconds = retention_seconds
        self._indexed = False

    async def _ensure_index(self) -> None:
        if not self._indexed:
            ttl = IndexModel(
                [("created_at", ASCENDING)], name="cmdb_asso_ttl", expireAfterSeconds=int(self.retention_seconds)
            )
            await create_indexes(self.mongo.db[IDEMPOTENCY], [ttl])
            self._indexed = True

    async def claim(self, key: str, fingerprint: str, *, wait_seconds: float, stale_seconds: float) -> Claim:
        """Claim `key` for a request whose body has `fingerprint`. While another holder runs it, wait for its
        answer up to `wait_seconds`; a holder silent for `stale_seconds` (its process died) is taken over."""
        await self._ensure_index()
        collection = self.mongo.db[IDEMPOTENCY]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        with translate_errors(write=True):
            while True:
                now = time.time()
                try:
                    await collection.insert_one(
                        {
                            "_id": key,
                            "fingerprint": fingerprint,
                            "state": "running",
                            "created_at": utc_now(),
                            "created_ts": now,
                            "claimed_ts": now,
                            "epoch": 1,
                        }
                    )
                    return Claim("run", epoch=1)
                except DuplicateKeyError:
                    pass
                held = await collection.find_one({"_id": key})
                if held is None:
                    continue  # released between our insert and our read
                created = _number(held.get("created_ts"))
                if created is None or created < now - self.retention_seconds:
                    # Past retention (the TTL monitor runs only now and then, and not on every store).
                    await collection.delete_one({"_id": key, "created_ts": held.get("created_ts")})
                    continue
                if held.get("fingerprint") != fingerprint:
                    return Claim("mismatch")
                if held.get("state") == "done":
                    return Claim("replay", held.get("answer"))
                claimed = _number(held.get("claimed_ts")) or 0.0
                if claimed < now - stale_seconds:
                    epoch = held.get("epoch")
                    taken = await collection.update_one(
                        {"_id": key, "state": "running", "claimed_ts": held.get("claimed_ts"), **_at_epoch(epoch)},
                        {"$set": {"claimed_ts": now}, "$inc": {"epoch": 1}},
                    )
                    if taken.modified_count:
                        return Claim("run", reserved=held.get("reserved"), epoch=(epoch or 0) + 1)
                    continue
                if loop.time() >= deadline:
                    return Claim("busy")
                await asyncio.sleep(_POLL_SECONDS)

    async def reserve(self, key: str, epoch: int, link_ids: list[int], table: str) -> None:
        """Record the ids a create of `key` reserved, and the table it writes first, before it writes: the last
        write's ids (a create-one's answer) and, in `every`, those of all its writes (a create-many's)."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].update_one(
                {"_id": key, **_at_epoch(epoch)},
                {
                    "$set": {"reserved.ids": link_ids, "reserved.table": table},
                    "$push": {"reserved.every": {"$each": link_ids}},
                },
            )

    async def link_written(self, reserved: dict[str, Any]) -> bool:
        """Whether the first link an interrupted create reserved exists (in the table it writes first)."""
        ids, table = reserved.get("ids"), reserved.get("table")
        if not isinstance(ids, list) or not ids or not isinstance(table, str):
            return False
        with translate_errors(write=False):
            collection = self.mongo.db[table]
            # On the embedded server, which indexes no `id`, by the `_id` this service gives a link there.
            if self.mongo.embedded and await collection.find_one({"_id": link_oid(ids[0])}, {"_id": 1}) is not None:
                return True
            return await collection.find_one({"id": ids[0]}, {"_id": 1}) is not None

    async def abandon(self, key: str, epoch: int) -> None:
        """The holder failed ambiguously after reserving ids: let the next retry take the key over at once."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].update_one(
                {"_id": key, "state": "running", **_at_epoch(epoch)}, {"$set": {"claimed_ts": 0}}
            )

    async def complete(self, key: str, epoch: int, answer: dict[str, Any]) -> None:
        """Record the answer to replay for `key`, unless a later holder took the key over."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].update_one(
                {"_id": key, "state": "running", **_at_epoch(epoch)}, {"$set": {"state": "done", "answer": answer}}
            )

    async def release(self, key: str, epoch: int) -> None:
        """Forget `key` (its request failed in a way a retry should run again), unless a later holder took it."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].delete_one({"_id": key, "state": "running", **_at_epoch(epoch)})


def _at_epoch(epoch: Any) -> dict[str, Any]:
    """A filter for a key document still held at `epoch` (keys claimed before epochs existed have none)."""
    return {"epoch": epoch} if isinstance(epoch, int) and epoch else {"epoch": {"$exists": False}}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
