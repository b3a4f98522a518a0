"""Group commit: work submitted for one key while that key's groups run waits, and goes with the next group.

There is no timer. A lone item runs at once (its group has one member); items that arrive while
`max_in_flight` groups of their key are in flight queue up, and the next group takes them all, up to
`max_group`, in arrival order. Each
group runs in a context of its own (not the first caller's), under the time budget of the member with the
most time left; a member that gave up (its request reached its deadline) is left out of groups not begun.
At most `max_waiting` items wait per key: one more is answered Busy (503, Retry-After) at once. Every member
is answered, whatever the group returns, each with an exception object of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from cmdb_asso.errors import Busy
from cmdb_asso.service.context import remaining_budget, time_budget

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

# A group runs without a caller's budget only when none of its members has one (tests, one-off commands).
_UNBUDGETED_SECONDS = 60.0


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    deadline: float | None = field(default=None)


class Coalescer(Generic[K, T, R]):
    """Runs `run_group(key, items)` for groups of items submitted under the same key; `run_group` answers one
    result (or exception) per item, in order."""

    def __init__(
        self,
        run_group: Callable[[K, list[T]], Awaitable[list[R | BaseException]]],
        max_group: int,
        *,
        max_in_flight: int = 1,
        max_waiting: int | None = None,
    ):
        self._run_group = run_group
        self._max_group = max_group
        self._max_in_flight = max_in_flight
        # Enough for several groups behind the running ones; past it, callers are told to come back.
        self._max_waiting = max_waiting if max_waiting is not None else max_group * 8
        self.refused = 0
        self._queues: dict[K, list[_Waiting[T, R]]] = {}
        self._running: dict[K, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.groups = 0
        self.items = 0

    async def submit(self, key: K, item: T) -> R:
        """Run `item` with whatever else is submitted under `key` meanwhile; its own result or exception."""
        remaining = remaining_budget()
        deadline = None if remaining is None else time.monotonic() + remaining
        queue = self._queues.setdefault(key, [])
        if len(queue) >= self._max_waiting:
            self.refused += 1
            raise Busy("group commit queue")
        waiting = _Waiting(item, asyncio.get_running_loop().create_future(), deadline)
        queue.append(waiting)
        if self._running.get(key, 0) < self._max_in_flight:
            self._running[key] = self._running.get(key, 0) + 1
            task = asyncio.create_task(self._drain(key), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        result: R = await waiting.future
        return result

    async def _drain(self, key: K) -> None:
        queue = self._queues[key]
        try:
            while queue:
                group = [waiting for waiting in queue[: self._max_group] if not waiting.future.done()]
                del queue[: self._max_group]
                if group:
                    await self._run(key, group)
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
                del self._queues[key]
                for waiting in queue:  # only when the drains are cancelled (shutdown)
                    waiting.future.cancel()

    async def _run(self, key: K, group: list[_Waiting[T, R]]) -> None:
        deadlines = [waiting.deadline for waiting in group if waiting.deadline is not None]
        seconds = max(deadlines) - time.monotonic() if deadlines else _UNBUDGETED_SECONDS
        self.groups += 1
        self.items += len(group)
        try:
            with time_budget(max(seconds, 0.001)):
                results = await self._run_group(key, [waiting.item for waiting in group])
        except Exception as exc:  # every member gets what the group met (an outage: the 503 each would get)
            results = [exc] * len(group)
        except BaseException:  # cancelled (shutdown): no member waits for an answer that will not come
            for waiting in group:
                waiting.future.cancel()
            raise
        if len(results) != len(group):  # a bug in the group: each member is still answered, as an error
            log.error("group_answer_count", members=len(group), results=len(results))
            results = [RuntimeError(f"a group of {len(group)} answered {len(results)} results")] * len(group)
        for waiting, result in zip(group, results, strict=True):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(_own(result))
            else:
                waiting.future.set_result(result)

    def waiting(self) -> int:
        """Items submitted and not yet taken into a group."""
        return sum(len(queue) for queue in self._queues.values())

    async def close(self) -> None:
        """Cancel the groups still running (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _own(exc: BaseException) -> BaseException:
    """A copy of `exc` for one member (a shared exception object would gather every member's traceback), caused
    by the original."""
    try:
        mine = copy.copy(exc)
    except Exception:  # an exception class that cannot be rebuilt from its arguments: shared, then
        return exc
    mine.__cause__ = exc
    return mine
