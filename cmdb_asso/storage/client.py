"""The MongoDB connection: driver choice, the embedded server, transactions and error translation."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pymongo import monitoring
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from cmdb_asso.config import MongoSettings
from cmdb_asso.errors import CmdbError, InternalError, StoreReadUnavailable, StoreWriteUnavailable

log = structlog.get_logger(__name__)

EMBEDDED = "embedded"
# Prefix of the URI that a supervisor hands its workers: the embedded server it already started.
EMBEDDED_RUNNING = "embedded+"
# MongoDB's own error codes that mean "the server is there but cannot serve now".
_UNAVAILABLE_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50})

__all__ = ["DuplicateKeyError", "EmbeddedMongo", "Mongo", "connect"]


def _is_unavailable(exc: PyMongoError) -> bool:
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    if exc.has_error_label("TransientTransactionError") or exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _UNAVAILABLE_CODES


def only_duplicates(exc: BulkWriteError) -> bool:
    """Whether every write error of a bulk write is a duplicate key (a unique index refused the write)."""
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(error.get("code") == 11000 for error in errors)


@contextlib.contextmanager
def translate_errors(*, write: bool) -> Any:
    """Turn driver failures into typed errors: unreachable is 503, anything else 500, never driver text."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except BulkWriteError as exc:
        if only_duplicates(exc):
            raise
        log.error("mongodb_error", error=type(exc).__name__, write=write)
        raise InternalError("database") from exc
    except PyMongoError as exc:
        if _is_unavailable(exc):
            log.warning("mongodb_unavailable", error=type(exc).__name__, write=write)
            raise (StoreWriteUnavailable() if write else StoreReadUnavailable()) from exc
        log.error("mongodb_error", error=type(exc).__name__, detail=str(exc)[:500], write=write)
        raise InternalError("database") from exc


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process sends, and their time (for metrics, benchmarks and tests)."""

    def __init__(self) -> None:
        self.total = 0
        self.failures = 0
        self.by_name: dict[str, int] = {}
        self.seconds_by_name: dict[str, float] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count one command."""
        self.total += 1
        self.by_name[event.command_name] = self.by_name.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Add the command's time."""
        self._add_time(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Count the failure and add its time."""
        self.failures += 1
        self._add_time(event.command_name, event.duration_micros)

    def _add_time(self, name: str, micros: int) -> None:
        self.seconds_by_name[name] = self.seconds_by_name.get(name, 0.0) + micros / 1e6


@dataclass
class Mongo:
    """An open client, its database and what the deployment supports."""

    client: Any
    db: Any
    # None until the server has answered whether it supports transactions (it may be down at start-up).
    transactions: bool | None
    commands: CommandCounter = field(default_factory=CommandCounter)
    transaction_mode: str = "auto"
    embedded: bool = False

    async def supports_transactions(self) -> bool:
        """Whether writes use transactions; asked of the server once, when it first answers."""
        if self.transactions is None:
            await self._identify_server()
            self.transactions = await _supports_transactions(self.client, self.transaction_mode, self.embedded)
        return self.transactions

    async def _identify_server(self) -> None:
        # nx-27017 reached by URI (a shared local server, a container) has the embedded server's limits too:
        # what the server says it is counts, not how it was started.
        with translate_errors(write=False):
            info = await self.client.admin.command("buildInfo")
        if info.get("process") == "nx_27017":
            self.embedded = True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """Run the block in a transaction and yield its session; without transactions, yield None."""
        if not await self.supports_transactions():
            yield None
            return
        session = self.client.start_session()
        if inspect.isawaitable(session):  # motor's start_session is a coroutine, pymongo's is not
            session = await session
        async with session:
            started = session.start_transaction()
            if inspect.isawaitable(started):
                started = await started
            async with started:
                yield session

    async def ping(self) -> None:
        """Ask the server for a ping; raises a typed error when it does not answer."""
        with translate_errors(write=False):
            await self.client.admin.command("ping")

    async def close(self) -> None:
        """Close the client."""
        closed = self.client.close()
        if inspect.isawaitable(closed):
            await closed


def _client_class(driver: str) -> Callable[..., Any]:
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient  # type: ignore[no-any-return,unused-ignore]
    from pymongo import AsyncMongoClient

    return AsyncMongoClient


async def _supports_transactions(client: Any, mode: str, embedded: bool) -> bool:
    if mode != "auto":
        return mode == "always"
    if embedded:
        # nx-27017 runs every session's transaction on one shared SQLite connection: concurrent transactions
        # nest as savepoints, and one abort rolls back the others' writes too (seen in the race tests). The
        # undo path is correct under concurrency there; `always` still uses its transactions one at a time.
        return False
    with translate_errors(write=True):
        hello = await client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


async def connect(settings: MongoSettings, uri: str, *, embedded: bool = False) -> Mongo:
    """Open a client with the configured driver, timeouts and command monitoring."""
    counter = CommandCounter()
    client = _client_class(settings.driver)(
        uri,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        socketTimeoutMS=settings.socket_timeout_ms,
        connectTimeoutMS=min(settings.server_selection_timeout_ms, 10000),
        tz_aware=False,
        event_listeners=[counter],
    )
    mongo = Mongo(client=client, db=client[settings.database], transactions=None, commands=counter)
    mongo.transaction_mode, mongo.embedded = settings.transactions, embedded
    try:
        await mongo.supports_transactions()
    except CmdbError:
        log.warning("mongodb_unreachable_at_start", detail="transaction support is asked again on first write")
    return mongo


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedMongo:
    """The nx-27017 wire-protocol server on 127.0.0.1 at a free port, its SQLite files in a data directory."""

    def __init__(self, data_dir: str | Path, *, start_timeout: float = 20.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The URI to give the driver."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def start(self) -> str:
        """Start the server and wait until it answers; return its URI."""
        return await asyncio.to_thread(self.start_blocking)

    async def stop(self) -> None:
        """Stop the server."""
        await asyncio.to_thread(self.stop_blocking)

    def start_blocking(self, port: int | None = None) -> str:
        """Start the server (on `port`, or a free one) and wait until it accepts connections."""
        store = self.data_dir / "mongo"
        store.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = port or free_port()
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from nx_27017.nx_27017 import main; main()",
                    "--data-dir",
                    str(store),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-file",
                    str(self.data_dir / "nx-27017.log"),
                    "--pid-file",
                    str(self.data_dir / f"nx-27017-{self.port}.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_until_listening():
                log.info("embedded_mongodb_started", port=self.port, data_dir=str(store))
                return self.uri
            self.stop_blocking()
        raise RuntimeError(f"the embedded MongoDB server did not start; see {self.data_dir / 'nx-27017.log'}")

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop_blocking(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after five seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        (self.data_dir / f"nx-27017-{self.port}.pid").unlink(missing_ok=True)
