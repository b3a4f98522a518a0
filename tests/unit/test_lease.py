"""Leases without a shared clock: taken after the holder was silent for the lease's length on the taker's own
clock, fenced by an epoch."""

from __future__ import annotations

import pytest

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.lease import Lease, LeaseLost


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_silent_holder_loses_the_lease_and_its_epoch_fences_it_out(mock_mongo: MongoConnection) -> None:
    clock = Clock()
    leases = mock_mongo.db["cmdb_asso_Leases"]
    first = Lease(leases, "feed", "first", 10, clock)
    second = Lease(leases, "feed", "second", 10, clock=clock)

    assert await first.hold()
    assert not await second.hold()  # it starts watching the holder
    clock.now += 9
    await first.renew()  # a heartbeat: the second starts over
    assert not await second.hold()
    clock.now += 9.9
    assert not await second.hold()
    clock.now += 0.2
    assert await second.hold()  # silent for 10 s of the second's clock
    with pytest.raises(LeaseLost):
        await first.renew()

    assert (first.epoch, second.epoch) == (None, 2)
    assert not await first.hold()


async def test_a_released_lease_is_taken_at_once_and_a_lease_of_an_earlier_version_after_its_length(
    mock_mongo: MongoConnection,
) -> None:
    clock = Clock()
    leases = mock_mongo.db["cmdb_asso_Leases"]
    first, second = Lease(leases, "a", "first", 10, clock), Lease(leases, "a", "second", 10, clock)
    assert await first.hold()
    await first.release()
    assert await second.hold()
    assert second.epoch == 2

    await leases.insert_one({"_id": "b", "owner": "old", "until": 5.0})
    third = Lease(leases, "b", "third", 10, clock)
    assert not await third.hold()
    clock.now += 10
    assert await third.hold()
    assert third.epoch == 1
