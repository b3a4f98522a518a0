"""Id sequences in `cc_idgenerator`, reserved in blocks so that most creates cost no command for their id.

bk-cmdb's id generator can be configured (`cc_System {_id: "configadmin"}`, `config.id_generator`): a `step`
greater than 1 makes every sequence advance by that step, so that environments with different initial ids
never hand out the same id (bk-cmdb #8139), and `init_id.inst_asst` raises the link sequence once. Both are
honoured here as bk-cmdb honours them (`NextSequences` in its storage layer).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cmdb_asso.errors import StoreWriteUnavailable
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.tables import ID_GENERATOR, INST_ASST_SEQUENCE, SYSTEM

log = structlog.get_logger(__name__)

CONFIG_ADMIN_ID = "configadmin"
# bk-cmdb's id generator types, by the sequence each one raises.
_INIT_ID_TYPES = {INST_ASST_SEQUENCE: "inst_asst"}


async def id_generator_config(mongo: MongoConnection) -> dict[str, Any]:
    """bk-cmdb's `id_generator` settings, or {} when none are stored (then the step is 1)."""
    with translate_errors(write=False):
        doc = await mongo.db[SYSTEM].find_one({"_id": CONFIG_ADMIN_ID}, {"config": 1})
    raw = doc.get("config") if doc else None
    if not isinstance(raw, str):
        return {}
    try:
        config = json.loads(raw)
    except ValueError:
        log.warning("config_admin_unreadable", detail="cc_System configadmin.config is not JSON; id step 1")
        return {}
    generator = config.get("id_generator") if isinstance(config, dict) else None
    return generator if isinstance(generator, dict) else {}


def _step_of(generator: dict[str, Any]) -> int:
    step = generator.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
        log.warning("id_generator_step_invalid", step=step, detail="using 1, as bk-cmdb refuses such a config")
        return 1
    return step


class IdAllocator:
    """Hands out ids unique across every process sharing the database; gaps are allowed."""

    def __init__(self, mongo: MongoConnection, block_size: int) -> None:
        self._mongo = mongo
        self._block_size = block_size
        self._pools: dict[str, deque[int]] = {}  # name -> the ids of the reserved block not handed out yet
        self._locks: dict[str, asyncio.Lock] = {}
        self._step: int | None = None
        self.reserved: dict[str, int] = {}

    async def step(self) -> int:
        """bk-cmdb's id step, read once per process."""
        if self._step is None:
            self._step = _step_of(await id_generator_config(self._mongo))
        return self._step

    async def take(self, name: str, count: int = 1) -> list[int]:
        """Return `count` fresh ids of sequence `name`."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            pool = self._pools.get(name)
            if pool is None or len(pool) < count:
                # What is left of the old block is given up: ids may have gaps, never repeats.
                size = max(count, self._block_size)
                step = await self.step()
                last = await self._reserve(name, size, step)
                pool = deque(last - (size - 1 - index) * step for index in range(size))
                self._pools[name] = pool
            return [pool.popleft() for _ in range(count)]

    async def apply_initial_ids(self) -> None:
        """Raise the link sequence to bk-cmdb's configured `init_id.inst_asst` (once; never lowers it)."""
        initial = (await id_generator_config(self._mongo)).get("init_id")
        if not isinstance(initial, dict):
            return
        for sequence, kind in _INIT_ID_TYPES.items():
            value = initial.get(kind)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                continue
            collection = self._mongo.db[ID_GENERATOR]
            with translate_errors(write=True):
                try:
                    await collection.insert_one({"_id": sequence, "SequenceID": value})
                except DuplicateKeyError:
                    await collection.update_one(
                        {"_id": sequence, "SequenceID": {"$lt": value}}, {"$set": {"SequenceID": value}}
                    )
            log.info("id_sequence_initialised", sequence=sequence, init_id=value)

    async def _reserve(self, name: str, size: int, step: int) -> int:
        now = datetime.now(UTC).replace(tzinfo=None)
        update = {
            "$inc": {"SequenceID": size * step},
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
                if doc is None:  # the store answered without applying the update (a full disk, seen here)
                    log.error("id_counter_not_updated", sequence=name, detail="no ids reserved: is the disk full?")
                    raise StoreWriteUnavailable()
                self.reserved[name] = self.reserved.get(name, 0) + size
                return int(doc["SequenceID"])
        raise RuntimeError(f"could not reserve ids of sequence {name}")
