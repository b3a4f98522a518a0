"""Id sequences in `cc_idgenerator`, reserved in blocks so that most creates cost no command for their id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cmdb_asso.storage.client import Mongo, translate_errors
from cmdb_asso.storage.tables import ID_GENERATOR


class IdAllocator:
    """Hands out ids unique across every process sharing the database; gaps are allowed."""

    def __init__(self, mongo: Mongo, block_size: int) -> None:
        self._mongo = mongo
        self._block_size = block_size
        self._pools: dict[str, list[int]] = {}  # name -> [next, end) of the reserved block
        self._locks: dict[str, asyncio.Lock] = {}
        self.reserved: dict[str, int] = {}

    async def take(self, name: str, count: int = 1) -> list[int]:
        """Return `count` fresh ids of sequence `name`."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            pool = self._pools.get(name)
            if pool is None or pool[1] - pool[0] < count:
                size = max(count, self._block_size)
                last = await self._reserve(name, size)
                pool = [last - size + 1, last + 1]
                self._pools[name] = pool
            first = pool[0]
            pool[0] += count
            return list(range(first, first + count))

    async def _reserve(self, name: str, size: int) -> int:
        now = datetime.now(UTC).replace(tzinfo=None)
        update = {
            "$inc": {"SequenceID": size},
            "$setOnInsert": {"create_time": now},
            "$set": {"last_time": now},
        }
        with translate_errors(write=True):
            for _attempt in range(3):
                try:
                    doc = await self._mongo.db[ID_GENERATOR].find_one_and_update(
                        {"_id": name}, update, upsert=True, return_document=ReturnDocument.AFTER
                    )
                except DuplicateKeyError:  # two processes upserted the first block at once: read again
                    continue
                self.reserved[name] = self.reserved.get(name, 0) + size
                return int(doc["SequenceID"])
        raise RuntimeError(f"could not reserve ids of sequence {name}")
