"""Driver failures as the service's typed errors: unreachable is 503, anything else 500, never driver text."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from cmdb_asso.errors import (
    InternalError,
    QueryRefused,
    StoreOutOfSpace,
    StoreReadUnavailable,
    StoreWriteUnavailable,
)

log = structlog.get_logger(__name__)

# MongoDB's own error codes that mean "the server is there but cannot serve now".
# 133 is FailedToSatisfyReadPreference, which mongos answers while a shard has no primary.
_UNAVAILABLE_CODES = frozenset({6, 7, 50, 89, 91, 133, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
# What MongoDB answers a `$regex` it cannot compile: 51091 since 4.2 ("Regular expression is invalid: ..."),
# BadValue (2) with the same text before; 51108 for bad `$options`.
_BAD_PATTERN_CODES = frozenset({51091, 51108})
_OUT_OF_DISK_SPACE = 14031
_OUT_OF_SPACE_TEXTS = ("no space left on device", "database or disk is full", "out of disk space")


def is_bad_pattern(exc: PyMongoError) -> bool:
    """Whether the server refused a query's regular expression (the caller's input, not a fault)."""
    if not isinstance(exc, OperationFailure):
        return False
    return exc.code in _BAD_PATTERN_CODES or (exc.code == 2 and "regular expression" in str(exc).lower())


def is_unavailable(exc: PyMongoError) -> bool:
    """Whether MongoDB is there but cannot serve now (or cannot be reached): worth answering 503."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    if exc.has_error_label("TransientTransactionError") or exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _UNAVAILABLE_CODES


def is_out_of_space(exc: PyMongoError) -> bool:
    """Whether the server refused a write for want of disk space: MongoDB's OutOfDiskSpace (14031), or the text
    of a store over a file system that is full (the embedded server's SQLite)."""
    if isinstance(exc, OperationFailure) and exc.code == _OUT_OF_DISK_SPACE:
        return True
    text = str(exc).lower()
    return any(sign in text for sign in _OUT_OF_SPACE_TEXTS)


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
        if is_bad_pattern(exc):
            raise QueryRefused() from exc
        if is_out_of_space(exc):
            log.error("mongodb_out_of_disk_space", error=type(exc).__name__, write=write,
                      detail="the database's disk is full: writes fail until space is freed")  # fmt: skip
            raise (StoreOutOfSpace() if write else StoreReadUnavailable()) from exc
        if is_unavailable(exc):
            log.warning("mongodb_unavailable", error=type(exc).__name__, write=write)
            raise (StoreWriteUnavailable() if write else StoreReadUnavailable()) from exc
        log.error("mongodb_error", error=type(exc).__name__, detail=str(exc)[:500], write=write)
        raise InternalError("database") from exc
