"""Reads that concern one instance stay a bounded number of indexed reads as the tables grow (#21): checked on
both kinds of server, the embedded one and one that says it is MongoDB (the fault proxy's face), each answer
compared with the old form's on the same data, and the commands counted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.indexes import CLAIM, CLAIMED_AT
from cmdb_asso.storage.journal import Journal
from tests.helpers import add_definition, call, link_body
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
HOST_TABLE = "cc_InstAsst_0_pub_host"


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


def _link_filters(mongo: MongoConnection, tables: set[str]) -> list[dict[str, Any]]:
    """From now on, every filter sent to `tables` (finds, updates and deletes), as the server received it."""
    seen: list[dict[str, Any]] = []
    started = mongo.commands.started

    def record(event: Any) -> None:
        command = event.command
        if str(command.get(event.command_name)) in tables:
            seen.extend([dict(command["filter"])] if event.command_name == "find" else [])
            seen.extend(dict(update["q"]) for update in command.get("updates", []))
            seen.extend(dict(delete["q"]) for delete in command.get("deletes", []))
        started(event)

    mongo.commands.started = record  # type: ignore[method-assign]
    return seen


def _scans_for_id(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The filters that find links by `id` alone, which the embedded server answers by reading every row."""
    return [query for query in filters if "id" in str(list(query)) and "_id" not in query]


async def test_links_are_deleted_by_the_id_key_the_store_indexes_and_links_bk_cmdb_wrote_still_by_their_id(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, client, mongo = face
    await add_definition(mongo, "host_connect_bk_switch", "host", "connect", "bk_switch", "n:n")
    await add_instances(mongo, "host", range(100, 110))
    await add_instances(mongo, "bk_switch", range(100, 110))
    tables = {HOST_TABLE, "cc_InstAsst_0_pub_bk_switch"}
    made = [await call(client, "create", link_body("host_connect_bk_switch", 100 + n, 100 + n)) for n in range(5)]
    assert [answer.code for answer in made] == [0] * 5, made
    ours = [int(answer.data["id"]) for answer in made]
    # One link as bk-cmdb writes it: its copies' `_id`s are the driver's, unrelated to its id.
    theirs = {"id": Int64(77), "bk_obj_asst_id": "host_connect_bk_switch", "bk_asst_id": "connect",
              "bk_obj_id": "host", "bk_inst_id": Int64(109), "bk_asst_obj_id": "bk_switch",
              "bk_asst_inst_id": Int64(109), "bk_supplier_account": "0"}  # fmt: skip
    for table in sorted(tables):
        await mongo.db[table].insert_one(dict(theirs))
    copies = {
        (table, int(doc["id"])): doc["_id"] for table in tables for doc in await mongo.db[table].find().to_list(None)
    }
    await call(client, "delete", {"bk_obj_id": "host", "id": 999999})  # model rows cached from here
    filters = _link_filters(mongo, tables)

    one = await call(client, "delete", {"bk_obj_id": "bk_switch", "id": ours[1]})

    scans_of_one = _scans_for_id(filters)
    many = await call(client, "delete_many", {"bk_obj_id": "host", "id": [ours[3], 77, 888888]})

    assert (one.code, many.code, many.data) == (0, 0, 2), (one, many)
    if kind == "embedded":
        assert scans_of_one == [], scans_of_one
    left = {table: sorted(int(doc["id"]) for doc in await mongo.db[table].find().to_list(None)) for table in tables}
    assert left == {table: [ours[0], ours[2], ours[4]] for table in tables}
    archived = await mongo.db["cc_DelArchive"].find({}, {"_id": 0, "oid": 1, "coll": 1, "detail": 1}).to_list(None)
    assert sorted((doc["coll"], int(doc["detail"]["id"]), doc["oid"]) for doc in archived) == sorted(
        (table, link_id, str(copies[(table, link_id)])) for table in tables for link_id in (ours[1], ours[3], 77)
    )
    deleted = await mongo.db["cc_AuditLog"].find({"action": "delete"}).to_list(None)
    assert sorted(int(record["resource_id"]) for record in deleted) == [101, 103, 109]  # one per link, by source


# Fields the embedded server serves from an index that picks out one instance's documents (its own `_id`, and the
# single-field indexes on instance ids; `bk_obj_asst_id` is indexed too, but picks out a whole definition).
_INDEXED = {"_id", "bk_inst_id", "bk_asst_inst_id", "bk_host_id"}


def _served_by_an_index(query: dict[str, Any]) -> bool:
    """Whether the embedded server can answer `query` through an index on instance ids: an equality, `$eq` or a
    range on such a field at its top (an `$in` alone, or an `$or`, reads every row there)."""
    for field, value in query.items():
        if field == "$and":
            return any(_served_by_an_index(part) for part in value)
        if field in _INDEXED and (not isinstance(value, dict) or {"$eq", "$gte", "$lte"} & value.keys()):
            return True
    return False


def _all_filters(mongo: MongoConnection) -> list[tuple[str, dict[str, Any]]]:
    """From now on, every find's table and filter."""
    seen: list[tuple[str, dict[str, Any]]] = []
    started = mongo.commands.started

    def record(event: Any) -> None:
        if event.command_name == "find":
            seen.append((str(event.command["find"]), dict(event.command.get("filter", {}))))
        started(event)

    mongo.commands.started = record  # type: ignore[method-assign]
    return seen


async def _old_graph(mongo: MongoConnection, root: int, depth: int) -> tuple[set[int], set[int]]:
    """The hosts and link ids within `depth` hops of `root`, each hop's frontier read with one `$in` per side."""
    hosts, links, frontier = {root}, set(), [root]
    for _ in range(depth):
        query = {"$or": [{"bk_inst_id": {"$in": frontier}}, {"bk_asst_inst_id": {"$in": frontier}}]}
        found = await mongo.db[HOST_TABLE].find(query).to_list(None)
        links |= {int(doc["id"]) for doc in found}
        frontier = sorted({int(doc[end]) for doc in found for end in ("bk_inst_id", "bk_asst_inst_id")} - hosts)
        hosts |= set(frontier)
    return hosts, links


async def test_a_graph_and_a_page_with_details_read_links_and_instances_through_indexes_and_answer_as_in_reads(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, client, mongo = face
    await _seed(mongo)
    await add_instances(mongo, "host", range(1, 30))
    body = {"bk_obj_id": "host", "bk_inst_id": 21, "direction": "both", "depth": 3}
    rule = {"field": "bk_obj_asst_id", "operator": "equal", "value": "host_connect_host"}
    condition = {"asst_filter": {"condition": "AND", "rules": [rule]}, "src_detail": True, "dst_detail": True}
    page = {"bk_obj_id": "host", "page": {"start": 0, "limit": 200, "sort": "id"}, "condition": condition}
    await call(client, "graph", body)  # model rows cached from here
    filters = _all_filters(mongo)

    graph = await call(client, "graph", body)
    detailed = await call(client, "links_with_instances", page)

    read = [(table, query) for table, query in filters if table.startswith(("cc_InstAsst", "cc_HostBase"))]
    assert (graph.code, detailed.code) == (0, 0), (graph, detailed)
    hosts, links = await _old_graph(mongo, 21, 3)
    assert {node["bk_inst_id"] for node in graph.data["nodes"]} == hosts
    assert {edge["id"] for edge in graph.data["edges"]} == links
    assert all(node["bk_inst_name"] == f"host-{node['bk_inst_id']}" for node in graph.data["nodes"])
    shown = detailed.data["association"]
    expected = await mongo.db[HOST_TABLE].find({}, {"_id": 0}).sort("id", 1).limit(200).to_list(None)
    assert [row["id"] for row in shown] == [int(doc["id"]) for doc in expected]
    for side, end in (("src", "bk_inst_id"), ("dst", "bk_asst_inst_id")):
        ends = {int(doc[end]) for doc in expected}
        assert sorted(host["bk_host_id"] for host in detailed.data[side]) == sorted(ends)
        assert all(host["bk_host_name"] == f"host-{host['bk_host_id']}" for host in detailed.data[side])
    if kind == "embedded":  # but the page itself, the definition's links sorted by id, as bk-cmdb asks for them
        page_read = {"bk_obj_asst_id": {"$eq": "host_connect_host"}, "bk_supplier_account": "0"}
        assert [query for _, query in read if not _served_by_an_index(query)] == [page_read], read


async def test_a_create_reads_the_links_its_rules_need_through_indexes_and_judges_as_before(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, client, mongo = face
    await _seed(mongo)  # 300 links in the table the rules read
    await add_definition(mongo, "host_run_host", "host", "run", "host", "1:1")
    await add_definition(mongo, "host_group_host", "host", "group", "host", "1:n")
    await call(client, "create", link_body("host_run_host", 400, 401))  # model rows cached from here
    filters = _all_filters(mongo)
    tries = [("host_run_host", 400, 402), ("host_run_host", 403, 401), ("host_run_host", 403, 404),
             ("host_group_host", 410, 411), ("host_group_host", 412, 411), ("host_group_host", 410, 412),
             ("host_connect_host", 21, 100), ("host_connect_host", 21, 140)]  # fmt: skip

    answers = [await call(client, "create", link_body(*one)) for one in tries]

    assert [answer.code for answer in answers] == [1101052, 1101052, 0, 0, 1101061, 0, 1199014, 0], answers
    read = [query for table, query in filters if table.startswith("cc_InstAsst")]
    if kind == "embedded":
        assert [query for query in read if not _served_by_an_index(query)] == [], read


async def test_recovery_finds_stale_delete_claims_through_the_claims_index_and_releases_them(
    face: tuple[str, Client, MongoConnection],
) -> None:
    kind, _, mongo = face
    await _seed(mongo)
    await mongo.db[HOST_TABLE].update_one({"id": 1007}, {"$set": {CLAIM: "a-killed-delete", CLAIMED_AT: 0.0}})
    await mongo.db[HOST_TABLE].update_one({"id": 1010}, {"$set": {CLAIM: "a-live-delete", CLAIMED_AT: time.time()}})
    filters = _link_filters(mongo, {HOST_TABLE})

    await Journal(mongo).recover("0", grace_seconds=60)  # (the service's own recovery may release it first)

    claimed = await mongo.db[HOST_TABLE].find({CLAIM: {"$gt": ""}}, {"_id": 0, "id": 1, CLAIM: 1}).to_list(None)
    assert claimed == [{"id": 1010, CLAIM: "a-live-delete"}]
    assert [query for query in filters if CLAIM in str(query)], filters  # the claims were looked for
    if kind == "embedded":  # `$exists` reads every row there; the claim's index serves a range
        assert [query for query in filters if "$exists" in str(query)] == [], filters
