"""The indexes every instance association table carries, created idempotently and remembered per process."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.failures import translate_errors

log = structlog.get_logger(__name__)

# Our own fields, carried only by links whose definition constrains them, so that the store itself refuses
# a second link (section 5's race-free rules); bk-cmdb ignores unknown fields.
SRC_GUARD = "cmdb_asso_src_guard"  # "<bk_obj_asst_id>:<bk_inst_id>" on 1:1 links
DST_GUARD = "cmdb_asso_dst_guard"  # "<bk_obj_asst_id>:<bk_asst_inst_id>" on 1:1 and 1:n links
# The field a delete marks the links it claimed with (its journal token), so that concurrent deletes of one
# link never both count it, audit it and archive it; and when it claimed them.
CLAIM = "cmdb_asso_deleting"
CLAIMED_AT = "cmdb_asso_deleting_at"

UNIQUE_LINK_KEYS = (("bk_inst_id", ASCENDING), ("bk_asst_inst_id", ASCENDING), ("bk_obj_asst_id", ASCENDING))
UNIQUE_ID_INDEX = "bkcc_unique_id"
UNIQUE_LINK_INDEX = "bkcc_unique_bkInstID_bkAsstInstID_bkObjAsstID"
SRC_GUARD_INDEX = "cmdb_asso_unique_src_guard"
DST_GUARD_INDEX = "cmdb_asso_unique_dst_guard"
CLAIM_INDEX = "cmdb_asso_claim"


def inst_asst_indexes() -> list[IndexModel]:
    """The contract's five indexes, exactly as bk-cmdb defines them (`background: true` included: bk-cmdb's
    index sync drops and rebuilds a same-named index whose spec differs), plus the two guard indexes and a sparse
    one on the delete claim, which recovery looks for in every table (only links being deleted carry it)."""
    return [
        IndexModel(
            [("bk_obj_id", ASCENDING), ("bk_inst_id", ASCENDING)], name="bkcc_idx_bkObjId_bkInstID", background=True
        ),
        IndexModel([("id", ASCENDING)], name=UNIQUE_ID_INDEX, unique=True, background=True),
        IndexModel(
            [("bk_asst_obj_id", ASCENDING), ("bk_asst_inst_id", ASCENDING)],
            name="bkcc_idx_bkAsstObjId_bkAsstInstId",
            background=True,
        ),
        IndexModel([("bk_asst_id", ASCENDING)], name="bkcc_idx_bkAsstID", background=True),
        IndexModel(
            list(UNIQUE_LINK_KEYS),
            name=UNIQUE_LINK_INDEX,
            unique=True,
            background=True,
        ),
        IndexModel([(SRC_GUARD, ASCENDING)], name=SRC_GUARD_INDEX, unique=True, sparse=True),
        IndexModel([(DST_GUARD, ASCENDING)], name=DST_GUARD_INDEX, unique=True, sparse=True),
        IndexModel([(CLAIM, ASCENDING)], name=CLAIM_INDEX, sparse=True),
    ]


def embedded_extra_indexes() -> list[IndexModel]:
    """Single-field indexes for the embedded server only: its planner uses one single-field index per query and
    never a compound one, so without these every rule check scans the table. MongoDB does not need them (the
    compound indexes above serve the same queries) and does not get them."""
    return [
        IndexModel([("bk_inst_id", ASCENDING)], name="cmdb_asso_embedded_bkInstID"),
        IndexModel([("bk_asst_inst_id", ASCENDING)], name="cmdb_asso_embedded_bkAsstInstID"),
        IndexModel([("bk_obj_asst_id", ASCENDING)], name="cmdb_asso_embedded_bkObjAsstID"),
    ]


def table_indexes(mongo: MongoConnection) -> list[IndexModel]:
    """The indexes an instance association table gets on this deployment. The embedded server silently
    never builds an index on a field named `id` (EMBEDDED.md), so none is asked of it, again and again."""
    if not mongo.embedded:
        return inst_asst_indexes()
    return [model for model in inst_asst_indexes() + embedded_extra_indexes() if _key(model.document) != _ID_KEY]


# What a server answers when an index cannot be built as asked, and the service carries on without it:
# DuplicateKey (a unique index over existing duplicates), CannotCreateIndex, IndexOptionsConflict (an index
# on the same keys with other options, or under another name), IndexKeySpecsConflict (the same name with
# other keys), Unauthorized (a user without the createIndex privilege).
TOLERATED_INDEX_CODES = frozenset({11000, 67, 85, 86, 13})
_NAMESPACE_NOT_FOUND = 26
_ID_KEY = (("id", ASCENDING),)


@dataclass(frozen=True, slots=True)
class TableIndexes:
    """Which of the indexes the rules rely on really exist on a table, by key pattern and `unique`, whatever
    their names (a database bk-cmdb built may name them otherwise, or lack them)."""

    table: str
    unique_link: bool
    src_guard: bool
    dst_guard: bool
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every unique index the rules rely on exists."""
        return self.unique_link and self.src_guard and self.dst_guard


def _key(spec: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((str(name), direction) for name, direction in dict(spec["key"]).items())


def _is_unique_over(spec: dict[str, Any], keys: tuple[tuple[str, Any], ...]) -> bool:
    # A partial index does not refuse what it leaves out, so it guards nothing; sparse ones are fine for the
    # guard fields, which only constrained links carry.
    return bool(spec.get("unique")) and "partialFilterExpression" not in spec and _key(spec) == keys


def _present(model: IndexModel, existing: list[dict[str, Any]]) -> bool:
    wanted = model.document
    keys = _key(wanted)
    if wanted.get("unique"):
        return any(_is_unique_over(spec, keys) for spec in existing)
    return any(_key(spec) == keys for spec in existing)


def describe(table: str, existing: list[dict[str, Any]], wanted: list[IndexModel]) -> TableIndexes:
    """What `existing` (listIndexes' answer) gives the rules on `table`."""

    def unique_on(*fields: tuple[str, Any]) -> bool:
        return any(_is_unique_over(spec, tuple(fields)) for spec in existing)

    return TableIndexes(
        table=table,
        unique_link=unique_on(*UNIQUE_LINK_KEYS),
        src_guard=unique_on((SRC_GUARD, ASCENDING)),
        dst_guard=unique_on((DST_GUARD, ASCENDING)),
        missing=tuple(str(model.document["name"]) for model in wanted if not _present(model, existing)),
    )


async def list_indexes(collection: Any) -> list[dict[str, Any]]:
    """The indexes of a collection as listIndexes answers them; none for a collection that does not exist."""
    try:
        cursor = collection.list_indexes()
        if inspect.isawaitable(cursor):  # pymongo's async list_indexes is a coroutine, motor's is not
            cursor = await cursor
        return [dict(spec) for spec in await cursor.to_list(None)]
    except OperationFailure as exc:
        if exc.code == _NAMESPACE_NOT_FOUND:
            return []
        raise


async def prepare_table(mongo: MongoConnection, table: str) -> TableIndexes:
    """Read `table`'s indexes, create the missing ones in one command, and say which unique ones exist.

    An index the server will not build (see TOLERATED_INDEX_CODES) is logged once, naming the table and the
    index, and left out; the service carries on with what exists.
    """
    collection = mongo.db[table]
    wanted = table_indexes(mongo)
    with translate_errors(write=False):
        existing = await list_indexes(collection)
    missing = [model for model in wanted if not _present(model, existing)]
    if missing:
        await _create_tolerantly(collection, missing)
        with translate_errors(write=False):
            existing = await list_indexes(collection)
    state = describe(table, existing, wanted)
    if not state.complete:
        log.warning(
            "unique_indexes_missing",
            table=table,
            unique_link=state.unique_link,
            src_guard=state.src_guard,
            dst_guard=state.dst_guard,
            detail="links of this table are checked by reading first; races are not refused by the store",
        )
    return state


async def _create_tolerantly(collection: Any, models: list[IndexModel]) -> None:
    with translate_errors(write=True):
        try:
            await collection.create_indexes(models)
            return
        except OperationFailure as exc:
            if exc.code not in TOLERATED_INDEX_CODES:
                raise
            if len(models) == 1 or exc.code == 13:
                _log_refused(collection.name, models, exc)
                return
        # One index of the batch was refused, and the server may have built none of them: one at a time, so
        # that only the refused ones are left out.
        for model in models:
            try:
                await collection.create_indexes([model])
            except OperationFailure as exc:
                if exc.code not in TOLERATED_INDEX_CODES:
                    raise
                _log_refused(collection.name, [model], exc)


def _log_refused(table: str, models: list[IndexModel], exc: OperationFailure) -> None:
    for model in models:
        log.warning(
            "index_not_created",
            table=table,
            index=model.document["name"],
            code=exc.code,
            reason=(exc.details or {}).get("codeName", ""),
        )


class IndexManager:
    """Knows, per table, which unique indexes really exist; prepares tables in the background, never inside a
    request (a table is read-first until its preparation has run). A table is prepared once a link was written
    to it, never because a request named it: a refused request, a dry run or a read creates nothing."""

    def __init__(self, mongo: MongoConnection) -> None:
        self._mongo = mongo
        self._states: dict[str, TableIndexes] = {}
        self._tasks: dict[str, asyncio.Task[TableIndexes | None]] = {}

    def state(self, table: str) -> TableIndexes | None:
        """What is known of `table`'s indexes; None until it was prepared."""
        return self._states.get(table)

    def is_ready(self, table: str) -> bool:
        """Whether `table` was prepared by this process (and so exists)."""
        return table in self._states

    def schedule(self, table: str) -> None:
        """Prepare `table` in the background, once at a time."""
        if table not in self._tasks or self._tasks[table].done():
            self._tasks[table] = asyncio.get_running_loop().create_task(self._prepare_quietly(table))

    async def prepare(self, table: str) -> TableIndexes:
        """Prepare `table` now (start-up, init-db, the periodic check) and remember what it has."""
        state = await prepare_table(self._mongo, table)
        self._states[table] = state
        return state

    async def prepare_all(self, tables: list[str], *, concurrency: int = 4) -> list[TableIndexes]:
        """Prepare many tables, a few at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one(table: str) -> TableIndexes:
            async with gate:
                return await self.prepare(table)

        return list(await asyncio.gather(*(one(table) for table in tables)))

    async def _prepare_quietly(self, table: str) -> TableIndexes | None:
        try:
            return await self.prepare(table)
        except Exception as exc:  # a background task: log, and let the next request schedule it again
            log.warning("table_preparation_failed", table=table, error=type(exc).__name__)
            return None

    async def wait_idle(self) -> None:
        """Wait for the preparations scheduled so far."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancel preparations still running."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def create_indexes(collection: Any, models: list[IndexModel]) -> None:
    """Create these indexes (of our own collections) where missing, tolerating what a server refuses."""
    with translate_errors(write=False):
        existing = await list_indexes(collection)
    missing = [model for model in models if not _present(model, existing)]
    if missing:
        await _create_tolerantly(collection, missing)
