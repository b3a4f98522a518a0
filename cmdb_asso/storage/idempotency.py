"""Idempotency keys: the first request with a key runs, later ones with the same key get its answer again.

Each key is one document in `cmdb_asso_idempotency`, claimed by inserting it (the `_id` is unique, so of many
concurrent requests exactly one claims it, in any number of processes), completed with the answer, and
removed by a TTL index after the retention period.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from cmdb_asso.clock import utc_now
from cmdb_asso.storage.client import Mongo, translate_errors
from cmdb_asso.storage.indexes import create_indexes

IDEMPOTENCY = "cmdb_asso_idempotency"
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Claim:
    """What claiming a key found: it is ours to run, or an answer to replay, or a key used for another body."""

    outcome: Literal["run", "replay", "mismatch", "busy"]
    answer: dict[str, Any] | None = None


class IdempotencyStore:
    """Claims, completes and releases idempotency keys."""

    def __init__(self, mongo: Mongo, retention_seconds: float) -> None:
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
                now = utc_now()
                try:
                    await collection.insert_one(
                        {"_id": key, "fingerprint": fingerprint, "state": "running", "created_at": now}
                    )
                    return Claim("run")
                except DuplicateKeyError:
                    pass
                held = await collection.find_one({"_id": key})
                if held is None:
                    continue  # released between our insert and our read
                created = held.get("created_at")
                if not isinstance(created, datetime) or created < now - timedelta(seconds=self.retention_seconds):
                    # Past retention (the TTL monitor runs only now and then, and not on every store).
                    await collection.delete_one({"_id": key, "created_at": created})
                    continue
                if held.get("fingerprint") != fingerprint:
                    return Claim("mismatch")
                if held.get("state") == "done":
                    return Claim("replay", held.get("answer"))
                if created < now - timedelta(seconds=stale_seconds):
                    taken = await collection.update_one(
                        {"_id": key, "state": "running", "created_at": created}, {"$set": {"created_at": now}}
                    )
                    if taken.modified_count:
                        return Claim("run")
                    continue
                if loop.time() >= deadline:
                    return Claim("busy")
                await asyncio.sleep(_POLL_SECONDS)

    async def complete(self, key: str, answer: dict[str, Any]) -> None:
        """Record the answer to replay for `key`."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].update_one({"_id": key}, {"$set": {"state": "done", "answer": answer}})

    async def release(self, key: str) -> None:
        """Forget `key` (its request failed in a way a retry should run again)."""
        with translate_errors(write=True):
            await self.mongo.db[IDEMPOTENCY].delete_one({"_id": key, "state": "running"})
