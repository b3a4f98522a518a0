"""The graph walk on the real driver: six hops over more than 10,000 links cost one read per model table per
hop, and names one read per model."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cmdb_asso.__main__ import main
from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.schema import DEMO_LINKS
from tests.conftest import AiohttpClient
from tests.helpers import audit_records, call, links_in
from tests.wire.conftest import add_host_tree

pytestmark = pytest.mark.wire
BRANCHING, DEPTH = 5, 6


async def test_six_hops_over_ten_thousand_links_cost_a_read_per_hop(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    # A tree of hosts: host 1 links to 5 hosts, each of them to 5 more, six levels down (19,530 hosts).
    total = await add_host_tree(wire_mongo, BRANCHING, DEPTH)
    assert total - 1 > 10_000
    limits = replace(wire_settings.limits, graph_max_nodes=50_000, graph_max_links=50_000)
    # A budget of its own: six reads over 19,530 links take seconds on a loaded machine, past the default 10 s.
    mongodb = replace(wire_settings.mongodb, request_deadline_seconds=60, recovery_grace_seconds=120)
    settings = replace(wire_settings, limits=limits, mongodb=mongodb)
    client = await aiohttp_client(create_app(settings, mongo=wire_mongo))
    body = {"bk_obj_id": "host", "bk_inst_id": 1, "direction": "out", "depth": 6, "max_nodes": 50_000}
    assert (await call(client, "graph", body)).code == 0  # the start-up's table preparation is done meanwhile
    before_by_name = dict(wire_mongo.commands.by_name)

    answer = await call(client, "graph", body)

    assert answer.code == 0
    assert len(answer.data["nodes"]) == total
    assert len(answer.data["edges"]) == total - 1
    assert max(node["hop"] for node in answer.data["nodes"]) == DEPTH
    assert answer.data["truncated"] is False
    by_hop = [sum(1 for node in answer.data["nodes"] if node["hop"] == hop) for hop in range(DEPTH + 1)]
    assert by_hop == [BRANCHING**hop for hop in range(DEPTH + 1)]
    # The root's existence, one read per hop and one read of names; a hop's cursor may need a getMore for a
    # larger answer.
    by_name = {name: n - before_by_name.get(name, 0) for name, n in wire_mongo.commands.by_name.items()}
    reads = by_name.get("find", 0) + by_name.get("getMore", 0)  # (the start-up's index reads may still run)
    assert reads <= 1 + DEPTH + 1 + DEPTH, {name: n for name, n in by_name.items() if n}


@pytest.fixture
def commands_on_the_wire_store(
    wire_settings: Settings, embedded: EmbeddedMongo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-off commands (`main([...])`) in this test use the test's embedded server and database."""
    monkeypatch.setenv("CMDB_ASSO_MONGODB_URI", embedded.uri)
    monkeypatch.setenv("CMDB_ASSO_MONGODB_DATABASE", wire_settings.mongodb.database)
    monkeypatch.setenv("CMDB_ASSO_MONGODB_DRIVER", wire_settings.mongodb.driver)


async def test_seed_demo_writes_links_worth_drawing_once(
    wire_mongo: MongoConnection, commands_on_the_wire_store: None, capsys: pytest.CaptureFixture[str]
) -> None:

    codes = [await asyncio.to_thread(main, ["seed-demo"]) for _ in range(2)]

    assert codes == [0, 0]
    output = capsys.readouterr().out
    assert f"demo links: {len(DEMO_LINKS)} created, 0 there already, 0 refused by their mapping" in output
    assert f"demo links: 0 created, {len(DEMO_LINKS)} there already, 0 refused by their mapping" in output
    assert len(await links_in(wire_mongo, "bk_switch")) == sum(1 for link in DEMO_LINKS if "bk_switch" in link[0])
    creates = [doc for doc in await audit_records(wire_mongo) if doc["action"] == "create"]
    assert len(creates) == len(DEMO_LINKS)
    assert {doc["user"] for doc in creates} == {"seed-demo"}


async def test_seed_demo_reports_a_link_its_mapping_refuses_as_refused_not_as_there_already(
    wire_mongo: MongoConnection, commands_on_the_wire_store: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Host 24 already runs app 41: the demo's app 42 -> host 24 (1:1) has no place.
    taken = {"id": 9900, "bk_obj_id": "app", "bk_inst_id": 41, "bk_asst_obj_id": "host", "bk_asst_inst_id": 24,
             "bk_obj_asst_id": "app_run_host", "bk_asst_id": "run", "bk_supplier_account": "0"}  # fmt: skip
    for table in ("cc_InstAsst_0_pub_app", "cc_InstAsst_0_pub_host"):
        await wire_mongo.db[table].insert_one(dict(taken))

    code = await asyncio.to_thread(main, ["seed-demo"])

    output = capsys.readouterr().out
    assert code == 0
    assert f"demo links: {len(DEMO_LINKS) - 1} created, 0 there already, 1 refused by their mapping" in output
    assert "refused: app_run_host 42->24" in output
