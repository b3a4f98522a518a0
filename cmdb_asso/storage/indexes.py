"""The indexes every instance association table carries, created idempotently and remembered per process."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from cmdb_asso.storage.client import Mongo, translate_errors

log = structlog.get_logger(__name__)

# Our own fields, carried only by links whose definition constrains them, so that the store itself refuses
# a second link (section 5's race-free rules); bk-cmdb ignores unknown fields.
SRC_GUARD = "cmdb_asso_src_guard"  # "<bk_obj_asst_id>:<bk_inst_id>" on 1:1 links
DST_GUARD = "cmdb_asso_dst_guard"  # "<bk_obj_asst_id>:<bk_asst_inst_id>" on 1:1 and 1:n links

UNIQUE_ID_INDEX = "bkcc_unique_id"
UNIQUE_LINK_INDEX = "bkcc_unique_bkInstID_bkAsstInstID_bkObjAsstID"
SRC_GUARD_INDEX = "cmdb_asso_unique_src_guard"
DST_GUARD_INDEX = "cmdb_asso_unique_dst_guard"


def inst_asst_indexes() -> list[IndexModel]:
    """The contract's five indexes plus the two guard indexes, with their names and options."""
    return [
        IndexModel([("bk_obj_id", ASCENDING), ("bk_inst_id", ASCENDING)], name="bkcc_idx_bkObjId_bkInstID"),
        IndexModel([("id", ASCENDING)], name=UNIQUE_ID_INDEX, unique=True),
        IndexModel(
            [("bk_asst_obj_id", ASCENDING), ("bk_asst_inst_id", ASCENDING)],
            name="bkcc_idx_bkAsstObjId_bkAsstInstId",
        ),
        IndexModel([("bk_asst_id", ASCENDING)], name="bkcc_idx_bkAsstID"),
        IndexModel(
            [("bk_inst_id", ASCENDING), ("bk_asst_inst_id", ASCENDING), ("bk_obj_asst_id", ASCENDING)],
            name=UNIQUE_LINK_INDEX,
            unique=True,
        ),
        IndexModel([(SRC_GUARD, ASCENDING)], name=SRC_GUARD_INDEX, unique=True, sparse=True),
        IndexModel([(DST_GUARD, ASCENDING)], name=DST_GUARD_INDEX, unique=True, sparse=True),
    ]


def embedded_extra_indexes() -> list[IndexModel]:
    """Single-field indexes for the embedded server only: its planner uses one single-field index per query and
    never a compound one, so without these every rule check scans the table. MongoDB does not need them (the
    compound indexes above serve the same queries) and does not get them."""
    return [
        IndexModel([("bk_inst_id", ASCENDING)], name="cmdb_asso_embedded_bkInstID"),
        IndexModel([("bk_asst_inst_id", ASCENDING)], name="cmdb_asso_embedded_bkAsstInstID"),
        IndexModel([("id", ASCENDING)], name="cmdb_asso_embedded_id"),
        IndexModel([("bk_obj_asst_id", ASCENDING)], name="cmdb_asso_embedded_bkObjAsstID"),
    ]


def table_indexes(mongo: Mongo) -> list[IndexModel]:
    """The indexes an instance association table gets on this deployment."""
    return inst_asst_indexes() + (embedded_extra_indexes() if mongo.embedded else [])


class IndexManager:
    """Makes sure each instance association table has its indexes before the first write to it."""

    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._ready: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def is_ready(self, table: str) -> bool:
        """Whether this process already made sure of `table`'s indexes (and so of the table)."""
        return table in self._ready

    async def ensure(self, table: str) -> None:
        """Create `table`'s indexes unless this process already did."""
        if table in self._ready:
            return
        lock = self._locks.setdefault(table, asyncio.Lock())
        async with lock:
            if table in self._ready:
                return
            await create_indexes(self._mongo.db[table], table_indexes(self._mongo))
            self._ready.add(table)


async def create_indexes(collection: Any, models: list[IndexModel]) -> None:
    """Create each index; one that exists with other options is logged and kept as it is."""
    with translate_errors(write=True):
        for model in models:
            try:
                await collection.create_indexes([model])
            except OperationFailure as exc:
                if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
                    raise
                log.warning("index_conflict", collection=collection.name, index=model.document["name"])
