"""Link events for integrators (CONTRACT-reads 14 and 15): the feed that turns link-table changes into exactly
one event per link change, and `resource_watch`'s three modes over the events it stored."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from cachetools import TTLCache

from cmdb_asso.errors import (
    BodyInvalid,
    CmdbError,
    EventNodeMissing,
    ParamEmpty,
    PermissionDenied,
    StoreReadUnavailable,
    WatchUnavailable,
)
from cmdb_asso.inputs import is_int64
from cmdb_asso.service.admission import Gate
from cmdb_asso.service.context import Caller, time_budget
from cmdb_asso.service.permission import Authorizer, watch_permission_payload
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.commands import counted_as
from cmdb_asso.storage.lease import LeaseLost
from cmdb_asso.storage.tables import inst_asst_table, owner_filter
from cmdb_asso.storage.watch import ChangeSource, LinkChange, StreamStalled, WatchStore

log = structlog.get_logger(__name__)

RESOURCE = "inst_asst"
EVENT_STEP = 200
POLL_SECONDS = 0.25
EVENT_TYPES = frozenset({"create", "update", "delete"})
_KIND = {"insert": "create", "delete": "delete"}
# bk-cmdb's no-event cursor (W/cursor.go), and the stale spelling its source comment gives, accepted too.
NO_EVENT_CURSOR = base64.b64encode(b"1\r1\r5ea6d3f394c1f5d986e9bd86\rnoEvent\r1\r1\r").decode("ascii")
_NO_EVENT_SPELLINGS = frozenset({NO_EVENT_CURSOR, "MQ0xDTVlYTZkM2YzOTRjMWY1ZDk4NmU5YmQ4Ng1ub0V2ZW50DTENMQ=="})
# The keys bk-cmdb writes in a link document: an event's detail holds these and nothing of ours.
DETAIL_KEYS = ("bk_asst_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_biz_id", "bk_inst_id", "bk_obj_asst_id",
               "bk_obj_id", "bk_supplier_account", "id")  # fmt: skip
# How long the feeder waits for the archive copy of a deleted link that a writer without transactions may
# still be writing.
ARCHIVE_WAIT_SECONDS = 2.0
# How long the feeder waits for writes without a transaction to finish (or be undone) before it judges their
# inserts; past it, what the tables hold decides (and recovery settles a writer that died the same way).
SETTLE_WAIT_SECONDS = 15.0
SETTLE_POLL_SECONDS = 0.05


def encode_cursor(link_id: int, operation: str, sec: int, inc: int) -> str:
    """bk-cmdb's cursor of a link event: base64 of version, type 13, link id, operation, time, link id."""
    fields = ("1", "13", str(link_id), operation, str(sec), str(inc), str(link_id))
    return base64.b64encode("\r".join(fields).encode("ascii")).decode("ascii")


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """A decoded watch request: which events, which detail fields, and where to start."""

    event_types: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    start_from: int = 0
    cursor: str = ""
    sub_resource: str = ""


class EventFeed:
    """The feeder: while it holds the database's lease, it reads the link tables' change streams and stores
    one event per (link, operation), then the streams' resume tokens. Other processes only serve reads."""

    def __init__(
        self,
        store: WatchStore,
        *,
        lease_seconds: float = 15.0,
        rescan_seconds: float = 30.0,
        stall_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.rescan_seconds = rescan_seconds
        self.stall_seconds = stall_seconds
        self.restarts = 0
        self._source: ChangeSource | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = store.lease(self.owner, lease_seconds)
        self.stored = asyncio.Condition()
        # Set once this process feeds: its streams are open.
        self.live = asyncio.Event()
        self.dropped_deletes = 0
        self.events_stored = 0
        # Rows (oid, table) that writes without a transaction inserted and undid: neither their insert nor their
        # removal is an event. Kept a while, as the removal may come in a later batch than the insert.
        self.undone: TTLCache[tuple[str, str], bool] = TTLCache(100_000, 600)
        # The links whose creation this feeder stored lately (bounded): their other copy is read for nothing.
        self.created: TTLCache[int, bool] = TTLCache(100_000, 600)
        # Seconds between the newest stored event's change and its storing.
        self.storing_lag_seconds = 0.0

    @property
    def behind_seconds(self) -> float:
        """How far the link tables' newest change is ahead of what the streams reported (0: caught up)."""
        return self._source.behind_seconds if self._source is not None else 0.0

    @property
    def lag_seconds(self) -> float:
        """How far behind the tables the feed is: the larger of the last storing's delay and what the streams
        have not reported yet."""
        return max(self.storing_lag_seconds, self.behind_seconds)

    async def run(self) -> None:
        """Forever: take the lease when it is free, feed while it is held, and try again after a failure."""
        with counted_as("watch"):
            await self._run()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    if await self.lease.hold():
                        log.info("watch_feeder_started", owner=self.owner, epoch=self.lease.epoch)
                        await self._feed()
                except CmdbError as exc:
                    log.warning("watch_feeder_paused", error=type(exc).__name__)
                except LeaseLost:
                    log.warning("watch_feeder_lease_lost", owner=self.owner)
                except StreamStalled as exc:
                    self.restarts += 1
                    if self.store.mongo.embedded:  # its stream may have missed changes: the table is read whole
                        with contextlib.suppress(CmdbError):
                            await self.store.reread(str(exc))
                    log.error(
                        "watch_stream_stalled",
                        table=str(exc),
                        behind_seconds=round(self.behind_seconds, 1),
                        detail="its stream reported nothing of it: the feed starts again from its tokens",
                    )
                finally:
                    self.live.clear()
                await asyncio.sleep(self.lease_seconds / 3)
        finally:
            with contextlib.suppress(CmdbError):
                await self.lease.release()

    async def _feed(self) -> None:
        epoch = self.lease.held_epoch()
        # The tokens document takes this epoch before anything is read: a feeder that held the lease before can
        # no longer save its progress over this one's.
        await self.store.save_progress({}, None, epoch)
        saved = await self.store.resume_tokens()
        reread = await self.store.tables_to_reread()
        source = ChangeSource(
            # The embedded server serves one collection per stream (known once it has said what it is).
            self.store,
            per_table=self.store.mongo.embedded,
            rescan_seconds=self.rescan_seconds,
            fields=DETAIL_KEYS,
            stall_seconds=self.stall_seconds,
            reread=reread,
        )
        self._source = source
        # Closed on every way out (lease lost, failure, shutdown): its streams' cursors are killed at once.
        async with contextlib.aclosing(source.batches(dict(saved))) as batches:
            await self._store_batches(batches, saved)

    async def _store_batches(
        self, batches: AsyncIterator[tuple[list[LinkChange], dict[str, Any]]], saved: dict[str, Any]
    ) -> None:
        renewed = saved_at = time.monotonic()
        async for changes, tokens in batches:
            self.live.set()
            rows = await self._rows(changes) if changes else []
            if rows:  # the fence: a feeder whose lease was taken while it read stores nothing
                await self.lease.renew()
                renewed = time.monotonic()
            stored = await self.store.append(rows)
            # Tokens are saved after every batch with events, at once for a stream opened without one (a
            # successor would otherwise open it at its own start, past what changed meanwhile), and now and
            # then while idle (a restart then replays little, and the unique index drops what it replays).
            opened = any(stream not in saved for stream in tokens)
            reread = self._source.reread_done() if self._source is not None else set()
            idle_save = tokens != saved and time.monotonic() - saved_at > self.lease_seconds / 3
            if changes or opened or reread or idle_save:
                newest = stored[-1] if stored else None
                await self.store.save_progress(tokens, newest, self.lease.held_epoch(), reread)
                saved, saved_at = tokens, time.monotonic()
            if stored:
                self.events_stored += len(stored)
                self.created.update((int(row["inst_id"]), True) for row in stored if row["type"] == "create")
                self.storing_lag_seconds = max(0.0, time.time() - stored[-1]["cluster_time"]["sec"])
                async with self.stored:
                    self.stored.notify_all()
            if time.monotonic() - renewed > self.lease_seconds / 3:
                await self.lease.renew()
                renewed = time.monotonic()

    async def _rows(self, changes: list[LinkChange]) -> list[dict[str, Any]]:
        """Events for these changes: the first of each (link, operation) in the batch; the unique index drops
        the ones stored before (the other table's half, a replay). An insert that a write without a transaction
        undid gives no event."""
        # A link is written to both its models' tables, and the two copies may come in different rounds: the
        # second copy of a creation this feeder stored is neither looked up nor stored again.
        changes = [change for change in changes if change.operation == "delete" or not self._announced(change)]
        for undone_row in await self._undone([change for change in changes if change.operation == "insert"]):
            self.undone[undone_row] = True
        # The removal of an undone row is no delete of a link either: no event, and no wait for its archive copy.
        deletes = [c for c in changes if c.operation == "delete" and (c.oid, c.table) not in self.undone]
        archived = await self._archived(deletes)
        # A link is deleted once it is gone from every table: a removal while its other copy is still readable
        # (a delete under way, or one that recovery finishes later) waits for that copy's removal to be announced.
        for key in await self._still_readable(archived):
            archived.pop(key)
        rows: list[dict[str, Any]] = []
        seen: set[tuple[int, str]] = set()
        now = datetime.now(UTC)
        for change in changes:
            document = change.document if change.operation == "insert" else archived.get((change.oid, change.table))
            link_id = document.get("id") if document else None
            if document is None or not is_int64(link_id) or link_id <= 0 or (change.oid, change.table) in self.undone:
                continue
            kind = _KIND[change.operation]
            if (link_id, kind) in seen:
                continue
            seen.add((link_id, kind))
            detail = {key: document[key] for key in DETAIL_KEYS if key in document}
            if kind == "create":
                detail["_id"] = change.oid
            rows.append({
                "cluster_time": {"sec": change.sec, "inc": change.inc}, "time": now, "oid": change.oid,
                "type": kind, "cursor": encode_cursor(link_id, change.operation, change.sec, change.inc),
                "inst_id": link_id,
                "bk_sub_resource": [str(document.get("bk_obj_id", "")), str(document.get("bk_asst_obj_id", ""))],
                "bk_supplier_account": str(document.get("bk_supplier_account", "")),
                "detail": dict(sorted(detail.items())),
            })  # fmt: skip
        return rows

    def _announced(self, change: LinkChange) -> bool:
        """Whether this inserted document is a link whose creation this feeder stored lately (from its other copy)."""
        link_id = (change.document or {}).get("id")
        return is_int64(link_id) and int(link_id) in self.created

    async def _undone(self, inserts: list[LinkChange]) -> set[tuple[str, str]]:
        """The inserts (oid, table) that are not links: rows of a write without a transaction that it undid (a
        batch whose other row a unique index refused). Such a write names its links in an open journal entry
        until it is whole, so the feeder waits (bounded) for those entries to close, then looks each inserted link
        up: one gone without an archive copy was undone. With transactions an undone write is never seen."""
        if not inserts or await self.store.mongo.supports_transactions():
            return set()
        by_id = {int(c.document["id"]): c for c in inserts if c.document and is_int64(c.document.get("id"))}
        deadline = time.monotonic() + SETTLE_WAIT_SECONDS
        for _ in range(int(SETTLE_WAIT_SECONDS / SETTLE_POLL_SECONDS)):
            if not await self.store.creates_in_flight(set(by_id)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(SETTLE_POLL_SECONDS)
        # By `_id`, one read per table; what that misses (an undone row, or an `_id` that is no ObjectId) is looked
        # up again by the link's keys.
        rows = await self.store.rows_present([(c.table, c.oid) for c in by_id.values()])
        unseen = {link_id: c for link_id, c in by_id.items() if (c.table, c.oid) not in rows}
        present = await self.store.present([(c.table, c.document or {}) for c in unseen.values()]) if unseen else set()
        gone = [change for link_id, change in unseen.items() if link_id not in present]
        # A link created and then deleted for real is gone too: its delete left an archive copy.
        copies = await asyncio.gather(*(self.store.archived(change.oid, change.table) for change in gone))
        return {(change.oid, change.table) for change, copy in zip(gone, copies, strict=True) if copy is None}

    async def _still_readable(self, archived: dict[tuple[str, str], dict[str, Any]]) -> set[tuple[str, str]]:
        """The removals (oid, table) whose link still has a copy in its other table."""
        others: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for (oid, table), detail in archived.items():
            supplier = str(detail.get("bk_supplier_account", ""))
            for obj_id in {detail.get("bk_obj_id"), detail.get("bk_asst_obj_id")}:
                other = inst_asst_table(str(obj_id), supplier)
                if other != table:
                    others[(oid, table)] = (other, detail)
        present = await self.store.present(list(others.values()))
        return {key for key, (_, detail) in others.items() if detail.get("id") in present}

    async def _archived(self, deletes: list[LinkChange]) -> dict[tuple[str, str], dict[str, Any]]:
        """The archive copies of these deletes, waiting (once for the whole batch) for a writer that may still be
        writing them; a delete without one is dropped, logged and counted."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        pending = list(dict.fromkeys((change.oid, change.table) for change in deletes))
        deadline = time.monotonic() + ARCHIVE_WAIT_SECONDS
        while pending:
            details = await asyncio.gather(*(self.store.archived(oid, table) for oid, table in pending))
            found |= {key: detail for key, detail in zip(pending, details, strict=True) if detail is not None}
            pending = [key for key in pending if key not in found]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for oid, table in pending:
            self.dropped_deletes += 1
            log.warning("watch_delete_without_archive", table=table, oid=oid)
        return found


class NewestEvent:
    """The id of the newest stored event as this process last read it: one reader for all the process's long
    polls (a small read by `_id`, every POLL_SECONDS while any waits, and at once when this process's feeder
    stored something), so that N waiting callers cost the store what one does."""

    def __init__(self, store: WatchStore, feed: EventFeed | None, read_seconds: float) -> None:
        self.store = store
        self.feed = feed
        self.read_seconds = read_seconds
        self.id: int | None = None
        self.reads = 0
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._reader: asyncio.Task[None] | None = None

    async def wait(self, seconds: float) -> None:
        """Until the newest id changes or `seconds` pass."""
        self._waiting += 1
        if self._reader is None or self._reader.done():
            # A context of its own: the request that starts the reader ends before it, and its time budget (which
            # a nested budget can only shorten) must not bound the reader's later reads.
            self._reader = asyncio.get_running_loop().create_task(
                self._read_while_waited(), context=contextvars.Context()
            )
        try:
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1

    async def _read_while_waited(self) -> None:
        while self._waiting:
            try:
                with time_budget(self.read_seconds):
                    newest = await self.store.newest()
                self.reads += 1
            except CmdbError as exc:  # the waiters answer at their deadline; the next round reads again
                log.warning("watch_newest_read_failed", error=type(exc).__name__)
                newest = None
            if newest is not None and newest[0] != self.id:
                self.id = newest[0]
                async with self._changed:
                    self._changed.notify_all()
            await self._pause()

    async def _pause(self) -> None:
        if self.feed is None:
            await asyncio.sleep(POLL_SECONDS)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS), self.feed.stored:
                await self.feed.stored.wait()

    async def close(self) -> None:
        """Stop the reader."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


class WatchService:
    """`resource_watch` for `inst_asst`: with a cursor (a long poll), from a start time, or from now."""

    def __init__(
        self,
        store: WatchStore,
        links: AssociationStore,
        authorizer: Authorizer,
        *,
        enabled: str = "auto",
        long_poll_seconds: float = 20.0,
        read_seconds: float = 10.0,
        feed: EventFeed | None = None,
        clock: Callable[[], float] = time.time,
        stopping: asyncio.Event | None = None,
        long_polls: Gate | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self.authorizer = authorizer
        self.enabled = enabled
        self.long_poll_seconds = long_poll_seconds
        self.read_seconds = read_seconds
        self.feed = feed
        self.clock = clock
        # Set when the process is shutting down: long polls answer at once rather than being cut.
        self.stopping = stopping or asyncio.Event()
        # None until the server has said whether it serves change streams.
        self.available: bool | None = None if enabled != "off" else False
        self.long_polls = long_polls or Gate("long polls", 0)
        self.newest = NewestEvent(store, feed, read_seconds)

    async def probe(self) -> bool | None:
        """Ask the server (once it answers) whether it serves change streams; `on` refuses to go without."""
        if self.available is None:
            with time_budget(self.read_seconds):
                self.available = await self.store.probe()
            if self.available:
                await self.store.prepare()
            log.info("watch_availability", available=self.available, setting=self.enabled)
        if self.enabled == "on" and self.available is False:
            raise RuntimeError("watch.enabled is on, but the database does not support change streams")
        return self.available

    async def watch(self, caller: Caller, request: WatchRequest) -> dict[str, Any]:
        """Events after a cursor or a start time, or the cursor to follow from now (CONTRACT-reads 14)."""
        if self.available is False:
            raise WatchUnavailable()
        if self.available is None:
            raise StoreReadUnavailable()
        with time_budget(self.read_seconds):
            await self._check(caller, request)
        query = self._query(request, None if await self.authorizer.sees_all_suppliers(caller) else caller)
        if request.cursor:
            return await self._after_cursor(request, query)
        with time_budget(self.read_seconds):
            if request.start_from:
                return await self._since(request, query)
            # From now: never a past event, only the cursor to follow.
            return await self._nothing_new(await self.store.newest())

    async def _check(self, caller: Caller, request: WatchRequest) -> None:
        model = None
        if request.sub_resource:
            models = await self.links.find_models([request.sub_resource], caller.supplier_account)
            model = models.get(request.sub_resource)
            if model is None:
                raise ParamEmpty("bk_filter.bk_sub_resource")
        if not await self.authorizer.can_watch(caller, request.sub_resource or None):
            named = (model.row_id, model.name or request.sub_resource) if model else None
            raise PermissionDenied(permission=watch_permission_payload(named))
        if any(kind not in EVENT_TYPES for kind in request.event_types):
            raise BodyInvalid("bk_event_types")
        if request.start_from and request.cursor:
            raise BodyInvalid("bk_cursor")

    @staticmethod
    def _query(request: WatchRequest, caller: Caller | None) -> dict[str, Any]:
        """The events `request` asks for; of the caller's supplier and the shared one, unless `caller` is None
        (a caller granted every supplier's events: the supplier a header names grants nothing)."""
        query: dict[str, Any] = {}
        if request.event_types:
            query["type"] = {"$in": sorted(set(request.event_types))}
        if request.sub_resource:
            query["bk_sub_resource"] = request.sub_resource
        if caller is not None:
            query |= owner_filter(caller.supplier_account)
        return query

    async def _after_cursor(self, request: WatchRequest, query: dict[str, Any]) -> dict[str, Any]:
        with time_budget(self.read_seconds):
            start = await self._start_of(request.cursor)
        deadline = time.monotonic() + self.long_poll_seconds
        async with self.long_polls.admit():
            # The events are read again only when the newest event changed since the last read.
            read_at: int | str | None = "never"
            while True:
                if self.newest.id != read_at:
                    read_at = self.newest.id
                    with time_budget(self.read_seconds):
                        events = await self.store.after(start, query, EVENT_STEP)
                    if events:
                        return _answer(events, request.fields)
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    break
                await self.newest.wait(min(POLL_SECONDS, left))
        with time_budget(self.read_seconds):
            # The newest event first, then one last look: an event stored in between is then answered, never
            # passed over by the cursor handed out (events are stored before the newest is recorded).
            newest = await self.store.newest()
            events = await self.store.after(start, query, EVENT_STEP)
            if events:
                return _answer(events, request.fields)
            return await self._nothing_new(newest)

    async def _start_of(self, cursor: str) -> int:
        if cursor in _NO_EVENT_SPELLINGS:
            earliest = await self.store.earliest_id()
            if earliest is not None:
                return earliest - 1
            newest = await self.store.newest()
            return newest[0] if newest else 0
        found = await self.store.event_id(cursor)
        if found is not None:
            return found
        newest = await self.store.newest()
        if newest is not None and newest[1] == cursor:
            return newest[0]  # a client fully caught up never expires
        raise EventNodeMissing()

    async def _since(self, request: WatchRequest, query: dict[str, Any]) -> dict[str, Any]:
        age = self.clock() - request.start_from
        if age < 0 or age > self.store.retention_seconds:
            raise BodyInvalid("bk_start_from")
        newest = await self.store.newest()
        events = await self.store.since(request.start_from, query, EVENT_STEP)
        if events:
            return _answer(events, request.fields)
        return await self._nothing_new(newest)

    async def _nothing_new(self, newest: tuple[int, str] | None) -> dict[str, Any]:
        """`bk_watched: false` with the cursor to continue from: `newest` (the newest event's id and cursor,
        read before the read that found nothing), or the no-event cursor when no event is inside the retention;
        one indexed look-up, never a sort of the events."""
        inside = newest is not None and await self.store.event_id(newest[1]) is not None
        cursor = newest[1] if newest and inside else NO_EVENT_CURSOR
        event = {"bk_cursor": cursor, "bk_resource": RESOURCE, "bk_event_type": "", "bk_detail": None}
        return {"bk_watched": False, "bk_events": [event]}


def _answer(events: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        "bk_watched": True,
        "bk_events": [
            {
                "bk_cursor": event["cursor"],
                "bk_resource": RESOURCE,
                "bk_event_type": event["type"],
                "bk_detail": _cut(event.get("detail") or {}, fields),
            }
            for event in events
        ],
    }


def _cut(detail: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The detail cut to `fields` in request order (a missing one null, `a.b` reaching into objects), or whole."""
    if not fields:
        return detail
    return {name: _path(detail, name) for name in dict.fromkeys(fields)}


def _path(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
