"""Safe retries with Idempotency-Key, and dry runs, by both spellings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.idempotency import IdempotencyStore
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, audit_records, call, create, link_body, links_in
from tests.web.test_batch import SWITCH_HOST, batch

Client = TestClient[Any, Any]
SEED = link_body("bk_switch_belong_bk_host", 11, 21)


async def sequence_value(mongo: MongoConnection, name: str = "cc_InstAsst") -> int:
    """Where an id sequence stands (0 before its first use)."""
    doc = await mongo.db["cc_idgenerator"].find_one({"_id": name})
    return int(doc["SequenceID"]) if doc else 0


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_retry_with_the_same_key_gets_the_first_answer_without_writing(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    first = await call(client, "create", SEED, spelling=spelling, headers={"Idempotency-Key": "k-1"})
    again = await call(client, "create", SEED, spelling=spelling, headers={"Idempotency-Key": "k-1"})

    assert (first.code, again.code) == (0, 0)
    assert again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(await links_in(mock_mongo, "bk_switch")) == 1
    assert len(await audit_records(mock_mongo)) == 1


async def test_concurrent_requests_with_one_key_execute_once(client: Client, mock_mongo: MongoConnection) -> None:
    answers = await asyncio.gather(
        *(call(client, "create", SEED, headers={"Idempotency-Key": "same"}) for _ in range(20))
    )

    assert {answer.code for answer in answers} == {0}
    assert len({answer.data["id"] for answer in answers}) == 1
    assert len(await links_in(mock_mongo, "host")) == 1


async def test_two_service_processes_share_the_keys(make_client: MakeClient, mock_mongo: MongoConnection) -> None:
    first, second = await make_client(), await make_client()

    one = await call(first, "create", SEED, headers={"Idempotency-Key": "shared"})
    two = await call(second, "create", SEED, headers={"Idempotency-Key": "shared"})

    assert one.data == two.data
    assert len(await links_in(mock_mongo, "host")) == 1


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_the_same_key_with_another_body_is_refused(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    await call(client, "create", SEED, spelling=spelling, headers={"Idempotency-Key": "k-2"})

    other = await call(
        client,
        "create",
        link_body("bk_switch_belong_bk_host", 12, 22),
        spelling=spelling,
        headers={"Idempotency-Key": "k-2"},
    )

    assert (other.result, other.code) == (False, 1199006)
    assert other.message == "'Idempotency-Key' was already used with a different request"
    assert len(await links_in(mock_mongo, "host")) == 1


async def test_an_error_answer_is_replayed_too(client: Client) -> None:
    body = link_body("bk_switch_belong_bk_host", 99, 21)
    first = await call(client, "create", body, headers={"Idempotency-Key": "k-3"})
    again = await call(client, "create", body, headers={"Idempotency-Key": "k-3"}, language="zh")

    assert (first.code, again.code) == (1101073, 1101073)
    assert again.message == "关联实例不存在"


async def test_a_key_belongs_to_its_user(client: Client, mock_mongo: MongoConnection) -> None:
    await call(client, "create", SEED, headers={"Idempotency-Key": "mine"}, user="alice")

    other = await call(client, "create", SEED, headers={"Idempotency-Key": "mine"}, user="bob")

    assert other.code == 1199014  # bob's request ran, and met alice's link
    assert len(await links_in(mock_mongo, "host")) == 1


async def test_a_batch_retry_gets_the_same_ids(client: Client, mock_mongo: MongoConnection) -> None:
    body = batch(*SWITCH_HOST, [(11, 21), (12, 22), (99, 21)])
    first = await call(client, "create_many", body, headers={"Idempotency-Key": "b-1"})
    again = await call(client, "create_many", body, headers={"Idempotency-Key": "b-1"})

    assert again.data == first.data
    assert len(await links_in(mock_mongo, "host")) == 2


async def test_an_overlong_key_is_refused(client: Client) -> None:
    answer = await call(client, "create", SEED, headers={"Idempotency-Key": "x" * 300})

    assert (answer.code, answer.message) == (1199006, "'Idempotency-Key' data parameter verification does not pass")


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("how", ["body", "header"])
async def test_a_dry_run_checks_everything_and_writes_nothing(
    client: Client, mock_mongo: MongoConnection, spelling: str, how: str
) -> None:
    before = await sequence_value(mock_mongo)
    body = {**SEED, "dry_run": True} if how == "body" else SEED
    headers = {"X-Dry-Run": "1"} if how == "header" else {}

    answer = await call(client, "create", body, spelling=spelling, headers=headers)

    assert (answer.result, answer.code, answer.data) == (True, 0, {"id": None, "dry_run": True})
    assert await links_in(mock_mongo, "host") == []
    assert await audit_records(mock_mongo) == []
    assert await sequence_value(mock_mongo) == before


async def test_a_dry_run_answers_the_rules_as_a_real_create_would(client: Client) -> None:
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0

    answer = await call(client, "create", {**link_body("app_run_host", 42, 21), "dry_run": True})

    assert answer.code == 1101052


async def test_a_batch_dry_run_agrees_with_the_real_run_afterwards(client: Client, mock_mongo: MongoConnection) -> None:
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    pairs: list[Any] = [(11, 21), (12, 22), (99, 21), (12, 22), (13, 23)]

    dry = await call(client, "create_many", batch(*SWITCH_HOST, pairs, dry_run=True))
    real = await call(client, "create_many", batch(*SWITCH_HOST, pairs))

    assert dry.data["dry_run"] is True
    assert dry.data["success_created"] == dict.fromkeys(real.data["success_created"])
    assert dry.data["error_msg"] == real.data["error_msg"]
    assert len(await links_in(mock_mongo, "host")) == 1 + len(real.data["success_created"])


async def test_a_holder_whose_key_was_taken_over_can_neither_answer_nor_release_it(mock_mongo: MongoConnection) -> None:
    """The first holder was silent past the stale time (a paused process) and a retry took the key over: what the
    first writes when it goes on changes nothing, and the key answers what the retry recorded."""
    store = IdempotencyStore(mock_mongo, retention_seconds=3600)
    first = await store.claim("k", "body", wait_seconds=0, stale_seconds=60)
    second = await store.claim("k", "body", wait_seconds=0, stale_seconds=0)
    assert (first.outcome, second.outcome, first.epoch, second.epoch) == ("run", "run", 1, 2)

    await store.reserve("k", first.epoch, [7], "cc_InstAsst_0_pub_bk_switch")
    await store.complete("k", first.epoch, {"data": {"id": 7}})
    await store.release("k", first.epoch)
    await store.complete("k", second.epoch, {"data": {"id": 8}})
    await store.release("k", first.epoch)
    replay = await store.claim("k", "body", wait_seconds=0, stale_seconds=60)

    assert (replay.outcome, replay.answer) == ("replay", {"data": {"id": 8}})
    assert "reserved" not in await mock_mongo.db["cmdb_asso_idempotency"].find_one({"_id": "k"})
