"""Reads that run together: one `$unionWith` aggregation where the server folds them, else concurrent finds."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo.errors import OperationFailure

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.tables import InstanceTable

log = structlog.get_logger(__name__)

# Reads whose results are small documents ask for them in one batch rather than the server's default of 101.
LARGE_BATCH = 10000
_TAG = "_cmdb_asso_part"
# On nx-27017, reads of at most this many instances go one id at a time (measured: faster than its scan).
ONE_AT_A_TIME_AT_MOST = 32
# "Unrecognized pipeline stage name", "$unionWith is not allowed" (servers older than 4.4).
_UNKNOWN_STAGE_CODES = frozenset({40324, 31000, 40602})


@dataclass(frozen=True, slots=True)
class ReadPart:
    """One find of a folded read: its tag, collection, filter and projection; for a read of instances by id,
    the table and ids, so that it can also be asked one id at a time."""

    tag: str
    collection: str
    query: dict[str, Any]
    projection: dict[str, Any]
    table: InstanceTable | None = None
    ids: tuple[int, ...] = ()

    @classmethod
    def names(cls, tag: str, table: InstanceTable, ids: list[int]) -> ReadPart:
        """The read of the names of these instances."""
        projection = {"_id": 0, table.id_field: 1, table.name_field: 1}
        return cls(tag, table.collection, table.filter_for(ids), projection, table, tuple(ids))

    def one_id_at_a_time(self) -> list[ReadPart]:
        """The same read as one equality find per id (or itself, when it is not a read by ids)."""
        if self.table is None or not 1 < len(self.ids) <= ONE_AT_A_TIME_AT_MOST:
            return [self]
        return [ReadPart(self.tag, self.collection, self.table.filter_for([i]), self.projection) for i in self.ids]


class FoldedReads:
    """Runs several finds as one command where the server can, and remembers when it cannot."""

    def __init__(self, mongo: MongoConnection, *, setting: str = "auto") -> None:
        self.mongo = mongo
        self.setting = setting
        self._unsupported = False

    @property
    def fold(self) -> bool:
        """Whether reads are folded: as set, or (auto) where the server is not nx-27017, which runs
        aggregations without its indexes; decided by what the server says it is, once it has answered."""
        if self._unsupported or self.setting == "off":
            return False
        return self.setting == "on" or not self.mongo.embedded

    async def read(self, parts: list[ReadPart], *, one_id_at_a_time: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Every part's documents, by tag; with `one_id_at_a_time`, on nx-27017 a read of a few instances by
        id goes as one find per id."""
        # Until the server has said what it is, separate finds: they suit every server.
        if self.fold and len(parts) > 1 and self.mongo.identified:
            try:
                with translate_errors(write=False):
                    return await self._read_folded(parts)
            except NotImplementedError:
                # A server (or mock) without $unionWith: separate reads from now on.
                log.info("folded_reads_unsupported", fallback="separate reads")
                self._unsupported = True

        async def one(part: ReadPart) -> list[dict[str, Any]]:
            cursor = self.mongo.db[part.collection].find(part.query, part.projection).batch_size(LARGE_BATCH)
            return list(await cursor.to_list(None))

        if one_id_at_a_time and self.mongo.embedded:
            # nx-27017 answers an `$in` on an indexed field by scanning the table (40 ms at 50,000 instances,
            # against 1 ms for one id): there, a few instances are read one id at a time, together.
            parts = [single for part in parts for single in part.one_id_at_a_time()]
        with translate_errors(write=False):
            results = await asyncio.gather(*(one(part) for part in parts))
        found: dict[str, list[dict[str, Any]]] = {}
        for part, docs in zip(parts, results, strict=True):
            found.setdefault(part.tag, []).extend(docs)
        return found

    async def _read_folded(self, parts: list[ReadPart]) -> dict[str, list[dict[str, Any]]]:
        def stages(part: ReadPart) -> list[dict[str, Any]]:
            return [{"$match": part.query}, {"$project": {**part.projection, _TAG: {"$literal": part.tag}}}]

        pipeline = stages(parts[0])
        pipeline += [{"$unionWith": {"coll": part.collection, "pipeline": stages(part)}} for part in parts[1:]]
        try:
            cursor = self.mongo.db[parts[0].collection].aggregate(pipeline, batchSize=LARGE_BATCH)
            if inspect.isawaitable(cursor):  # pymongo's async aggregate is a coroutine, motor's is not
                cursor = await cursor
            docs = await cursor.to_list(None)
        except OperationFailure as exc:
            # Seen here, before the error is translated: the server does not know the stage.
            if exc.code in _UNKNOWN_STAGE_CODES:
                raise NotImplementedError("$unionWith") from exc
            raise
        found: dict[str, list[dict[str, Any]]] = {part.tag: [] for part in parts}
        for doc in docs:
            found.setdefault(str(doc.pop(_TAG, "")), []).append(doc)
        return found
