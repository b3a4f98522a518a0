"""The MongoDB connection: driver choice, the embedded server, transactions and error translation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import structlog
from pymongo import ReadPreference, WriteConcern, monitoring
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
from cmdb_asso.storage import condition_wait

log = structlog.get_logger(__name__)

# Stated, not left to the deployment's default: on a primary-secondary-arbiter set the default is w:1, and an
# acknowledged link could be rolled back by a failover.
MAJORITY = WriteConcern("majority")
# PyMongo's own limit for retrying a transaction when no time budget is set.
_TRANSACTION_RETRY_SECONDS = 120.0
# The end of the current request's time budget (monotonic seconds), where one is set.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cmdb_asso_deadline", default=None)

EMBEDDED = "embedded"
# Prefix of the URI that a supervisor hands its workers: the embedded server it already started.
EMBEDDED_RUNNING = "embedded+"
# MongoDB's own error codes that mean "the server is there but cannot serve now".
# 133 is FailedToSatisfyReadPreference, which mongos answers while a shard has no primary.
_UNAVAILABLE_CODES = frozenset({6, 7, 50, 89, 91, 133, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})

__all__ = ["EmbeddedMongo", "MongoConnection", "connect"]


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


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Every command sent inside carries the time left (`maxTimeMS`), so that a request that gives up at its
    deadline does not leave its query running on the server (PyMongo's client-side operation timeout; motor
    runs the driver in threads that do not see it, and keeps its socket timeouts only)."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        with pymongo.timeout(seconds):
            yield
    finally:
        _DEADLINE.reset(token)


@contextlib.contextmanager
def share_of_budget(share: float) -> Iterator[None]:
    """Inside a time budget, give the block only `share` of the time left, so that what follows it (judging
    the rules again after a transaction lost its race) still has time to run."""
    deadline = _DEADLINE.get()
    if deadline is None:
        yield
        return
    with pymongo.timeout(max((deadline - time.monotonic()) * share, 0.001)):
        yield


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

    async def supports_transactions(self) -> bool:
        """Whether writes use transactions; asked of the server once, when it first answers."""
        if self.transactions is None:
            hello = await self._identify_server()
            self.transactions = _supports_transactions(self.transaction_mode, self.embedded, hello)
        return self.transactions

    async def _identify_server(self) -> dict[str, Any]:
        # nx-27017 reached by URI (a shared local server, a container) has the embedded server's limits too:
        # what the server says it is counts, not how it was started.
        with translate_errors(write=False):
            info = await self.client.admin.command("buildInfo")
        if info.get("process") == "nx_27017":
            self.embedded = True
        with translate_errors(write=False):
            hello: dict[str, Any] = await self.client.admin.command("hello")
        self.mongos = hello.get("msg") == "isdbgrid"
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

    async def close(self) -> None:
        """Close the client."""
        closed = self.client.close()
        if inspect.isawaitable(closed):
            await closed


async def _motor_with_transaction(session: Any, callback: Callable[[Any], Awaitable[None]]) -> None:
    """The transactions spec's retry loop for motor, whose own `with_transaction` commits on leaving its
    `start_transaction` block and so never retries an unknown commit result, and retries without backoff.
    Bounded by the request's time budget (motor's driver threads do not see `pymongo.timeout`)."""
    deadline = _DEADLINE.get() or time.monotonic() + _TRANSACTION_RETRY_SECONDS
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


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Run in the embedded server's process before nx-27017 starts: ask Linux to SIGTERM it when its parent dies
# (a SIGKILLed service must not leave its server behind), and exit at once if the parent is already gone.
_LAUNCHER = """
import ctypes, os, signal, sys
parent = os.environ.get("CMDB_ASSO_PARENT_PID")
if parent:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(parent):
        sys.exit(0)
from nx_27017.nx_27017 import main
main()
"""
STATE_FILE = "nx-27017.json"
PID_FILE = "nx-27017.pid"


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped) does not serve
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class EmbeddedMongo:
    """The nx-27017 wire-protocol server on 127.0.0.1, its SQLite files in a data directory.

    One server per data directory: its pid and port are recorded in `nx-27017.json` there, so that a one-off
    command uses the running server rather than starting a second one on the same files, and a service
    restarted after a crash adopts a server its dead predecessor left (normally none is left: the server is
    asked to die with its parent).
    """

    def __init__(self, data_dir: str | Path, *, start_timeout: float = 20.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout = start_timeout
        self.port = 0
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None

    @property
    def uri(self) -> str:
        """The URI to give the driver."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def _state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    def running(self) -> str | None:
        """The URI of a live server already serving this data directory, if there is one."""
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if process_alive(pid) and _listening(port):
            return f"mongodb://127.0.0.1:{port}/?directConnection=true"
        return None

    def alive(self) -> bool:
        """Whether the server this object started (or adopted) is still running."""
        if self._process is not None:
            return self._process.poll() is None
        return self._adopted_pid is not None and process_alive(self._adopted_pid)

    async def start(self) -> str:
        """Start the server (or adopt the live one of this data directory) and wait until it answers."""
        adopted = self._adopt()
        if adopted is not None:
            return adopted
        self._spawn(None)
        if await asyncio.to_thread(self._wait_until_listening):
            return self._started()
        await self.stop()
        raise RuntimeError(f"the embedded MongoDB server did not start; see {self.data_dir / 'nx-27017.log'}")

    async def restart(self) -> str:
        """Start the server again on the same port after it died."""
        self.restarts += 1
        self._adopted_pid = None
        self._process = None
        self._spawn(self.port)
        if await asyncio.to_thread(self._wait_until_listening):
            return self._started()
        raise RuntimeError("the embedded MongoDB server did not restart")

    async def stop(self) -> None:
        """Stop the server."""
        await asyncio.to_thread(self.stop_blocking)

    def start_blocking(self, port: int | None = None) -> str:
        """Start the server (on `port`, or a free one) and wait until it accepts connections."""
        adopted = self._adopt() if port is None else None
        if adopted is not None:
            return adopted
        for _attempt in range(3):
            self._spawn(port)
            if self._wait_until_listening():
                return self._started()
            self.stop_blocking()
        raise RuntimeError(f"the embedded MongoDB server did not start; see {self.data_dir / 'nx-27017.log'}")

    def _adopt(self) -> str | None:
        uri = self.running()
        if uri is None:
            return None
        state = json.loads(self._state_path.read_text(encoding="utf-8"))
        self._adopted_pid, self.port = int(state["pid"]), int(state["port"])
        log.warning("embedded_mongodb_adopted", pid=self._adopted_pid, port=self.port, data_dir=str(self.data_dir))
        return uri

    def _spawn(self, port: int | None) -> None:
        # PR_SET_PDEATHSIG follows the thread that forks, not the process: asked for only from the main thread
        # (the service's event loop), since a server started from a worker thread would die with that thread.
        store = self.data_dir / "mongo"
        store.mkdir(parents=True, exist_ok=True)
        self._forget_dead_server()
        self.port = port or free_port()
        on_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [
                sys.executable, "-c", _LAUNCHER,
                "--data-dir", str(store), "--host", "127.0.0.1", "--port", str(self.port),
                "--log-file", str(self.data_dir / "nx-27017.log"), "--pid-file", str(self.data_dir / PID_FILE),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "CMDB_ASSO_PARENT_PID": str(os.getpid()) if on_main_thread else ""},
        )  # fmt: skip

    def _forget_dead_server(self) -> None:
        # nx-27017 refuses to start while its pid file names a live or zombie process; a server that died
        # with a killed service may linger as a zombie nobody reaps.
        pid_file = self.data_dir / PID_FILE
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return
        if not process_alive(pid):
            pid_file.unlink(missing_ok=True)

    def _started(self) -> str:
        assert self._process is not None
        self._state_path.write_text(json.dumps({"pid": self._process.pid, "port": self.port}), encoding="utf-8")
        log.info("embedded_mongodb_started", port=self.port, data_dir=str(self.data_dir / "mongo"))
        return self.uri

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            if _listening(self.port):
                return True
            time.sleep(0.05)
        return False

    def stop_blocking(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after five seconds."""
        process, self._process = self._process, None
        adopted, self._adopted_pid = self._adopted_pid, None
        if adopted is not None and process_alive(adopted):
            os.kill(adopted, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while process_alive(adopted) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(adopted):
                os.kill(adopted, signal.SIGKILL)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None or adopted is not None:
            self._state_path.unlink(missing_ok=True)
