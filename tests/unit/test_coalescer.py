"""Group commit at its edges: a bounded queue, every member answered whatever the group returns, and an exception
object per member."""

from __future__ import annotations

import asyncio

import pytest

from cmdb_asso.errors import Busy, StoreWriteUnavailable
from cmdb_asso.service.coalescing import Coalescer


async def test_past_the_queue_bound_a_submission_is_refused_at_once() -> None:
    release = asyncio.Event()

    async def slow(_key: str, items: list[int]) -> list[int | BaseException]:
        await release.wait()
        return list(items)

    coalescer: Coalescer[str, int, int] = Coalescer(slow, max_group=2, max_waiting=3)
    running = asyncio.create_task(coalescer.submit("k", 0))  # its group runs and holds the key
    await asyncio.sleep(0)
    queued = [asyncio.create_task(coalescer.submit("k", n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)

    with pytest.raises(Busy):
        await coalescer.submit("k", 4)
    release.set()

    assert await asyncio.gather(running, *queued) == [0, 1, 2, 3]
    assert coalescer.refused == 1


async def test_a_group_answering_the_wrong_count_still_answers_every_member() -> None:
    async def short(_key: str, items: list[int]) -> list[int | BaseException]:
        return list(items[:1])

    coalescer: Coalescer[str, int, int] = Coalescer(short, max_group=10)
    first = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    others = [asyncio.create_task(coalescer.submit("k", n)) for n in (1, 2, 3)]

    answers = await asyncio.wait_for(asyncio.gather(first, *others, return_exceptions=True), 5)

    assert answers[0] == 0  # the first group was alone and whole
    assert all(isinstance(answer, RuntimeError) for answer in answers[1:])


async def test_each_member_of_a_failed_group_gets_an_exception_of_its_own() -> None:
    outage = StoreWriteUnavailable()

    async def failing(_key: str, _items: list[int]) -> list[int | BaseException]:
        raise outage

    coalescer: Coalescer[str, int, int] = Coalescer(failing, max_group=10)
    answers = await asyncio.gather(*(coalescer.submit("k", n) for n in range(4)), return_exceptions=True)

    assert all(isinstance(answer, StoreWriteUnavailable) for answer in answers)
    assert len({id(answer) for answer in answers}) == 4
    assert all(answer is not outage and answer.__cause__ is outage for answer in answers)  # type: ignore[union-attr]


async def test_a_member_that_gave_up_is_left_out_of_the_next_group() -> None:
    release = asyncio.Event()
    groups: list[list[int]] = []

    async def held(_key: str, items: list[int]) -> list[int | BaseException]:
        groups.append(list(items))
        await release.wait()
        return list(items)

    coalescer: Coalescer[str, int, int] = Coalescer(held, max_group=10)
    running = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    gave_up, stays = asyncio.create_task(coalescer.submit("k", 1)), asyncio.create_task(coalescer.submit("k", 2))
    await asyncio.sleep(0)
    gave_up.cancel()  # its request reached its deadline, or its client went away
    await asyncio.gather(gave_up, return_exceptions=True)
    release.set()

    assert list(await asyncio.gather(running, stays)) == [0, 2]
    assert groups == [[0], [2]]  # nothing written for the caller that left


async def test_with_two_groups_in_flight_per_key_the_third_waits_and_takes_everything_queued() -> None:
    releases = [asyncio.Event() for _ in range(3)]
    groups: list[list[int]] = []

    async def held(_key: str, items: list[int]) -> list[int | BaseException]:
        index = len(groups)
        groups.append(list(items))
        await releases[index].wait()
        return list(items)

    coalescer: Coalescer[str, int, int] = Coalescer(held, max_group=10, max_in_flight=2)
    first = asyncio.create_task(coalescer.submit("k", 0))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit("k", 1))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(coalescer.submit("k", n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    assert groups == [[0], [1]]  # two groups run at once; the rest wait for one of them

    releases[1].set()
    assert await second == 1
    await asyncio.sleep(0)
    assert groups == [[0], [1], [2, 3, 4]]
    releases[2].set()
    releases[0].set()

    assert await asyncio.gather(first, *queued) == [0, 2, 3, 4]
