"""The time budget of a request, carried by every MongoDB command sent within it."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

import pymongo

# The end of the current request's time budget (monotonic seconds), where one is set.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cmdb_asso_deadline", default=None)


def deadline() -> float | None:
    """The end of the current time budget (monotonic seconds), if one is set."""
    return _DEADLINE.get()


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
