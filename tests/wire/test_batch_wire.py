"""Create many and delete with the real drivers against the embedded server: command counts, races, cleanup."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.storage.client import MongoConnection
from tests.helpers import audit_records, call, links_in
from tests.web.test_batch import APP_HOST, SWITCH_HOST, batch
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
ONE_TO_ONE = "can not create multiple instance association for a 1:1 association."


async def test_a_batch_of_200_costs_a_fixed_number_of_commands(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    await add_instances(wire_mongo, "bk_switch", range(1000, 1200))
    await add_instances(wire_mongo, "host", range(1000, 1002))
    # A first batch creates the tables' indexes; the measured one runs in steady state.
    assert (await call(wire_client, "create_many", batch(*SWITCH_HOST, [(11, 21)]))).result
    before, before_by_name = wire_mongo.commands.total, dict(wire_mongo.commands.by_name)

    answer = await call(
        wire_client, "create_many", batch(*SWITCH_HOST, [(switch, 1000 + switch % 2) for switch in range(1000, 1200)])
    )

    spent = wire_mongo.commands.total - before
    by_name = {name: n - before_by_name.get(name, 0) for name, n in wire_mongo.commands.by_name.items()}
    assert len(answer.data["success_created"]) == 200
    assert answer.data["error_msg"] == {}
    # definition, existing links, source and target names, two id blocks, audit and both tables' inserts, and
    # (no transactions here) the journal entry's insert and delete
    assert spent <= 10, {name: n for name, n in by_name.items() if n}
    assert len(await links_in(wire_mongo, "host")) == 201
    assert len(await audit_records(wire_mongo)) == 201


async def test_concurrent_overlapping_one_to_one_batches_never_break_the_mapping(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    apps, hosts = range(100, 110), range(200, 210)
    await add_instances(wire_mongo, "app", apps)
    await add_instances(wire_mongo, "host", hosts)
    chooser = random.Random(7)
    batches = [[(chooser.choice(apps), chooser.choice(hosts)) for _ in range(5)] for _ in range(20)]

    answers = await asyncio.gather(*(call(wire_client, "create_many", batch(*APP_HOST, pairs)) for pairs in batches))

    created = [link_id for answer in answers for link_id in answer.data["success_created"].values()]
    messages = {message for answer in answers for message in answer.data["error_msg"].values()}
    stored = await links_in(wire_mongo, "app")
    assert messages <= {ONE_TO_ONE, "the associations app->host already exist"}  # a repeat is judged first
    assert sorted(doc["id"] for doc in stored) == sorted(created)
    assert len({doc["bk_inst_id"] for doc in stored}) == len(stored)
    assert len({doc["bk_asst_inst_id"] for doc in stored}) == len(stored)
    assert sorted(doc["id"] for doc in await links_in(wire_mongo, "host")) == sorted(created)
    assert len(await audit_records(wire_mongo)) == len(created)


async def test_deletes_remove_both_sides_and_keep_the_audit_trail(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    answer = await call(wire_client, "create_many", batch(*SWITCH_HOST, [(11, 21), (12, 22), (13, 23)]))
    ids = [answer.data["success_created"][key] for key in ("0", "1", "2")]

    one = await call(wire_client, "delete", {"bk_obj_id": "host", "id": ids[0]}, spelling="esb")
    many = await call(wire_client, "delete_many", {"bk_obj_id": "bk_switch", "id": ids[1:]})

    assert (one.code, one.data, many.code, many.data) == (0, None, 0, 2)
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await links_in(wire_mongo, "host") == []
    actions = sorted(record["action"] for record in await audit_records(wire_mongo))
    assert actions == ["create"] * 3 + ["delete"] * 3
    archive = await wire_mongo.db["cc_DelArchive"].find({}, {"_id": 0}).to_list(None)
    assert sorted(copy["detail"]["id"] for copy in archive) == sorted(ids * 2)


async def test_concurrent_deletes_of_one_link_leave_neither_side(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    answer = await call(wire_client, "create_many", batch(*SWITCH_HOST, [(11, 21)]))
    link_id = answer.data["success_created"]["0"]

    answers = await asyncio.gather(
        *(call(wire_client, "delete", {"bk_obj_id": side, "id": link_id}) for side in ["host", "bk_switch"] * 5),
        *(call(wire_client, "delete_many", {"bk_obj_id": side, "id": [link_id]}) for side in ["host", "bk_switch"] * 4),
    )

    assert all(answer.code == 0 for answer in answers)
    assert sum(answer.data for answer in answers if answer.data is not None) <= 1  # counted once at most
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await links_in(wire_mongo, "host") == []
    # One delete audit and one archive copy per removed document, whoever else deleted it at the same time.
    assert [record["action"] for record in await audit_records(wire_mongo)] == ["create", "delete"]
    archive = await wire_mongo.db["cc_DelArchive"].find({}, {"_id": 0}).to_list(None)
    assert sorted(copy["coll"] for copy in archive) == ["cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"]
