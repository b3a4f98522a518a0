"""Recovery run by many at once, on the real driver and server: every service process recovers at start-up and
every 30 s, and check-links --repair recovers too; each unfinished write is settled by exactly one of them."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from typing import Any

import bson
import pytest
from aiohttp.test_utils import TestClient
from bson import ObjectId
from bson.int64 import Int64

from cmdb_asso.clock import utc_now
from cmdb_asso.config import Settings
from cmdb_asso.domain import AuditRecord
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import audit_document
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.indexes import CLAIM, CLAIMED_AT
from cmdb_asso.storage.journal import JOURNAL, Journal
from cmdb_asso.storage.repair import find_problems
from tests.helpers import audit_records, call, create, link_body
from tests.web.test_batch import SWITCH_HOST, batch
from tests.wire.conftest import add_instances, open_wire_mongo

pytestmark = pytest.mark.wire
SWITCH, HOST = "cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"
HALF, NEVER = 60, 20  # creates that wrote one table of two; creates that wrote only their audit record


def _audit(link_id: int, host: int) -> dict[str, object]:
    record = AuditRecord("create", "0", "admin", "", "crashed", utc_now(), 11, "switch-11", host, f"host-{host}",
                         "bk_switch_belong_bk_host", "belong", "bk_switch", "host")  # fmt: skip
    return {"_id": ObjectId(), **audit_document(record, link_id)}


async def _crashed_creates(mongo: MongoConnection) -> None:
    """Journal entries of creates whose process died: HALF with the source table written, NEVER with nothing."""
    await add_instances(mongo, "host", range(6000, 6000 + HALF + NEVER))
    journal = Journal(mongo)
    for n in range(HALF + NEVER):
        link = {"_id": ObjectId(), "id": Int64(70_000 + n), "bk_obj_id": "bk_switch", "bk_inst_id": Int64(11),
                "bk_asst_obj_id": "host", "bk_asst_inst_id": Int64(6000 + n), "bk_asst_id": "belong",
                "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_supplier_account": "0"}  # fmt: skip
        audit = _audit(70_000 + n, 6000 + n)
        await journal.open(
            f"crashed-{n}", "create", {"tables": [SWITCH, HOST], "links": [{"link": link, "audit": audit}]}
        )
        await mongo.db["cc_AuditLog"].insert_one(dict(audit))
        if n < HALF:
            await mongo.db[SWITCH].insert_one(dict(link))


@pytest.mark.parametrize("driver", ["pymongo"], indirect=True)  # the processes use the default driver
async def test_recoverers_in_processes_and_check_links_at_once_settle_each_write_exactly_once(
    wire_mongo: MongoConnection, wire_settings: Settings, embedded: EmbeddedMongo
) -> None:
    await _crashed_creates(wire_mongo)
    environment = {**os.environ, "CMDB_ASSO_MONGODB_URI": embedded.uri,
                   "CMDB_ASSO_MONGODB_DATABASE": wire_settings.mongodb.database}  # fmt: skip
    repairs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "check-links", "--repair", "--grace-seconds", "0",
            env=environment, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(2)
    ]  # fmt: skip
    others = [await open_wire_mongo(embedded, wire_settings) for _ in range(3)]
    try:
        await asyncio.gather(*(Journal(mongo).recover("0", grace_seconds=0) for mongo in others))
    finally:
        for mongo in others:
            await mongo.close()
    codes = await asyncio.wait_for(asyncio.gather(*(process.wait() for process in repairs)), 120)

    assert codes == [0, 0]
    assert await wire_mongo.db[JOURNAL].count_documents({}) == 0
    switch = Counter(doc["id"] for doc in await wire_mongo.db[SWITCH].find({"id": {"$gte": 70_000}}).to_list(None))
    host = Counter(doc["id"] for doc in await wire_mongo.db[HOST].find({"id": {"$gte": 70_000}}).to_list(None))
    audits = Counter(
        doc["id"] for doc in await wire_mongo.db["cc_AuditLog"].find({"id": {"$gte": 70_000}}).to_list(None)
    )
    whole = {70_000 + n for n in range(HALF)}
    assert switch == host == Counter(whole)  # each half create completed, in both tables, once
    assert audits == Counter(whole)  # with exactly one audit record; the creates that wrote nothing have none


async def test_check_links_reports_a_killed_deletes_claimed_link_once(
    wire_client: TestClient[Any, Any], wire_mongo: MongoConnection
) -> None:
    made = await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21))
    link_id = made.data["id"]
    # A delete killed after its journal entry and its claim, before it removed anything.
    await Journal(wire_mongo).open("killed-delete", "delete", {"items": [
        {"link_id": link_id, "tables": [SWITCH, HOST], "audit": {"_id": ObjectId()}, "archives": []}]})  # fmt: skip
    await wire_mongo.db[SWITCH].update_one({"id": link_id}, {"$set": {CLAIM: "killed-delete", CLAIMED_AT: 0.0}})

    problems = await find_problems(wire_mongo, "0", grace_seconds=0)

    assert [problem.kind for problem in problems if problem.link_id == link_id] == ["unfinished_write"]


async def test_a_create_journals_its_links_with_only_their_audit_ids_and_recovery_copies_from_the_tables(
    face: tuple[str, TestClient[Any, Any], MongoConnection],
) -> None:
    kind, client, mongo = face
    entries: list[dict[str, Any]] = []
    started = mongo.commands.started

    def record(event: Any) -> None:
        if event.command_name == "insert" and event.command.get("insert") == JOURNAL:
            entries.extend(bson.decode(bson.encode(doc)) for doc in event.command["documents"])  # as stored
        started(event)

    mongo.commands.started = record  # type: ignore[method-assign]
    answer = await call(client, "create_many", batch(*SWITCH_HOST, [(11, 21), (12, 22), (13, 23)]))
    assert answer.code == 0, answer
    ids = [int(answer.data["success_created"][str(n)]) for n in range(3)]
    (entry,) = entries
    assert [item["link"]["id"] for item in entry["links"]] == ids
    assert all(list(item["audit"]) == ["_id"] for item in entry["links"])  # the record itself is written first
    stored = {table: {int(doc["id"]): doc for doc in await mongo.db[table].find().to_list(None)}
              for table in (SWITCH, HOST)}  # fmt: skip

    def same(doc: dict[str, Any]) -> dict[str, Any]:  # a copy's `_id` is the driver's per table off the embedded store
        return doc if kind == "embedded" else {key: value for key, value in doc.items() if key != "_id"}

    # Each link whole, as stored: a recoverer of the version before writes a missing copy from the entry.
    assert [same(item["link"]) for item in entry["links"]] == [same(stored[HOST][link_id]) for link_id in ids]
    # Killed after the audit records and two of three source copies, one target copy: as the ordered inserts leave it.
    await mongo.db[JOURNAL].insert_one(entry)
    await mongo.db[SWITCH].delete_one({"id": ids[2]})
    await mongo.db[HOST].delete_many({"id": {"$in": ids[1:]}})

    report = await Journal(mongo).recover("0", grace_seconds=0)

    assert (report.rolled_forward, report.rolled_back) == (2, 1), report.details
    now = {table: {int(doc["id"]): doc for doc in await mongo.db[table].find().to_list(None)}
           for table in (SWITCH, HOST)}  # fmt: skip

    for table in (SWITCH, HOST):
        assert sorted(now[table]) == ids[:2]
        assert [same(now[table][link_id]) for link_id in ids[:2]] == [
            same(stored[table][link_id]) for link_id in ids[:2]
        ]
    audited = Counter(int(doc["resource_id"]) for doc in await audit_records(mongo))
    assert audited == Counter({11: 1, 12: 1}), audited
    assert await mongo.db[JOURNAL].count_documents({}) == 0
    found = await call(client, "find_related", {"condition": {"bk_obj_id": "host", "bk_inst_id": 22}, "fields": ["id"]})
    assert [link["id"] for link in found.data] == [ids[1]], found
