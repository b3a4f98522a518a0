"""The link event chain (CONTRACT-reads 15): our own collections of events, the feeder's lease and resume
tokens, and the change streams over every `cc_InstAsst_*` table that the events come from."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from bson import ObjectId, Timestamp
from pymongo import IndexModel
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import link_key, plain_document
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.indexes import create_indexes
from cmdb_asso.storage.journal import JOURNAL
from cmdb_asso.storage.lease import Lease, LeaseLost
from cmdb_asso.storage.tables import DEL_ARCHIVE

log = structlog.get_logger(__name__)

CHAIN = "cmdb_asso_InstAsstWatchChain"
TOKENS = "cmdb_asso_WatchToken"
CHAIN_SEQUENCE = CHAIN
TOKEN_ID = "cc_InstAsst"
LEASE_ID = "lease"
LINK_TABLE_PREFIX = "cc_InstAsst_"
# What a server answers a change stream it cannot serve: a standalone mongod (40573), or no support at all.
_NO_CHANGE_STREAMS = frozenset({40573, 40324, 115})
UNAUTHORIZED = 13
# What a server answers a resume token it no longer has (ChangeStreamHistoryLost, ChangeStreamFatalError,
# CappedPositionLost), and the texts older servers answer it with.
_TOKEN_LOST_CODES = frozenset({286, 280, 136})
_TOKEN_LOST_TEXTS = ("resume point may no longer be in the oplog", "resume token was not found")
# How far back a feeder whose token is lost starts again (as bk-cmdb does).
RESTART_BACK_SECONDS = 60
# The embedded server's token before its first recorded change: a table new to the feed is read from there.
EMBEDDED_START = {"_data": "nx:0"}
CLOSE_SECONDS = 1.0
# The embedded server's idle polling: from this often, doubling up to this often (seconds).
IDLE_POLL_SECONDS = (0.05, 1.0)
BUSY_ROUND_SECONDS = 0.1
# The most changes read from one stream in a round.
DRAIN_LIMIT = 200


@dataclass(frozen=True, slots=True)
class LinkChange:
    """One insert into or delete from a link table, as a change stream reported it."""

    operation: str  # "insert" or "delete"
    table: str
    oid: str  # the document's `_id`, as text
    document: dict[str, Any] | None  # the inserted document (inserts only)
    sec: int
    inc: int
    # Commit order across streams, where the server numbers its changes (the embedded server); else 0.
    order: int = 0
    # The stream's resume token after this change (None for a link read from a table new to the feed).
    token: Any = None


class WatchStore:
    """The event chain and its token document, in the main database or the configured one."""

    def __init__(self, mongo: MongoConnection, retention_seconds: float, database: str = "") -> None:
        self.mongo = mongo
        self.retention_seconds = retention_seconds
        self.db = mongo.client[database] if database else mongo.db
        # Exactly the ids each append needs, nothing held back: events get ids in the order they are stored,
        # whichever process holds the lease (a block kept from an earlier lease would hand out older ids).
        self.ids = IdAllocator(mongo, block_size=1)

    async def prepare(self) -> None:
        """The chain's indexes: order, cursor lookup, one event per (link, operation), sub-resource, expiry."""
        expire = int(self.retention_seconds + 86400)
        await create_indexes(
            self.db[CHAIN],
            [
                IndexModel([("id", 1)], name="id", unique=True),
                IndexModel([("cursor", 1)], name="cursor", unique=True),
                IndexModel([("inst_id", 1), ("type", 1)], name="inst_id_type", unique=True),
                IndexModel([("bk_sub_resource", 1)], name="bk_sub_resource"),
                IndexModel([("time", 1)], name="time", expireAfterSeconds=expire),
            ],
        )
        if self.mongo.embedded:
            # A delete's detail is looked up by its copy's `_id` (`archived`); bk-cmdb keeps its archive to seven
            # days on MongoDB (a TTL index) and indexes nothing else there, but the embedded store keeps it all.
            await create_indexes(self.mongo.db[DEL_ARCHIVE], [IndexModel([("oid", 1)], name="cmdb_asso_oid")])

    async def probe(self) -> bool:
        """Whether the server serves change streams: a stream opened and closed on a link table (or on the
        chain, before any link table exists)."""
        tables = await self.link_tables()
        with translate_errors(write=False):
            try:
                stream = await _opened(self.mongo.db[tables[0] if tables else CHAIN].watch(max_await_time_ms=1))
                await stream.try_next()  # motor opens its stream only when first asked for a change
            except OperationFailure as exc:
                if exc.code in _NO_CHANGE_STREAMS:
                    return False
                if exc.code == UNAUTHORIZED:  # a user without the changeStream privilege: say so, once
                    log.error("watch_not_authorized", detail="the database user may not open change streams")
                    return False
                raise
            except (NotImplementedError, TypeError):  # an in-memory stand-in for MongoDB has no `watch`
                return False
            await _closed(stream)
        return True

    async def link_tables(self) -> list[str]:
        """Every `cc_InstAsst_*` table of the database, of every supplier."""
        with translate_errors(write=False):
            names = await self.mongo.db.list_collection_names()
        return sorted(name for name in names if name.startswith(LINK_TABLE_PREFIX))

    def _recent(self) -> dict[str, Any]:
        return {"time": {"$gte": datetime.now(UTC) - timedelta(seconds=self.retention_seconds)}}

    async def append(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store events in order, each with the next id; an event whose (link, operation) is stored already is
        dropped by the unique index. The rows stored."""
        if not rows:
            return []
        ids = await self.ids.take(CHAIN_SEQUENCE, len(rows))
        numbered = [{**row, "id": event_id} for row, event_id in zip(rows, ids, strict=True)]
        refused: set[int] = set()
        try:
            with translate_errors(write=True):
                await self.db[CHAIN].insert_many(numbered, ordered=False)
        except BulkWriteError as exc:  # only duplicates get past translate_errors: a (link, operation) seen before
            refused = {int(error["index"]) for error in exc.details.get("writeErrors", [])}
        return [row for index, row in enumerate(numbered) if index not in refused]

    async def after(self, after_id: int, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Events after `after_id` matching `query`, inside the retention, oldest first."""
        with translate_errors(write=False):
            cursor = self.db[CHAIN].find({**query, **self._recent(), "id": {"$gt": after_id}}, {"_id": 0})
            return list(await cursor.sort("id", 1).limit(limit).to_list(None))

    async def since(self, sec: int, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Events of the second `sec` or later matching `query`, inside the retention, oldest first."""
        with translate_errors(write=False):
            cursor = self.db[CHAIN].find({**query, **self._recent(), "cluster_time.sec": {"$gte": sec}}, {"_id": 0})
            return list(await cursor.sort("id", 1).limit(limit).to_list(None))

    async def event_id(self, cursor: str) -> int | None:
        """The id of the event with this cursor, inside the retention."""
        with translate_errors(write=False):
            doc = await self.db[CHAIN].find_one({"cursor": cursor, **self._recent()}, {"_id": 0, "id": 1})
        return int(doc["id"]) if doc else None

    async def earliest_id(self) -> int | None:
        """The id of the oldest event inside the retention."""
        with translate_errors(write=False):
            docs = await self.db[CHAIN].find(self._recent(), {"_id": 0, "id": 1}).sort("id", 1).limit(1).to_list(1)
        return int(docs[0]["id"]) if docs else None

    async def newest(self) -> tuple[int, str] | None:
        """The id and cursor of the newest event ever stored (kept after its row expired)."""
        with translate_errors(write=False):
            doc = await self.db[TOKENS].find_one({"_id": TOKEN_ID}, {"newest_id": 1, "newest_cursor": 1})
        if not doc or doc.get("newest_cursor") is None:
            return None
        return int(doc["newest_id"]), str(doc["newest_cursor"])

    async def reread(self, table: str) -> None:
        """Mark a table whose stream stopped delivering to be read whole when the feed opens it again (from its
        saved token still, so that the removals its stream did record are not lost)."""
        with translate_errors(write=True):
            await self.db[TOKENS].update_one({"_id": TOKEN_ID}, {"$set": {f"reread.{table}": True}})

    async def tables_to_reread(self) -> set[str]:
        """The tables marked to be read whole, until a feeder has read them."""
        with translate_errors(write=False):
            doc = await self.db[TOKENS].find_one({"_id": TOKEN_ID}, {"reread": 1})
        marked = doc.get("reread") if doc else None
        return set(marked) if isinstance(marked, dict) else set()

    async def resume_tokens(self) -> dict[str, Any]:
        """The feeder's saved resume tokens, by stream (a table, or `*` for the database)."""
        with translate_errors(write=False):
            doc = await self.db[TOKENS].find_one({"_id": TOKEN_ID}, {"tokens": 1})
        tokens = doc.get("tokens") if doc else None
        return dict(tokens) if isinstance(tokens, dict) else {}

    async def save_progress(
        self, tokens: dict[str, Any], newest: dict[str, Any] | None, epoch: int, reread: Iterable[str] = ()
    ) -> None:
        """Save the streams' resume tokens and, when events were stored, the newest one's id and cursor, for the
        feeder of lease `epoch`, with the tables marked for reading that were read (`reread`); LeaseLost (nothing
        saved) once a feeder of a later epoch has saved."""
        update: dict[str, Any] = {f"tokens.{stream}": token for stream, token in tokens.items()}
        if newest is not None:
            update |= {"newest_id": newest["id"], "newest_cursor": newest["cursor"]}
        fenced = {"_id": TOKEN_ID, "$or": [{"epoch": {"$lte": epoch}}, {"epoch": {"$exists": False}}]}
        change: dict[str, Any] = {"$set": {**update, "epoch": epoch}}
        if done := {f"reread.{table}": "" for table in reread}:
            change["$unset"] = done
        try:
            with translate_errors(write=True):
                await self.db[TOKENS].update_one(fenced, change, upsert=True)
        except DuplicateKeyError as exc:  # the document exists with a later epoch
            raise LeaseLost(LEASE_ID) from exc

    def lease(self, owner: str, seconds: float) -> Lease:
        """The feeder's lease, as `owner` holds it."""
        return Lease(self.db[TOKENS], LEASE_ID, owner, seconds)

    async def creates_in_flight(self, link_ids: set[int]) -> set[int]:
        """Those of these links that an open create entry of the journal names: a write without a transaction
        that may still be undone (the journal holds only writes in flight, so it is read whole)."""
        with translate_errors(write=False):
            # Whole entries: a projection into an array of documents is not served alike by every store.
            entries = await self.mongo.db[JOURNAL].find({"op": "create"}).to_list(None)
        named = {item["link"].get("id") for entry in entries for item in entry.get("links", []) if "link" in item}
        return {link_id for link_id in link_ids if link_id in named}

    async def present(self, links: list[tuple[str, dict[str, Any]]]) -> set[int]:
        """The ids of those of these links (table, document) that their table holds now; each looked up by its
        unique triple, which every store indexes (the embedded server never indexes `id`)."""

        async def one(table: str, doc: dict[str, Any]) -> int | None:
            found = await self.mongo.db[table].find_one(link_key(doc), {"_id": 0, "id": 1})
            return int(doc["id"]) if found else None

        with translate_errors(write=False):
            found = await asyncio.gather(*(one(table, doc) for table, doc in links))
        return {link_id for link_id in found if link_id is not None}

    async def rows_present(self, rows: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of these rows (table, `_id` as text) that their table holds now: one read by `_id` per table (an
        `_id` that is no ObjectId is not looked for here)."""
        by_table: dict[str, list[ObjectId]] = {}
        for table, oid in rows:
            if ObjectId.is_valid(oid):
                by_table.setdefault(table, []).append(ObjectId(oid))

        async def one(table: str, oids: list[ObjectId]) -> set[tuple[str, str]]:
            found = await self.mongo.db[table].find({"_id": {"$in": oids}}, {"_id": 1}).to_list(None)
            return {(table, str(doc["_id"])) for doc in found}

        with translate_errors(write=False):
            found = await asyncio.gather(*(one(table, oids) for table, oids in sorted(by_table.items())))
        return set().union(*found)

    async def archived(self, oid: str, table: str) -> dict[str, Any] | None:
        """The `cc_DelArchive` detail of a document removed from `table`."""
        with translate_errors(write=False):
            doc = await self.mongo.db[DEL_ARCHIVE].find_one({"oid": oid, "coll": table}, {"_id": 0, "detail": 1})
        detail = doc.get("detail") if doc else None
        return plain_document(detail) if isinstance(detail, dict) else None


class StreamStalled(Exception):
    """A link table holds a document its change stream never reported, through `stall_seconds` of rounds that
    read the stream to its end: the stream stopped delivering (a server restart), and the feed must start again
    from its saved tokens."""


class ChangeSource:
    """Change streams over every link table: one for the database on MongoDB; on the embedded server, which
    serves one collection per stream, one per table, found again every `rescan_seconds`. Every `stall_seconds / 3`,
    after a round, each table's newest document is compared with what its stream reported: one that stays
    unreported for `stall_seconds` while its stream is read to its end raises StreamStalled. Tables in `reread`
    are read whole when their streams open (which still start from their saved tokens)."""

    def __init__(
        self,
        store: WatchStore,
        *,
        per_table: bool,
        rescan_seconds: float = 30.0,
        fields: tuple[str, ...] = (),
        stall_seconds: float = 30.0,
        reread: set[str] | None = None,
    ) -> None:
        self.store = store
        self.reread = set(reread or ())
        self._reread_done: set[str] = set()
        self.per_table = per_table
        self.rescan_seconds = rescan_seconds
        self.stall_seconds = stall_seconds
        # Per table, the newest document `_id` known to the feed: the newest when its stream opened (or the feed
        # first looked), raised by every insert its stream reports. ObjectIds grow with their writing time (and
        # on the embedded server, where this service keys a link's `_id` by its id, with the ids handed out).
        self._known: dict[str, ObjectId] = {}
        # Per table, a newer document than its stream reported, and since when (monotonic) it is unreported:
        # judged by this process's clock, not by the writer's (whose clock may differ) nor by a slow round.
        self._suspects: dict[str, tuple[ObjectId, float]] = {}
        # How far the tables' newest change is ahead of what the streams reported (seconds; 0 when caught up).
        self.behind_seconds = 0.0
        # The fields of an inserted document the feed reads (all when empty): only those are converted.
        self.fields = fields
        self._streams: dict[str, Any] = {}
        self._counter: tuple[int, int] = (0, 0)  # the embedded server's times: (second, events in it)
        self._scanned = False
        # Tables new to the feed whose links already there are being read, a page a round: the `_id` read up to
        # (None: not begun). Their tokens are not saved before the read ends, so a restart reads them again.
        self._backfill: dict[str, ObjectId | None] = {}
        # Changes read but not yet given out, because a stream cut at DRAIN_LIMIT may still hold older ones;
        # and per stream, the resume token after the last change given out.
        self._held: list[LinkChange] = []
        self._given: dict[str, Any] = {}

    async def batches(self, tokens: dict[str, Any]) -> AsyncGenerator[tuple[list[LinkChange], dict[str, Any]], None]:
        """Forever: the changes of one round over every stream, in commit order, and every stream's resume
        token after them (an empty list when the streams are idle)."""
        scanned = 0.0
        checked = time.monotonic()
        idle = 0.0
        self._given = dict(tokens)
        try:
            while True:
                changes: list[LinkChange] = []
                if time.monotonic() - scanned > self.rescan_seconds or not self._streams:
                    await self._open_missing(tokens)
                    scanned = time.monotonic()
                changes += await self._backfill_round()
                cut: list[int] = []  # per stream read up to DRAIN_LIMIT: the last change's order
                for name, stream in list(self._streams.items()):
                    drained = await self._drain(name, stream, tokens)
                    if len(drained) >= DRAIN_LIMIT:
                        cut.append(drained[-1].order)
                        self._suspects.pop(name, None)  # its stream has more to say: not judged this round
                    changes += drained
                changes = _reported_once(changes)
                self._note_reported(changes)
                if time.monotonic() - checked > self.stall_seconds / 3:  # after the streams were read
                    await self._check_stalls()
                    checked = time.monotonic()
                changes, round_tokens = self._in_commit_order(changes, cut)
                yield changes, round_tokens
                # MongoDB holds an idle getMore for max_await_time_ms; the embedded server answers at once, so
                # an idle feed there polls less and less often (up to once a second). A busy feed reads a round
                # at most every BUSY_ROUND_SECONDS: under load, rounds of many changes, not many of few.
                idle = 0.0 if changes else min(max(idle * 2, IDLE_POLL_SECONDS[0]), IDLE_POLL_SECONDS[1])
                if changes:
                    await asyncio.sleep(BUSY_ROUND_SECONDS)
                elif self.per_table:
                    await asyncio.sleep(idle)
        finally:
            for stream in self._streams.values():
                await _closed(stream)
            self._streams.clear()

    def _in_commit_order(self, changes: list[LinkChange], cut: list[int]) -> tuple[list[LinkChange], dict[str, Any]]:
        """The changes that can go out now, in commit order, and every stream's resume token after them.

        The embedded server numbers its changes across a database's collections: their commit order. A stream
        whose round stopped at DRAIN_LIMIT may hold changes older than what another stream gave; so whatever is
        newer than the oldest such cut is held for the next round, and no stream's saved token passes a change
        held back (a restart reads it again)."""
        pending = sorted([*self._held, *changes], key=lambda change: change.order)
        horizon = min(cut) if self.per_table and cut else None
        given = [change for change in pending if horizon is None or change.order <= horizon]
        self._held = pending[len(given) :]
        for change in given:
            if change.token is not None:
                self._given[change.table] = change.token
        held_streams = {change.table for change in self._held}
        round_tokens = {
            name: self._given.get(name) if name in held_streams else stream.resume_token
            for name, stream in self._streams.items()
        }
        # A stream without a token yet saves none, nor one whose table is still being read: after a restart its
        # table is then read whole, not from now.
        round_tokens = {
            name: token for name, token in round_tokens.items() if token is not None and name not in self._backfill
        }
        self._given |= round_tokens
        return given, round_tokens

    def _note_reported(self, changes: list[LinkChange]) -> None:
        for change in changes:
            if change.operation == "insert" and ObjectId.is_valid(change.oid):
                oid = ObjectId(change.oid)
                known = self._known.get(change.table)
                if known is None or oid > known:
                    self._known[change.table] = oid

    async def _newest(self, table: str) -> tuple[ObjectId, float] | None:
        """The table's newest document `_id`, and when it was written (seconds since the epoch)."""
        with translate_errors(write=False):
            newest = await self.store.mongo.db[table].find_one({}, {"_id": 1, "create_time": 1}, sort=[("_id", -1)])
        oid = newest.get("_id") if newest else None
        if not isinstance(oid, ObjectId) or newest is None:
            return None
        written = oid.generation_time.timestamp()
        created = newest.get("create_time")
        if not written and isinstance(created, datetime):  # an `_id` keyed by link id carries no time
            written = created.replace(tzinfo=created.tzinfo or UTC).timestamp()
        return oid, written

    async def _check_stalls(self) -> None:
        """Raise StreamStalled where a table's newest document stayed newer than anything its stream reported
        for `stall_seconds`, while the stream was read to its end (documents carry their writing time in an
        ObjectId `_id`, which gives how far behind the feed is)."""
        now, clock = time.time(), time.monotonic()
        behind = 0.0
        for table in await self.store.link_tables():
            if (table if self.per_table else "*") not in self._streams:
                continue  # not followed yet: a table new to the feed is read whole when its stream opens
            newest = await self._newest(table)
            known = self._known.get(table)
            if newest is None or known is None:  # first sight of the table (one stream for the database)
                if newest is not None:
                    self._known[table] = newest[0]
                continue
            oid, written = newest
            if oid <= known:
                self._suspects.pop(table, None)
                continue
            behind = max(behind, now - written)
            suspect = self._suspects.get(table)
            if suspect is None or suspect[0] <= known:  # a new one: judged at a later check
                self._suspects[table] = (oid, clock)
            elif clock - suspect[1] > self.stall_seconds:
                self.behind_seconds = behind
                raise StreamStalled(table)
        self.behind_seconds = behind

    async def _open_missing(self, tokens: dict[str, Any]) -> None:
        """Open streams for the tables that have none; a table that appeared after the feed started has its
        links already there read too, as inserts (the embedded server records a table's changes only once a
        stream is open on it, so its first links would be missed; the feed drops the ones it has an event for)."""
        names = await self.store.link_tables() if self.per_table else ["*"]
        first_scan = not self._scanned
        self._scanned = True
        for name in names:
            if name not in self._streams:
                new = name not in tokens and (bool(tokens) or not first_scan)
                # A table new to the feed, on the embedded server: from the first change it recorded (its writers
                # have it recorded before their first link, see `track_changes`).
                start = EMBEDDED_START if new and self.per_table else tokens.get(name)
                self._streams[name] = await self._open(name, start)
                if self.per_table and (newest := await self._newest(name)) is not None:
                    self._known.setdefault(name, newest[0])
                # New to a feed that ran before (now, or before a restart): the very first start begins at now.
                # Its links already there are read too: those its stream never recorded (written before it was).
                if new or name in self.reread:
                    self._backfill[name] = None

    async def _backfill_round(self) -> list[LinkChange]:
        """The next page (DRAIN_LIMIT links, in `_id` order) of each table being read: memory stays bounded
        whatever the table's size."""
        changes: list[LinkChange] = []
        for table, after in sorted(self._backfill.items()):
            query = {} if after is None else {"_id": {"$gt": after}}
            with translate_errors(write=False):
                cursor = self.store.mongo.db[table].find(query).sort("_id", 1).limit(DRAIN_LIMIT)
                docs = await cursor.to_list(None)
            for doc in docs:
                sec, inc = self._time(None)
                changes.append(LinkChange("insert", table, str(doc.get("_id")), self._document(doc), sec, inc))
            if len(docs) < DRAIN_LIMIT:
                del self._backfill[table]
                if table in self.reread:
                    self._reread_done.add(table)
            else:
                self._backfill[table] = docs[-1]["_id"]
        return changes

    def reread_done(self) -> set[str]:
        """The tables of `reread` read whole since the last call."""
        done, self._reread_done = self._reread_done, set()
        self.reread -= done
        return done

    async def _open(self, name: str, token: Any, *, back: bool = False) -> Any:
        """A stream on one table (or `*`, the database) after `token`, from now without one, or a minute back
        (`back`: the token was lost)."""
        pipeline: list[dict[str, Any]] = [{"$match": {"operationType": {"$in": ["insert", "delete"]}}}]
        if name == "*":
            pipeline[0]["$match"]["ns.coll"] = {"$regex": f"^{LINK_TABLE_PREFIX}"}
        target = self.store.mongo.db if name == "*" else self.store.mongo.db[name]
        options: dict[str, Any] = {"max_await_time_ms": 500, "batch_size": 2000}
        if back:
            options["start_at_operation_time"] = Timestamp(int(time.time()) - RESTART_BACK_SECONDS, 0)
        elif token:
            options["start_after"] = token
        try:
            with translate_errors(write=False):
                return await _opened(target.watch(pipeline, **options))
        except Exception as exc:
            if back or not _token_lost(exc.__cause__ or exc):
                raise
        return await self._lost(name)

    async def _lost(self, name: str) -> Any:
        log.error("watch_resume_token_lost", stream=name, detail="restarting 60 s back: events in the gap are lost")
        return await self._open(name, None, back=True)

    async def _drain(self, name: str, stream: Any, tokens: dict[str, Any]) -> list[LinkChange]:
        changes: list[LinkChange] = []
        try:
            while len(changes) < DRAIN_LIMIT:
                with translate_errors(write=False):
                    change = await stream.try_next()
                if change is None:
                    break
                found = self._change(change)
                if found is not None:
                    changes.append(found)
        except Exception as exc:
            if not _token_lost(exc.__cause__ or exc):
                raise
            await _closed(stream)
            tokens.pop(name, None)
            self._streams[name] = await self._lost(name)
        return changes

    def _change(self, change: dict[str, Any]) -> LinkChange | None:
        operation = change.get("operationType")
        table = str((change.get("ns") or {}).get("coll", ""))
        if operation not in ("insert", "delete") or not table.startswith(LINK_TABLE_PREFIX):
            return None
        key = (change.get("documentKey") or {}).get("_id")
        document = change.get("fullDocument") if operation == "insert" else None
        if isinstance(document, dict):
            document = self._document(document)
        sec, inc = self._time(change.get("clusterTime"))
        token = change.get("_id")
        return LinkChange(str(operation), table, str(key), document, sec, inc, _embedded_row(token), token)

    def _document(self, stored: dict[str, Any]) -> dict[str, Any]:
        if self.fields:
            return plain_document({key: stored[key] for key in self.fields if key in stored})
        return plain_document({key: value for key, value in stored.items() if key != "_id"})

    def _time(self, cluster: Any) -> tuple[int, int]:
        if isinstance(cluster, Timestamp):
            return cluster.time, cluster.inc
        # The embedded server's cluster time is the wall clock: the second, and our own count within it.
        second = int(cluster.replace(tzinfo=UTC).timestamp()) if isinstance(cluster, datetime) else int(time.time())
        count = self._counter[1] + 1 if second == self._counter[0] else 1
        self._counter = (second, count)
        return second, count


def _reported_once(changes: list[LinkChange]) -> list[LinkChange]:
    """The changes without the links read from a table that its stream reported in the same round: the stream's
    report carries the link's place in the commit order."""
    streamed = {(change.table, change.oid) for change in changes if change.token is not None}
    return [change for change in changes if change.token is not None or (change.table, change.oid) not in streamed]


async def track_changes(mongo: MongoConnection, table: str) -> None:
    """Have the embedded server record `table`'s changes from now on: it records a collection's changes only once
    a change stream was opened on it (and keeps doing so after it closed). Nothing to do on MongoDB. Best effort:
    a server that serves no change streams has no feed to miss anything, and a write never fails for this."""
    await mongo.supports_transactions()  # identifies the server
    if not mongo.embedded:
        return
    try:
        stream = await _opened(mongo.db[table].watch(max_await_time_ms=1))
        try:
            await stream.try_next()  # motor opens its stream only when first asked for a change
        finally:
            await _closed(stream)
    except (PyMongoError, NotImplementedError, TypeError) as exc:
        log.info("change_tracking_not_started", table=table, error=type(exc).__name__)


def _embedded_row(token: Any) -> int:
    data = token.get("_data") if isinstance(token, dict) else None
    if isinstance(data, str) and data.startswith("nx:") and data[3:].isdigit():
        return int(data[3:])
    return 0


async def _opened(stream: Any) -> Any:
    return await stream if inspect.isawaitable(stream) else stream


async def _closed(stream: Any) -> None:
    # Bounded: a stream cancelled in the middle of a getMore may never finish closing (its cursor is killed by
    # the driver's own cleanup, or expires on the server).
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            closed = stream.close()
            if inspect.isawaitable(closed):
                await closed
    except (PyMongoError, TimeoutError):
        pass


def _token_lost(exc: BaseException) -> bool:
    if not isinstance(exc, OperationFailure):
        return False
    return exc.code in _TOKEN_LOST_CODES or any(text in str(exc) for text in _TOKEN_LOST_TEXTS)


__all__ = ["ChangeSource", "LinkChange", "WatchStore", "track_changes"]
