"""Suppliers (tenants) sharing one database stay apart: every read and write is scoped to the caller's supplier,
a model id names a table only when it is a model of that supplier (or of the shared supplier "0"), and a
refused request leaves no table behind."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.keys import SERVICE
from cmdb_asso.storage.client import MongoConnection
from tests.helpers import add_definition, audit_records, call, create, link_body, links_in, post, tables

Client = TestClient[Any, Any]
ACME = {"X-Bkcmdb-Supplier-Account": "acme"}
RULE = {"field": "bk_obj_asst_id", "operator": "equal", "value": "bk_switch_belong_bk_host"}
ANY_LINK = {"condition": "AND", "rules": [{"field": "id", "operator": "greater", "value": 0}]}


async def add_acme(mongo: MongoConnection) -> None:
    """Supplier acme's own switch 111 and host 121 (host ids are global in bk-cmdb, as here)."""
    await mongo.db["cc_ObjectBase_acme_pub_bk_switch"].insert_one(
        {
            "bk_obj_id": "bk_switch",
            "bk_inst_id": Int64(111),
            "bk_inst_name": "acme-switch",
            "bk_supplier_account": "acme",
        }
    )
    await mongo.db["cc_HostBase"].insert_one(
        {"bk_host_id": Int64(121), "bk_host_name": "acme-host", "bk_host_innerip": "10.9.9.9",
         "secret": "acme only", "bk_supplier_account": "acme"}
    )  # fmt: skip


def link_ids(data: Any) -> list[int]:
    """The ids of the links in a find's list or a search's page."""
    return [link["id"] for link in (data["info"] if isinstance(data, dict) else data)]


@pytest.fixture
async def acme_link(client: Client, mock_mongo: MongoConnection) -> int:
    """Acme's switch 111 linked to acme's host 121; the link's id."""
    await add_acme(mongo=mock_mongo)
    answer = await create(client, link_body("bk_switch_belong_bk_host", 111, 121), headers=ACME)
    assert answer.code == 0, answer
    link_id: int = answer.data["id"]
    return link_id


async def test_a_host_of_another_supplier_does_not_exist_for_the_caller(client: Client, acme_link: int) -> None:
    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 121))  # supplier "0" to acme's host
    assert (answer.result, answer.code) == (False, 1101074)  # the target instance does not exist

    theirs = await create(client, link_body("bk_switch_belong_bk_host", 111, 21), headers=ACME)  # acme to "0"'s
    assert (theirs.result, theirs.code) == (False, 1101074)


async def test_another_suppliers_links_and_instances_are_invisible_to_every_read(
    client: Client, mock_mongo: MongoConnection, acme_link: int
) -> None:
    # Supplier "0" links switch 11 to its host 21: each supplier sees its own link only.
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    reads: dict[str, dict[str, Any]] = {
        "find": {"bk_obj_id": "host", "condition": {"bk_obj_asst_id": "bk_switch_belong_bk_host"}},
        "find_related": {"condition": {"bk_obj_id": "host", "bk_inst_id": 121}, "page": {"start": 0, "limit": 10},
                         "fields": ["id"]},
        "search": {"bk_obj_id": "host", "conditions": {"condition": "AND", "rules": [RULE]},
                   "page": {"start": 0, "limit": 10}},
    }  # fmt: skip
    for operation, params in reads.items():
        answer = await call(client, operation, params)
        assert answer.code == 0, (operation, answer)
        assert acme_link not in link_ids(answer.data)
        theirs = await call(client, operation, params, headers=ACME)
        assert theirs.code == 0
        assert link_ids(theirs.data) in ([acme_link], []), (operation, theirs.data)
    counted = await call(client, "count", {"bk_obj_id": "host", "conditions": {"condition": "AND", "rules": [RULE]}})
    assert (counted.code, counted.data) == (0, {"count": 1})

    # A link of supplier "0" to acme's host (written by hand, as old data or another writer might): the host
    # stays acme's, so no read of supplier "0" shows anything of it.
    stray = {"id": Int64(900), "bk_obj_id": "bk_switch", "bk_inst_id": Int64(11), "bk_asst_obj_id": "host",
             "bk_asst_inst_id": Int64(121), "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong",
             "bk_supplier_account": "0"}  # fmt: skip
    for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"):
        await mock_mongo.db[table].insert_one(dict(stray))
    details = await call(client, "links_with_instances", {
        "bk_obj_id": "bk_switch", "condition": {"asst_filter": {"condition": "AND", "rules": [RULE]},
                                                "dst_detail": True}, "page": {"limit": 200}})  # fmt: skip
    topo = await call(client, "topo", {"bk_obj_id": "bk_switch", "bk_inst_id": 11})
    graph = await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11})
    base_info = await call(client, "base_info", {
        "condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "association_obj_id": "host"},
        "page": {"start": 0, "limit": 10}})  # fmt: skip
    for answer in (details, topo, graph, base_info):
        assert answer.code == 0, answer
        for secret in ("acme", "10.9.9.9"):
            assert secret not in str(answer.data), answer.data
    assert [item["bk_host_id"] for item in details.data["dst"]] == [21]
    assert base_info.data["info"] == [{"bk_inst_id": 21, "bk_inst_name": ""}]
    assert [child["bk_inst_id"] for child in topo.data[0]["children"]] == [21]

    assert (await call(client, "topo", {"bk_obj_id": "bk_switch", "bk_inst_id": 111})).code == 1199011
    assert (await call(client, "graph", {"bk_obj_id": "host", "bk_inst_id": 121})).code == 1101073


async def test_acme_reads_its_own_host_and_not_the_shared_suppliers_hosts(client: Client, acme_link: int) -> None:
    graph = await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 111}, headers=ACME)
    assert graph.code == 0
    assert {(n["bk_obj_id"], n["bk_inst_id"], n["bk_inst_name"]) for n in graph.data["nodes"]} == {
        ("bk_switch", 111, "acme-switch"), ("host", 121, "acme-host")}  # fmt: skip
    hosts = await call(client, "graph", {"bk_obj_id": "host", "bk_inst_id": 21}, headers=ACME)
    assert hosts.code == 1101073  # hosts are read with the caller's supplier exactly, as bk-cmdb's host reader does


async def test_a_model_name_that_collides_with_another_suppliers_table_reaches_nothing(
    client: Client, mock_mongo: MongoConnection
) -> None:
    # Tables are cc_InstAsst_{supplier}_pub_{model}: supplier "t" with model "x_pub_host" names the table of
    # supplier "t_pub_x"'s host links.
    victim = {"X-Bkcmdb-Supplier-Account": "t_pub_x"}
    await mock_mongo.db["cc_ObjectBase_t_pub_x_pub_bk_switch"].insert_one(
        {"bk_obj_id": "bk_switch", "bk_inst_id": Int64(211), "bk_inst_name": "s", "bk_supplier_account": "t_pub_x"}
    )
    await mock_mongo.db["cc_HostBase"].insert_one({"bk_host_id": Int64(221), "bk_supplier_account": "t_pub_x"})
    made = await create(client, link_body("bk_switch_belong_bk_host", 211, 221), headers=victim)
    assert made.code == 0, made
    attacker = {"X-Bkcmdb-Supplier-Account": "t"}
    audits_before = len(await audit_records(mock_mongo))

    async def attack() -> None:
        found = await call(client, "find", {"bk_obj_id": "x_pub_host", "condition": {}}, headers=attacker)
        assert (found.code, found.data) == (0, [])
        counted = await call(client, "count", {"bk_obj_id": "x_pub_host", "conditions": ANY_LINK}, headers=attacker)
        assert (counted.code, counted.data) == (0, {"count": 0})
        deleted = await call(client, "delete", {"bk_obj_id": "x_pub_host", "id": made.data["id"]}, headers=attacker)
        assert (deleted.code, deleted.data) == (0, None)
        deleted = await call(client, "delete_many", {"bk_obj_id": "x_pub_host", "id": [made.data["id"]]},
                             headers=attacker)  # fmt: skip
        assert (deleted.code, deleted.data) == (0, 0)

    await attack()  # the model does not exist for "t"
    # Even where "t" really has a model of that name, the links in the table are acme's, not "t"'s.
    await mock_mongo.db["cc_ObjDes"].insert_one(
        {"bk_obj_id": "x_pub_host", "bk_obj_name": "x", "bk_supplier_account": "t"}
    )
    await attack()

    (stored,) = await links_in(mock_mongo, "host", supplier="t_pub_x")
    assert stored["id"] == made.data["id"]
    assert "cmdb_asso_deleting" not in stored
    assert len(await audit_records(mock_mongo)) == audits_before


async def test_refused_creates_under_new_supplier_names_create_no_table(
    client: Client, mock_mongo: MongoConnection
) -> None:
    before = await tables(mock_mongo)
    for n in range(1000):
        supplier = {"X-Bkcmdb-Supplier-Account": f"new{n}"}
        answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21), headers=supplier)
        assert answer.code == 1101073, answer  # supplier new<n> has no switch 11
    for n in range(10):  # a dry run, and the reads, create nothing either
        supplier = {"X-Bkcmdb-Supplier-Account": f"read{n}", "X-Dry-Run": "true"}
        assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21), headers=supplier)).code != 0
        assert (await call(client, "count", {"bk_obj_id": "host", "conditions": ANY_LINK}, headers=supplier)).code == 0
        assert (await call(client, "find", {"bk_obj_id": "host", "condition": {}}, headers=supplier)).code == 0
    await client.app[SERVICE].store.indexes.wait_idle()  # a preparation scheduled by mistake would run now
    assert await tables(mock_mongo) - before == set()


async def test_an_empty_supplier_header_is_the_default_supplier_as_the_api_document_says(
    client: Client, mock_mongo: MongoConnection
) -> None:
    answer = await create(
        client, link_body("bk_switch_belong_bk_host", 11, 21), headers={"X-Bkcmdb-Supplier-Account": ""}
    )

    assert answer.code == 0
    assert [link["id"] for link in await links_in(mock_mongo, "host")] == [answer.data["id"]]


async def test_the_frontends_routes_show_a_supplier_only_its_own_links_and_instances(
    client: Client, mock_mongo: MongoConnection, acme_link: int
) -> None:
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    ours = await post(client, "/api/v3/find/instassttopo/object/bk_switch/inst/11", None)
    acme_switch_for_us = await post(client, "/api/v3/find/instassttopo/object/bk_switch/inst/111", None)
    acme_topo = await post(client, "/api/v3/find/instassttopo/object/bk_switch/inst/111", None, headers=ACME)
    tab_path = "/api/v3/findmany/inst/association/object/host/inst_id/{}/offset/0/limit/10/web"
    acme_host_tab_for_us = await post(client, tab_path.format(121), None)
    acme_tab = await post(client, tab_path.format(121), None, headers=ACME)
    business = {"bk_obj_id": "host", "condition": {"bk_asst_obj_id": "host", "bk_asst_inst_id": 121}}
    acme_host_links_for_us = await post(client, "/api/v3/find/instassociation/biz/2", business)

    assert [entry["bk_inst_id"] for group in ours.data[0]["next"] for entry in group["children"]] == [21]
    assert acme_switch_for_us.code == 1199011  # acme's switch is no instance of supplier "0"
    assert [entry["bk_inst_id"] for group in acme_topo.data[0]["next"] for entry in group["children"]] == [121]
    assert acme_host_tab_for_us.data["association_count"] == 0
    assert acme_host_tab_for_us.data["data"]["association"] == {"src": [], "dst": []}
    assert [link["id"] for link in acme_tab.data["data"]["association"]["dst"]] == [acme_link]
    assert acme_host_links_for_us.data == []


async def test_a_suppliers_own_definitions_and_unique_rules_are_not_another_suppliers(
    client: Client, mock_mongo: MongoConnection
) -> None:
    await add_acme(mock_mongo)
    await add_definition(mock_mongo, "bk_switch_watch_host", "bk_switch", "connect", "host", "n:n", supplier="acme")
    await mock_mongo.db["cc_ObjAttDes"].insert_one(
        {
            "id": 70,
            "bk_obj_id": "host",
            "bk_property_id": "secret",
            "bk_property_name": "Secret",
            "bk_supplier_account": "acme",
        }
    )
    await mock_mongo.db["cc_ObjectUnique"].insert_one({"id": 70, "bk_obj_id": "host", "bk_supplier_account": "acme",
                                                       "keys": [{"key_kind": "property", "key_id": 70}]})  # fmt: skip
    model_rows = {"condition": {"bk_obj_asst_id": "bk_switch_watch_host"}}
    by_ids = {"bk_obj_asst_ids": ["bk_switch_watch_host"]}
    by_ids_path = "/api/v3/topo/find/object/bk_switch/association/by/bk_obj_asst_id"

    ours = [
        await post(client, "/api/v3/find/instassociation/model", model_rows),
        await post(client, by_ids_path, by_ids),
    ]
    acme = [await post(client, "/api/v3/find/instassociation/model", model_rows, headers=ACME),
            await post(client, by_ids_path, by_ids, headers=ACME)]  # fmt: skip
    rows = {
        "3": {"bk_obj_asst_id": "bk_switch_watch_host", "operate": 2, "src_primary_key": "Instance Name=acme-switch",
              "dst_primary_key": "Secret=acme only"},
        "4": {"bk_obj_asst_id": "bk_switch_belong_bk_host", "operate": 2,
              "src_primary_key": "Instance Name=acme-switch", "dst_primary_key": "Hostname=acme-host"},
    }  # fmt: skip
    sheet = {"association_info": rows, "object_unique_id": 2, "asst_object_unique_id_info": {"host": 70}}
    imported_by_us = await post(client, "/api/v3/import/instassociation/bk_switch", sheet)
    imported_by_acme = await post(client, "/api/v3/import/instassociation/bk_switch", sheet, headers=ACME)

    assert (ours[0].data, ours[1].data) == ({"count": 0, "info": []}, [])
    assert (acme[0].data["count"], [row["bk_obj_asst_id"] for row in acme[1].data]) == (1, ["bk_switch_watch_host"])
    assert imported_by_us.data == {"err_msg": [
        {"row": 3, "message": "association [bk_switch_watch_host]  does not exists"},
        {"row": 4, "message": "[host] object unique rule does not contain 'rule: [Hostname]'"},  # acme's rule: unseen
    ]}  # fmt: skip
    # Acme names its host by its own rule; row 4 by the shared rule's Hostname, which acme's rule 70 is not.
    assert imported_by_acme.data == {
        "err_msg": [{"row": 4, "message": "[host] object unique rule does not contain 'rule: [Hostname]'"}]
    }
    assert [
        (link["bk_obj_asst_id"], link["bk_inst_id"], link["bk_asst_inst_id"])
        for link in await links_in(mock_mongo, "host", supplier="acme")
    ] == [("bk_switch_watch_host", 111, 121)]
    assert await links_in(mock_mongo, "host") == []
