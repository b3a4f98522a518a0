"""Wire fixtures: the embedded nx-27017 server over TCP, a fresh database per test, both drivers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.app import create_app
from cmdb_asso.config import MongoSettings, Settings, WatchSettings
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.schema import seed_demo
from cmdb_asso.storage.tables import instance_table
from tests.conftest import AiohttpClient
from tests.helpers import add_definition
from tests.wire.faultproxy import FaultProxy

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """One embedded server for the whole run."""
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx-27017"))
    server.start_blocking()
    yield server
    server.stop_blocking()


@pytest.fixture(params=["pymongo", "motor"])
def driver(request: pytest.FixtureRequest) -> str:
    """Each wire test runs with both drivers."""
    name: str = request.param
    return name


@pytest.fixture
def wire_settings(settings: Settings, driver: str) -> Settings:
    """Settings naming a fresh database for this test and the driver under test."""
    mongodb = MongoSettings(
        uri="unused",
        database=f"t{uuid.uuid4().hex[:16]}",
        driver=driver,
        definition_cache_seconds=0,
        id_block_size=10,
    )
    # The event feed is off here (its own tests switch it on): every other wire test meets the store alone.
    return Settings(mongodb=mongodb, http=settings.http, watch=WatchSettings(enabled="off"))


async def open_wire_mongo(embedded: EmbeddedMongo, settings: Settings) -> MongoConnection:
    """A driver connection to the embedded server, with the settings' database and driver."""
    return await connect(settings.mongodb, embedded.uri, embedded=True)


@pytest.fixture
async def wire_mongo(embedded: EmbeddedMongo, wire_settings: Settings) -> AsyncIterator[MongoConnection]:
    """A seeded fresh database on the embedded server, dropped afterwards."""
    mongo = await open_wire_mongo(embedded, wire_settings)
    await seed_demo(mongo)
    yield mongo
    await mongo.client.drop_database(wire_settings.mongodb.database)
    await mongo.close()


@pytest.fixture
async def wire_client(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> TestClient[Any, Any]:
    """The app over the embedded server."""
    return await aiohttp_client(create_app(wire_settings, mongo=wire_mongo))


async def add_host_tree(mongo: MongoConnection, branching: int, depth: int) -> int:
    """A tree of hosts linked by host_connect_host: host 1 links to `branching` hosts, each of them to as many
    more, `depth` levels down; the number of hosts."""
    await add_definition(mongo, "host_connect_host", "host", "connect", "host", "n:n")
    total = int(sum(branching**level for level in range(depth + 1)))
    await add_instances(mongo, "host", range(1, total + 1))
    links = [{"id": Int64(child), "bk_obj_asst_id": "host_connect_host", "bk_asst_id": "connect",
              "bk_obj_id": "host", "bk_inst_id": Int64((child - 2) // branching + 1), "bk_asst_obj_id": "host",
              "bk_asst_inst_id": Int64(child), "bk_supplier_account": "0"}
             for child in range(2, total + 1)]  # fmt: skip
    await _insert_in_chunks(mongo.db["cc_InstAsst_0_pub_host"], links)
    return total


async def add_instances(mongo: MongoConnection, obj_id: str, ids: range) -> None:
    """Store more instances of `obj_id`."""
    table = instance_table(obj_id, "0")
    docs = [
        {
            **dict(table.base_filter),
            table.id_field: Int64(inst_id),
            table.name_field: f"{obj_id}-{inst_id}",
            "bk_supplier_account": "0",
        }
        for inst_id in ids
    ]
    await _insert_in_chunks(mongo.db[table.collection], docs)


async def _insert_in_chunks(collection: Any, docs: list[dict[str, Any]], size: int = 2000) -> None:
    """Insert a test's ground in commands of `size` documents: one command of 19,530 outlasted the driver's 10 s
    socket timeout on a machine running two test suites."""
    for start in range(0, len(docs), size):
        await collection.insert_many(docs[start : start + size])


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
