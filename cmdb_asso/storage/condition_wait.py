"""A cancelled server selection must not keep the driver's lock: PyMongo's async condition waits on Python 3.11.

PyMongo's async driver waits on its topology and pool conditions with `asyncio.wait_for(condition.wait(), t)`.
On Python 3.11, `wait_for` runs the wait as a task of its own; when its timeout fires it cancels that task and
waits for it to re-acquire the lock, and if the caller is cancelled meanwhile (a request reaching its
deadline while the server is away), `wait_for` returns at once and leaves the task behind. That task takes the
lock later and nobody ever releases it: every later server selection, monitor check and request then waits
forever (seen here: the whole service hung after MongoDB went away under load). Python 3.12's `wait_for`
awaits in the caller's own task, so a cancellation unwinds through the condition's re-acquire and its
`async with`, which releases the lock; this installs that `wait_for` for the driver on 3.11.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import pymongo.lock

T = TypeVar("T")


async def wait_for_in_caller(awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (wait_for's signature)
    """`asyncio.wait_for` as Python 3.12 has it: the awaitable runs in the caller's task, under a timeout."""
    if timeout is None:
        return await awaitable
    async with asyncio.timeout(max(timeout, 0)):
        return await awaitable


def install() -> None:
    """Give the driver's condition waits the 3.12 `wait_for` (nothing to do on Python 3.12 and later)."""
    if sys.version_info < (3, 12):
        module: Any = pymongo.lock
        module.wait_for = wait_for_in_caller
