"""Idempotency keys across a crash, on the real driver and the embedded server (whose `$set` of a datetime
reads back as a string): a retry gets the first answer, or a clear "in progress", never a 503."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.service.idempotency import fingerprint
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.idempotency import IDEMPOTENCY
from tests.conftest import AiohttpClient
from tests.helpers import audit_records, call, create, link_body, links_in

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
BODY = link_body("bk_switch_belong_bk_host", 11, 21)


async def _client(aiohttp_client: AiohttpClient, settings: Settings, mongo: MongoConnection, deadline: float) -> Client:
    quick = replace(settings, mongodb=replace(settings.mongodb, request_deadline_seconds=deadline))
    return await aiohttp_client(create_app(quick, mongo=mongo))


def _running(scoped: str, *, silent_for: float) -> dict[str, Any]:
    """A key held by a request that has run for a while (a dead process's, when `silent_for` is long)."""
    now = time.time()
    held = {"_id": scoped, "fingerprint": fingerprint("add_instance_association", BODY), "state": "running"}
    return {**held, "created_ts": now, "claimed_ts": now - silent_for}


async def _holder_of(mongo: MongoConnection, key_suffix: str) -> dict[str, Any]:
    docs = await mongo.db[IDEMPOTENCY].find({}).to_list(None)
    (held,) = [doc for doc in docs if str(doc["_id"]).endswith(key_suffix)]
    return dict(held)


async def test_a_retry_after_the_holder_died_having_written_gets_the_first_id(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    client = await _client(aiohttp_client, wire_settings, wire_mongo, deadline=0.5)
    first = await create(client, BODY, headers={"Idempotency-Key": "crash-1"})
    held = await _holder_of(wire_mongo, "crash-1")
    assert held["reserved"]["ids"] == [first.data["id"]]
    # As a process killed after writing and before recording its answer leaves the key: running, silent.
    await wire_mongo.db[IDEMPOTENCY].update_one(
        {"_id": held["_id"]}, {"$set": {"state": "running", "claimed_ts": time.time() - 60}, "$unset": {"answer": ""}}
    )

    retry = await create(client, BODY, headers={"Idempotency-Key": "crash-1"})

    assert (retry.code, retry.data) == (0, {"id": first.data["id"]})
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(await links_in(wire_mongo, "bk_switch")) == 1
    assert len(await audit_records(wire_mongo)) == 1


async def test_a_create_many_retried_after_its_holder_died_having_written_answers_the_ids_it_wrote(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    """The first attempt wrote rows 0 and 1 and died before answering; the retry with the same key writes row 2,
    answers rows 0 and 1 with the ids the first attempt wrote, and still refuses the row another request wrote."""
    client = await _client(aiohttp_client, wire_settings, wire_mongo, deadline=5)
    other = await create(client, link_body("bk_switch_belong_bk_host", 14, 24))
    rows = [{"bk_inst_id": 11, "bk_asst_inst_id": 21}, {"bk_inst_id": 12, "bk_asst_inst_id": 22}]
    key = {"Idempotency-Key": "crash-many"}
    body = {"bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host"}
    first = await call(client, "create_many", {**body, "details": rows}, headers=key)
    assert first.code == 0, first
    held = await _holder_of(wire_mongo, "crash-many")
    # As a process killed after writing and before recording its answer leaves the key: running, silent, and for
    # the body the retry sends (the same request, as the first attempt's body had all three rows).
    everything = [*rows, {"bk_inst_id": 13, "bk_asst_inst_id": 23}, {"bk_inst_id": 14, "bk_asst_inst_id": 24}]
    await wire_mongo.db[IDEMPOTENCY].update_one({"_id": held["_id"]}, {
        "$set": {"state": "running", "claimed_ts": time.time() - 60,
                 "fingerprint": fingerprint("batch_create_instance_association", {**body, "details": everything})},
        "$unset": {"answer": ""}})  # fmt: skip

    retry = await call(client, "create_many", {**body, "details": everything}, headers=key)

    assert retry.code == 0, retry
    written = first.data["success_created"]
    assert {k: v for k, v in retry.data["success_created"].items() if k in ("0", "1")} == written
    assert set(retry.data["success_created"]) == {"0", "1", "2"}
    assert list(retry.data["error_code"]) == ["3"]  # another request's link stays another's: refused
    assert other.code == 0
    assert len(await links_in(wire_mongo, "bk_switch")) == 4


async def test_a_retry_after_the_holder_died_before_writing_runs_the_create(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    client = await _client(aiohttp_client, wire_settings, wire_mongo, deadline=0.5)
    scoped = "0\x1fadmin\x1fadd_instance_association\x1fcrash-2"

    reserved = {"ids": [987654], "table": "cc_InstAsst_0_pub_bk_switch"}
    await wire_mongo.db[IDEMPOTENCY].insert_one({**_running(scoped, silent_for=60), "reserved": reserved})

    retry = await create(client, BODY, headers={"Idempotency-Key": "crash-2"})

    assert retry.code == 0
    assert retry.data["id"] != 987654
    assert [link["id"] for link in await links_in(wire_mongo, "bk_switch")] == [retry.data["id"]]


async def test_a_retry_while_the_holder_still_works_answers_in_progress_not_503(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    client = await _client(aiohttp_client, wire_settings, wire_mongo, deadline=0.3)
    scoped = "0\x1fadmin\x1fadd_instance_association\x1fbusy-1"

    await wire_mongo.db[IDEMPOTENCY].insert_one(_running(scoped, silent_for=0))

    retry = await create(client, BODY, headers={"Idempotency-Key": "busy-1"})

    assert (retry.status, retry.code) == (409, 1199003)
    assert "in progress" in retry.message
    assert retry.headers["Retry-After"] == "1"
    assert await links_in(wire_mongo, "bk_switch") == []


async def test_a_key_taken_over_on_the_embedded_server_is_replayed_afterwards(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    client = await _client(aiohttp_client, wire_settings, wire_mongo, deadline=0.5)
    scoped = "0\x1fadmin\x1fadd_instance_association\x1ftake-1"

    await wire_mongo.db[IDEMPOTENCY].insert_one(_running(scoped, silent_for=60))

    taken = await create(client, BODY, headers={"Idempotency-Key": "take-1"})
    replayed = await create(client, BODY, headers={"Idempotency-Key": "take-1"})

    assert taken.code == 0
    assert (replayed.code, replayed.data) == (0, taken.data)
    assert replayed.headers["Idempotent-Replayed"] == "true"
