"""The MongoDB connection: driver choice, timeouts, command counting and transactions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo import ReadPreference, WriteConcern
from pymongo.errors import PyMongoError

from cmdb_asso.config import MongoSettings
from cmdb_asso.errors import CmdbError
from cmdb_asso.storage import condition_wait
from cmdb_asso.storage.budget import deadline as budget_deadline
from cmdb_asso.storage.commands import CommandCounter
from cmdb_asso.storage.failures import translate_errors

log = structlog.get_logger(__name__)
# A collection of our own that /readyz writes to after a full disk, to learn when writes pass again.
READINESS_PROBE = "cmdb_asso_Readiness"

# Stated, not left to the deployment's default: on a primary-secondary-arbiter set the default is w:1, and an
# acknowledged link could be rolled back by a failover.
MAJORITY = WriteConcern("majority")
# PyMongo's own limit for retrying a transaction when no time budget is set.
_TRANSACTION_RETRY_SECONDS = 120.0

__all__ = ["MongoConnection", "connect"]


@dataclass
class MongoConnection:
    """An open client, its database and what the deployment supports."""

    client: Any
    db: Any
    # None until the server has answered whether it supports transactions (it may be down at start-up).
    transactions: bool | None
    commands: CommandCounter = field(default_factory=CommandCounter)
    transaction_mode: str = "auto"
    embedded: bool = False
    mongos: bool = False
    replica_set: bool = False
    version: str = ""

    async def supports_transactions(self) -> bool:
        """Whether writes use transactions; asked of the server once, when it first answers."""
        if self.transactions is None:
            hello = await self._identify_server()
            self.transactions = _supports_transactions(self.transaction_mode, self.embedded, hello)
            log.info(
                "mongodb_strategy",
                server=self.server_kind,
                version=self.version,
                transactions=self.transactions,
                transaction_setting=self.transaction_mode,
            )
        return self.transactions

    @property
    def identified(self) -> bool:
        """Whether the server has said what it is (it may have been down at start-up)."""
        return self.transactions is not None

    @property
    def server_kind(self) -> str:
        """What the server said it is: nx-27017, mongos, a replica set member or a standalone."""
        if self.embedded:
            return "nx-27017"
        return "mongos" if self.mongos else ("replica set" if self.replica_set else "standalone")

    async def _identify_server(self) -> dict[str, Any]:
        # nx-27017 reached by URI (a shared local server, a container) has the embedded server's limits too:
        # what the server says it is counts, not how it was started.
        with translate_errors(write=False):
            info = await self.client.admin.command("buildInfo")
        if info.get("process") == "nx_27017":
            self.embedded = True
        self.version = str(info.get("version", ""))
        with translate_errors(write=False):
            hello: dict[str, Any] = await self.client.admin.command("hello")
        self.mongos = hello.get("msg") == "isdbgrid"
        self.replica_set = bool(hello.get("setName"))
        return hello

    async def run_transaction(self, callback: Callable[[Any], Awaitable[None]]) -> None:
        """Run `callback(session)` in a transaction with majority write concern, through the driver's own
        `with_transaction`: the whole transaction is retried on TransientTransactionError (a write conflict,
        a failover) and the commit on UnknownTransactionCommitResult, with backoff, for as long as the
        request's time budget (`pymongo.timeout`) allows."""
        session = self.client.start_session()
        if not inspect.isawaitable(session):  # PyMongo's own helper
            async with session:
                await session.with_transaction(callback, write_concern=MAJORITY, read_preference=ReadPreference.PRIMARY)
            return
        async with await session as motor_session:
            await _motor_with_transaction(motor_session, callback)

    async def ping(self) -> None:
        """Ask the server for a ping; raises a typed error when it does not answer."""
        with translate_errors(write=False):
            await self.client.admin.command("ping")

    async def write_probe(self) -> None:
        """Write one small document of our own (`cmdb_asso_Readiness`): whether the server takes writes now."""
        with translate_errors(write=True):
            await self.db[READINESS_PROBE].update_one({"_id": "probe"}, {"$inc": {"writes": 1}}, upsert=True)

    async def close(self) -> None:
        """Close the client."""
        closed = self.client.close()
        if inspect.isawaitable(closed):
            await closed


async def _motor_with_transaction(session: Any, callback: Callable[[Any], Awaitable[None]]) -> None:
    """The transactions spec's retry loop for motor, whose own `with_transaction` commits on leaving its
    `start_transaction` block and so never retries an unknown commit result, and retries without backoff.
    Bounded by the request's time budget (motor's driver threads do not see `pymongo.timeout`)."""
    deadline = budget_deadline() or time.monotonic() + _TRANSACTION_RETRY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        session.start_transaction(write_concern=MAJORITY, read_preference=ReadPreference.PRIMARY)
        try:
            await callback(session)
        except BaseException as exc:
            if session.in_transaction:
                with contextlib.suppress(PyMongoError):
                    await session.abort_transaction()
            if _retryable(exc, "TransientTransactionError", deadline):
                await asyncio.sleep(_backoff(attempt))
                continue
            raise
        while True:
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if _retryable(exc, "UnknownTransactionCommitResult", deadline):
                    continue
                if _retryable(exc, "TransientTransactionError", deadline):
                    break
                raise
        await asyncio.sleep(_backoff(attempt))


def _retryable(exc: BaseException, label: str, deadline: float) -> bool:
    return isinstance(exc, PyMongoError) and exc.has_error_label(label) and time.monotonic() < deadline


def _backoff(attempt: int) -> float:
    return random.random() * min(0.005 * 1.5**attempt, 0.5)


def _client_class(driver: str) -> Callable[..., Any]:
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient  # type: ignore[no-any-return,unused-ignore]
    from pymongo import AsyncMongoClient

    return AsyncMongoClient


def _supports_transactions(mode: str, embedded: bool, hello: dict[str, Any]) -> bool:
    if mode != "auto":
        return mode == "always"
    if embedded:
        # nx-27017 runs every session's transaction on one shared SQLite connection: concurrent transactions
        # nest as savepoints, and one abort rolls back the others' writes too (seen in the race tests). The
        # undo path is correct under concurrency there; `always` still uses its transactions one at a time.
        return False
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


async def connect(settings: MongoSettings, uri: str, *, embedded: bool = False) -> MongoConnection:
    """Open a client with the configured driver, timeouts and command monitoring."""
    condition_wait.install()
    counter = CommandCounter()
    client = _client_class(settings.driver)(
        uri,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        socketTimeoutMS=settings.socket_timeout_ms,
        connectTimeoutMS=min(settings.server_selection_timeout_ms, 10000),
        tz_aware=False,
        event_listeners=[counter],
    )
    mongo = MongoConnection(client=client, db=client[settings.database], transactions=None, commands=counter)
    mongo.transaction_mode, mongo.embedded = settings.transactions, embedded
    try:
        await mongo.supports_transactions()
    except CmdbError:
        log.warning("mongodb_unreachable_at_start", detail="transaction support is asked again on first write")
    return mongo
