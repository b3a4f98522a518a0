"""A waiter cancelled while its timed condition wait unwinds keeps the driver's lock balanced."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.lock import _async_cond_wait, _async_create_condition, _async_create_lock

from cmdb_asso.storage import condition_wait


async def test_a_cancelled_selection_waits_for_the_lock_and_leaves_it_free() -> None:
    # As in the driver's server selection: hold the topology lock, wait on its condition with a timeout.
    condition_wait.install()
    lock = _async_create_lock()
    condition = _async_create_condition(lock)

    async def select() -> None:
        async with condition:
            await _async_cond_wait(condition, 0.01)

    selecting = asyncio.create_task(select())
    await asyncio.sleep(0)  # waiting on the condition: the lock is free
    await lock.acquire()  # a monitor check takes the lock
    await asyncio.sleep(0.05)  # the wait times out, and must take the lock back before it returns
    selecting.cancel()  # the request reaches its deadline meanwhile
    await asyncio.sleep(0.05)
    # Python 3.11's own wait_for returns here and leaves a task that takes the lock later, for ever.
    assert not selecting.done()
    lock.release()
    with pytest.raises(asyncio.CancelledError):
        await selecting
    await asyncio.sleep(0.05)
    assert not lock.locked()
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []


async def test_the_timeout_still_ends_a_wait_nobody_notifies() -> None:
    condition_wait.install()
    condition = _async_create_condition(_async_create_lock())
    async with condition:
        assert await _async_cond_wait(condition, 0.01) is False
        assert await _async_cond_wait(condition, 0) is False
