"""Writing a create's documents all or nothing: in one transaction, or journalled with an undo of every
insert begun if one fails."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine
from typing import Any

import structlog
from bson.objectid import ObjectId
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
)

from cmdb_asso.config import UNDO_SECONDS
from cmdb_asso.errors import CmdbError, LinkConflict
from cmdb_asso.storage.budget import share_of_budget, time_budget
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.failures import only_duplicates, translate_errors
from cmdb_asso.storage.journal import Journal, new_token

log = structlog.get_logger(__name__)

_WRITE_CONFLICT = 112


class Insert:
    """Documents to insert into one table, each with an `_id` of our own so that an undo removes exactly them."""

    def __init__(self, table: str, docs: list[dict[str, Any]]) -> None:
        self.table = table
        self.docs = [{"_id": ObjectId(), **doc} for doc in docs]


class AllOrNothing:
    """Runs a list of inserts as one write: every document lands, or none remains."""

    def __init__(self, mongo: MongoConnection, journal: Journal) -> None:
        self.mongo = mongo
        self.journal = journal
        self._undoing: set[asyncio.Task[None]] = set()

    async def insert(self, table: str, docs: list[dict[str, Any]], session: Any) -> None:
        """Insert `docs` into `table` in order (inside `session`'s transaction when one is given)."""
        if docs:
            await self.mongo.db[table].insert_many([dict(doc) for doc in docs], ordered=True, session=session)

    async def write(self, inserts: list[Insert], journal_body: dict[str, Any]) -> None:
        """Run the inserts in one transaction, or (journalled with `journal_body`) in order with an undo.

        A unique index refusing a document, or (with transactions) write conflicts that outlast the time
        budget, raise LinkConflict: the caller judges its rules again and answers the rule's code, never a
        503 for a race it lost.
        """
        try:
            with translate_errors(write=True):
                try:
                    if await self.mongo.supports_transactions():
                        await self._in_transaction(inserts)
                    else:
                        await self._journalled(inserts, journal_body)
                except PyMongoError as exc:
                    if _lost_a_race(exc):
                        raise LinkConflict() from exc
                    raise
        except (DuplicateKeyError, BulkWriteError) as exc:
            raise LinkConflict() from exc

    async def _in_transaction(self, inserts: list[Insert]) -> None:
        conflicts = 0

        async def write(session: Any) -> None:
            nonlocal conflicts
            try:
                for insert in inserts:
                    await self.insert(insert.table, insert.docs, session)
            except BaseException as exc:
                if isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError"):
                    conflicts += 1
                if session.in_transaction:
                    # Aborted here, with a budget of its own: the driver's own abort runs in the request's
                    # budget, which may be spent, and a transaction left open keeps its writes pending.
                    await self._on_its_own(self._abort(session))
                raise

        # Half the time left stays for judging the rules again if the transaction loses its race (the driver
        # may overrun its share by one backoff sleep).
        try:
            with share_of_budget(0.5):
                await self.mongo.run_transaction(write)
        except PyMongoError as exc:
            if conflicts and isinstance(exc, ExecutionTimeout | NetworkTimeout | OperationFailure):
                # The budget ran out while the driver retried a conflicting transaction: a race was lost.
                raise _RaceLost() from exc
            raise

    async def _journalled(self, inserts: list[Insert], body: dict[str, Any]) -> None:
        token = new_token()
        await self.journal.open(token, "create", body)
        begun: list[Insert] = []
        try:
            for insert in inserts:
                begun.append(insert)
                await self.insert(insert.table, insert.docs, None)
        except BaseException:
            # Undo what was written, newest first, with a budget of its own: the request's may be spent (its
            # deadline is why the write failed), and a nested budget can only be shorter. So the undo runs as a
            # task of its own, outside the request's context, shielded from the request's end. An undo that fails
            # (MongoDB gone) leaves the journal entry, and recovery settles the write once it is older than any
            # request.
            await self._on_its_own(self._undo_all(begun, token))
            raise
        await self.journal.close(token)

    async def _on_its_own(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task outside the request's context (so outside its time budget), shielded from the
        request's end and held until done: a cancelled request's undo goes on by itself."""
        task = asyncio.create_task(work, context=contextvars.Context())
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)
        await asyncio.shield(task)

    @staticmethod
    async def _abort(session: Any) -> None:
        with time_budget(UNDO_SECONDS), contextlib.suppress(PyMongoError, CmdbError):
            await session.abort_transaction()

    async def settled(self) -> None:
        """Wait for the undos still running (tests, and a recovery run at once in the same process)."""
        await asyncio.gather(*self._undoing, return_exceptions=True)

    async def _undo_all(self, begun: list[Insert], token: str) -> None:
        try:
            with time_budget(UNDO_SECONDS):
                for insert in reversed(begun):
                    await self._undo(insert)
        except (PyMongoError, CmdbError) as exc:
            log.warning("undo_left_to_recovery", token=token, error=type(exc).__name__)
            return
        with time_budget(UNDO_SECONDS):
            await self.journal.close(token)

    async def _undo(self, insert: Insert) -> None:
        """Take an insert back (safe when it did not happen, or happened in part)."""
        if insert.docs:
            ids = [doc["_id"] for doc in insert.docs]
            await self.mongo.db[insert.table].delete_many({"_id": {"$in": ids}})


class _RaceLost(PyMongoError):
    """A transaction kept conflicting with concurrent writers until its time budget ran out."""


def _lost_a_race(exc: BaseException) -> bool:
    """Whether a failed transaction lost to a concurrent writer: a write conflict (or a duplicate key) is in
    its chain, however the driver wrapped it when the retry budget ran out."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _RaceLost | DuplicateKeyError):
            return True
        if isinstance(seen, BulkWriteError) and only_duplicates(seen):
            return True
        if isinstance(seen, OperationFailure) and seen.code == _WRITE_CONFLICT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
