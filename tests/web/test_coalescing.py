"""Group commit: create-one requests that arrive while a write of their definition is in flight go together,
and each caller gets exactly the answer it gets alone."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from mongomock_motor import AsyncMongoMockClient

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.errors import StoreWriteUnavailable, TargetInstanceMissing
from cmdb_asso.keys import SERVICE
from cmdb_asso.service.associations import AssociationService
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.idempotency import IDEMPOTENCY
from cmdb_asso.storage.schema import seed_demo
from tests.conftest import AiohttpClient
from tests.helpers import Answer, audit_records, call, create, link_body, links_in

Client = TestClient[Any, Any]
BOTH = frozenset({"bk_switch", "host", "bk_router", "app"})
POLICY = StaticPolicy(
    {
        **{user: UserGrants(edit=BOTH) for user in ("admin", "alice", "carol", "dave")},
        "bob": UserGrants(edit=frozenset({"bk_switch"})),  # may not edit hosts
    }
)
NN = "bk_switch_belong_bk_host"
ONE_N = "bk_router_connect_bk_switch"
# Sent in this order: (user, spelling, body, idempotency key). The first holds the write in flight; the others
# arrive meanwhile.
MIXED = [
    ("admin", "native", link_body(NN, 11, 21), None),
    ("alice", "esb", link_body(NN, 12, 22), None),
    ("admin", "native", link_body(NN, 12, 22), None),  # the link alice's request creates
    ("admin", "native", link_body(NN, 13, 999), None),  # no such host
    ("bob", "native", link_body(NN, 14, 23), None),  # no permission on hosts: never waits
    ("carol", "native", link_body(NN, 14, 24), "carol-1"),  # an idempotency key of its own
    ("dave", "native", link_body(NN, 15, 25), "dave-1"),  # a replay of a finished request
    ("admin", "native", link_body(NN, 15, 21), None),
]
TWO_SOURCES = [
    ("admin", "native", link_body(ONE_N, 31, 12), None),
    ("admin", "native", link_body(ONE_N, 32, 11), None),
    ("admin", "native", link_body(ONE_N, 33, 11), None),  # 1:n: switch 11 has its source already
]
Request = tuple[str, str, dict[str, Any], str | None]


async def fresh_mongo() -> MongoConnection:
    """A mongomock database with the demo data."""
    client: Any = AsyncMongoMockClient()
    mongo = MongoConnection(client=client, db=client["cmdb"], transactions=False)
    await seed_demo(mongo)
    return mongo


async def send(client: Client, request: Request) -> Answer:
    """One create-one request as its caller sends it."""
    user, spelling, body, key = request
    headers = {"Idempotency-Key": key} if key else None
    return await create(client, body, spelling=spelling, user=user, headers=headers)


def seen(answer: Answer) -> tuple[int, int, Any, str]:
    """What a caller reads from an answer (a new link's id as such: a write that loses to a unique index spends
    an id, so ids alone and in a group may differ)."""
    data = {"id": "new"} if answer.code == 0 and isinstance(answer.data, dict) else answer.data
    return answer.status, answer.code, data, answer.message


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def answered_or_waiting(task: asyncio.Task[Answer], service: AssociationService, waiting: int) -> bool:
    """The request has its answer, or waits for its group."""
    return task.done() or service.creates_waiting > waiting


def hold_first_call(
    target: Any, name: str, monkeypatch: pytest.MonkeyPatch, *, raising: BaseException | None = None
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the first call of `target.name` wait for `release` (`entered` is set when it starts); with
    `raising`, every call raises it instead of running."""
    entered, release = asyncio.Event(), asyncio.Event()
    original = getattr(target, name)

    async def held(*args: Any) -> Any:
        if not entered.is_set():
            entered.set()
            await release.wait()
        if raising is not None:
            raise raising
        return await original(*args)

    monkeypatch.setattr(target, name, held)
    return entered, release


async def coalesced(
    client: Client, monkeypatch: pytest.MonkeyPatch, requests: list[Request], before: Callable[[], Awaitable[None]]
) -> list[Answer]:
    """Send the first request and hold its write; send the others one by one, each either answered or waiting
    for the group; then let the write go."""
    assert client.app is not None
    service = client.app[SERVICE]
    await before()
    entered, release = hold_first_call(service.store, "create_links", monkeypatch)
    tasks = [asyncio.create_task(send(client, requests[0]))]
    await until(entered.is_set)
    for request in requests[1:]:
        waiting = service.creates_waiting
        task = asyncio.create_task(send(client, request))
        await until(functools.partial(answered_or_waiting, task, service, waiting))
        tasks.append(task)
    release.set()
    return list(await asyncio.gather(*tasks))


async def alone(
    aiohttp_client: AiohttpClient, settings: Settings, requests: list[Request], before: Any
) -> list[Answer]:
    """The same requests, one after the other, on a fresh database."""
    client = await aiohttp_client(create_app(settings, mongo=await fresh_mongo(), authorizer=POLICY))
    await before(client)
    return [await send(client, request) for request in requests]


@pytest.mark.parametrize("requests", [MIXED, TWO_SOURCES], ids=["mixed", "two-sources-one-1:n-target"])
async def test_each_caller_in_a_group_gets_what_it_gets_alone(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, requests: list[Request]
) -> None:
    async def finish_daves_request(client: Client) -> None:
        assert (await send(client, MIXED[6])).code == 0

    mongo = await fresh_mongo()
    client = await aiohttp_client(create_app(settings, mongo=mongo, authorizer=POLICY))
    together = await coalesced(client, monkeypatch, requests, lambda: finish_daves_request(client))
    expected = await alone(aiohttp_client, settings, requests, finish_daves_request)

    assert [seen(answer) for answer in together] == [seen(answer) for answer in expected]
    assert client.app is not None
    groups, members = client.app[SERVICE].coalesced
    queued = 5 if requests is MIXED else 2  # all but the first, the refused caller and the replay
    assert (groups, members) == (3, 2 + queued)  # dave's first request, the first, then one group
    metrics = await (await client.get("/metrics")).text()
    assert "cmdb_asso_create_groups_total 3.0" in metrics
    assert f"cmdb_asso_create_grouped_requests_total {2 + queued}.0" in metrics
    assert "cmdb_asso_create_requests_waiting 0.0" in metrics
    # Every created link has its own caller's audit record.
    created = {
        (request[2]["bk_inst_id"], request[2]["bk_asst_inst_id"]): request[0]
        for answer, request in zip(together, requests, strict=True)
        if answer.code == 0 and request[3] != "dave-1"
    }
    audits = {
        (doc["resource_id"], doc["operation_detail"]["dest_inst_id"]): doc["user"] for doc in await audit_records(mongo)
    }
    assert {pair: audits[pair] for pair in created} == created
    if requests is MIXED:
        # Carol's key was told her own id before the group's write (so that a retry after a crash finds it),
        # and dave's, written alone, his.
        keys = {doc["_id"]: doc["reserved"]["ids"] async for doc in mongo.db[IDEMPOTENCY].find({})}
        carol, dave = (next(ids for key, ids in keys.items() if key.endswith(name)) for name in ("carol-1", "dave-1"))
        assert carol == [together[5].data["id"]]
        assert dave == [together[6].data["id"]]


async def test_an_outage_during_a_group_write_answers_503_to_its_writers_only_and_leaves_nothing_half(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo = await fresh_mongo()
    client = await aiohttp_client(create_app(settings, mongo=mongo, authorizer=POLICY))
    assert client.app is not None
    writer = client.app[SERVICE].store.writer
    original = writer.insert
    calls = 0

    async def host_table_away(table: str, docs: list[dict[str, Any]], session: Any) -> None:
        nonlocal calls
        calls += 1
        if table == "cc_InstAsst_0_pub_host" and calls > 3:  # the group's write, not the first link's
            raise StoreWriteUnavailable()
        await original(table, docs, session)

    monkeypatch.setattr(writer, "insert", host_table_away)

    async def nothing() -> None:
        return None

    answers = await coalesced(client, monkeypatch, MIXED[:4], nothing)

    codes = [(answer.status, answer.code) for answer in answers]
    # The duplicate of a link the outage kept from being written gets the outage, not a duplicate's code; the
    # missing instance keeps its own answer.
    outage = (503, StoreWriteUnavailable.code)
    assert codes == [(200, 0), outage, outage, (200, TargetInstanceMissing.code)]
    assert [doc["bk_inst_id"] for doc in await links_in(mongo, "bk_switch")] == [11]
    assert [doc["bk_inst_id"] for doc in await links_in(mongo, "host")] == [11]
    assert [doc["resource_id"] for doc in await audit_records(mongo) if doc["action"] == "create"] == [11]


async def test_a_lone_create_goes_straight_through(client: Client) -> None:
    answer = await create(client, link_body(NN, 11, 21))

    assert answer.code == 0
    assert client.app is not None
    assert client.app[SERVICE].coalesced == (1, 1)
    assert client.app[SERVICE].creates_waiting == 0


async def switch_11_linked(
    aiohttp_client: AiohttpClient, settings: Settings, hosts: tuple[int, ...]
) -> tuple[MongoConnection, Client, list[int]]:
    """A fresh database, the app over it, and switch 11 linked to these hosts (the links' ids)."""
    mongo = await fresh_mongo()
    client = await aiohttp_client(create_app(settings, mongo=mongo, authorizer=POLICY))
    return mongo, client, [(await create(client, link_body(NN, 11, host))).data["id"] for host in hosts]


async def test_concurrent_deletes_go_together_and_each_counts_what_it_removed(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo, client, ids = await switch_11_linked(aiohttp_client, settings, (21, 22, 23, 24))
    assert client.app is not None
    service = client.app[SERVICE]
    entered, release = hold_first_call(service.store, "delete_links", monkeypatch)

    def delete(user: str, *link_ids: int) -> Coroutine[Any, Any, Answer]:
        if len(link_ids) == 1:
            return call(client, "delete", {"bk_obj_id": "bk_switch", "id": link_ids[0]}, user=user)
        return call(client, "delete_many", {"bk_obj_id": "bk_switch", "id": list(link_ids)}, user=user)

    first = asyncio.create_task(delete("admin", ids[0]))
    await until(entered.is_set)
    later = [asyncio.create_task(delete("alice", ids[1]))]
    await until(lambda: service.deletes_waiting == 1)
    later.append(asyncio.create_task(delete("carol", ids[1], ids[2])))  # ids[1] is alice's in the group
    await until(lambda: service.deletes_waiting == 2)
    refused = await delete("bob", ids[3])  # may not edit hosts: answered without waiting
    release.set()
    answers = [await first, *(await asyncio.gather(*later))]

    assert [(answer.code, answer.data) for answer in answers] == [(0, None), (0, None), (0, 1)]
    assert refused.code == 9900403
    assert service.deletes_coalesced == (2, 3)
    assert [link["id"] for link in await links_in(mongo, "bk_switch")] == [ids[3]]
    deleted = {doc["operation_detail"]["dest_inst_id"]: doc["user"]
               for doc in await audit_records(mongo) if doc["action"] == "delete"}  # fmt: skip
    assert deleted == {21: "admin", 22: "alice", 23: "carol"}  # one audit per link, by the caller that removed it


async def test_an_outage_during_a_delete_group_answers_503_to_each_member_and_deletes_nothing(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo, client, ids = await switch_11_linked(aiohttp_client, settings, (21, 22, 23))
    assert client.app is not None
    service = client.app[SERVICE]
    entered, release = hold_first_call(service.store, "delete_links", monkeypatch, raising=StoreWriteUnavailable())
    tasks = [asyncio.create_task(call(client, "delete", {"bk_obj_id": "bk_switch", "id": ids[0]}))]
    await until(entered.is_set)
    for index in (1, 2):
        tasks.append(asyncio.create_task(call(client, "delete", {"bk_obj_id": "bk_switch", "id": ids[index]})))
        await until(lambda index=index: service.deletes_waiting == index)  # type: ignore[misc]
    release.set()
    answers = await asyncio.gather(*tasks)

    assert [(answer.status, answer.code) for answer in answers] == [(503, 1199998)] * 3
    assert [link["id"] for link in await links_in(mongo, "bk_switch")] == ids
