"""Reads that concern one instance stay a bounded number of indexed reads as the tables grow (#21): checked on
both kinds of server, the embedded one and one that says it is MongoDB (the fault proxy's face), each answer
compared with the old form's on the same data, and the commands counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo
from tests.conftest import AiohttpClient
from tests.helpers import add_definition, call
from tests.wire.conftest import add_instances
from tests.wire.faultproxy import FaultProxy

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
HOST_TABLE = "cc_InstAsst_0_pub_host"


@pytest.fixture(params=["embedded", "mongodb"])
async def face(
    request: pytest.FixtureRequest, embedded: EmbeddedMongo, wire_settings: Settings, wire_mongo: MongoConnection,
    aiohttp_client: AiohttpClient,
) -> AsyncIterator[tuple[str, Client, MongoConnection]]:  # fmt: skip
    """The service over the embedded server as it is, or as a real MongoDB (buildInfo says mongod)."""
    proxy = await FaultProxy(embedded.port).start()
    if request.param == "mongodb":
        proxy.fail("buildInfo", {"ok": 1.0, "version": "7.0.14", "process": "mongod"})
    # Model rows cached as in production (tests elsewhere turn caching off), so that the link reads are counted.
    mongodb = replace(wire_settings.mongodb, server_selection_timeout_ms=300, definition_cache_seconds=30)
    mongo = await connect(mongodb, proxy.uri, embedded=False)
    client = await aiohttp_client(create_app(replace(wire_settings, mongodb=mongodb), mongo=mongo))
    try:
        yield request.param, client, mongo
    finally:
        await proxy.stop()
        await mongo.close()


async def _seed(mongo: MongoConnection) -> None:
    """Host 21 linked to 30 hosts each way, and to itself; 300 links of other hosts around it."""
    await add_definition(mongo, "host_connect_host", "host", "connect", "host", "n:n")
    await add_instances(mongo, "host", range(100, 500))
    links = []
    next_id = 1000

    def link(src: int, dst: int) -> None:
        nonlocal next_id
        next_id += 7 if src == 21 else 3  # interleaved ids: the two directions merge
        links.append({"id": Int64(next_id), "bk_obj_asst_id": "host_connect_host", "bk_asst_id": "connect",
                      "bk_obj_id": "host", "bk_inst_id": Int64(src), "bk_asst_obj_id": "host",
                      "bk_asst_inst_id": Int64(dst), "bk_supplier_account": "0"})  # fmt: skip

    for other in range(100, 130):
        link(21, other)
        link(other + 100, 21)
        for far in range(10):
            link(other + 200, other + 300 + far % 5 * 10 + far)
    link(21, 21)
    await mongo.db[HOST_TABLE].insert_many(links)


def _link_reads(mongo: MongoConnection) -> list[dict[str, Any]]:
    """From now on, the filters of the finds sent to the links table that name instance 21 (the service's recovery
    scans the tables in the background: those are not the read measured)."""
    seen: list[dict[str, Any]] = []
    started = mongo.commands.started

    def record(event: Any) -> None:
        command = event.command
        named = str(command.get("filter"))
        if event.command_name == "find" and command.get("find") == HOST_TABLE and "_inst_id': 21" in named:
            seen.append(dict(command.get("filter", {})))
        started(event)

    mongo.commands.started = record  # type: ignore[method-assign]
    return seen


async def _old_form(mongo: MongoConnection, start: int, limit: int) -> list[int]:
    """What the single `$or` find answers on the same data: the ids of the page."""
    query = {"$or": [{"bk_obj_id": "host", "bk_inst_id": 21}, {"bk_asst_obj_id": "host", "bk_asst_inst_id": 21}]}
    cursor = mongo.db[HOST_TABLE].find(query, {"_id": 0, "id": 1}).sort("id", 1).skip(start).limit(limit)
    return [int(doc["id"]) for doc in await cursor.to_list(None)]


async def test_find_related_is_one_indexed_find_per_direction_where_or_scans_and_answers_as_the_or(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, client, mongo = face
    await _seed(mongo)
    fields = ["id", "bk_inst_id", "bk_asst_inst_id"]
    condition = {"bk_obj_id": "host", "bk_inst_id": 21}
    await call(client, "find_related", {"condition": condition, "fields": fields})  # model rows cached from here
    for start, limit in ((0, 10), (5, 20), (50, 50), (0, 0)):
        reads = _link_reads(mongo)

        answer = await call(client, "find_related", {"condition": condition, "fields": fields,
                                                     "page": {"start": start, "limit": limit}})  # fmt: skip

        spent = len(reads)  # before the old form's read below
        assert answer.code == 0, answer
        assert [link["id"] for link in answer.data] == await _old_form(mongo, start, limit or 10_000)
        assert all(21 in (link["bk_inst_id"], link["bk_asst_inst_id"]) for link in answer.data)
        assert spent == (2 if kind == "embedded" else 1), reads


async def test_count_is_the_count_command_where_an_aggregation_scans_and_counts_what_search_finds(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, client, mongo = face
    await _seed(mongo)
    rules = [{"field": "bk_inst_id", "operator": "in", "value": [21, 105, 120]},
             {"field": "bk_asst_inst_id", "operator": "equal", "value": 21}]  # fmt: skip
    for conditions in ({"condition": "OR", "rules": rules}, {"condition": "AND", "rules": rules[:1]}):
        await call(client, "count", {"bk_obj_id": "host", "conditions": conditions})  # model rows cached
        before = dict(mongo.commands.by_name)

        counted = await call(client, "count", {"bk_obj_id": "host", "conditions": conditions})

        spent = {name: n - before.get(name, 0) for name, n in mongo.commands.by_name.items() if n > before.get(name, 0)}
        found = await call(client, "search", {"bk_obj_id": "host", "conditions": conditions,
                                              "page": {"start": 0, "limit": 500}})  # fmt: skip
        assert counted.code == 0, counted
        assert counted.data == {"count": len(found.data["info"])} != {"count": 0}
        assert spent.get("count" if kind == "embedded" else "aggregate") == 1, spent
