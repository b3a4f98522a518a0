"""A real server's failures, through the fault-injecting proxy: index builds a bk-cmdb database refuses, a user
without privileges, replica-set transactions losing races or their commit answer, failovers and mongos."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings, WatchSettings
from cmdb_asso.keys import SERVICE, WATCH
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.indexes import IndexManager
from cmdb_asso.storage.schema import ShardedTables, refuse_sharded_tables
from tests.conftest import AiohttpClient
from tests.helpers import audit_records, call, create, link_body, links_in
from tests.wire.faultproxy import (
    DUPLICATE_KEY_INDEX_BUILD,
    FAILED_TO_SATISFY_READ_PREFERENCE,
    INDEX_OPTIONS_CONFLICT,
    MAX_TIME_EXPIRED,
    NOT_PRIMARY,
    UNAUTHORIZED,
    UNKNOWN_COMMIT,
    WRITE_CONFLICT,
    FaultProxy,
    command_error,
    write_error,
)

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
SWITCH_TABLES = ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host")


@pytest.fixture
async def proxy(embedded: EmbeddedMongo) -> AsyncIterator[FaultProxy]:
    """The fault proxy in front of the embedded server; the connections opened through it close afterwards."""
    started = await FaultProxy(embedded.port).start()
    yield started
    await started.stop()  # first: a driver's monitor blocked in a streaming hello is released at once
    for mongo in OPENED.pop(started.port, []):
        await mongo.close()


# The connections each proxy's test opened, closed by the proxy fixture.
OPENED: dict[int, list[MongoConnection]] = {}


async def _app(
    aiohttp_client: AiohttpClient, settings: Settings, proxy: FaultProxy, *, transactions: str = "auto"
) -> tuple[Client, MongoConnection]:
    # A short server selection: closing a client ends its sessions, and that waits for a server.
    mongodb = replace(settings.mongodb, transactions=transactions, server_selection_timeout_ms=300)
    mongo = await connect(mongodb, proxy.uri, embedded=False)
    OPENED.setdefault(proxy.port, []).append(mongo)
    client = await aiohttp_client(create_app(replace(settings, mongodb=mongodb), mongo=mongo))
    return client, mongo


async def _drop_unique_link_indexes(mongo: MongoConnection) -> None:
    for table in SWITCH_TABLES:
        await mongo.db[table].drop_indexes()


def _store(client: Client) -> Any:
    assert client.app is not None
    return client.app[SERVICE].store


async def test_a_unique_index_build_refused_with_e11000_leaves_a_service_that_still_refuses_repeats(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    await _drop_unique_link_indexes(wire_mongo)
    proxy.fail("createIndexes", DUPLICATE_KEY_INDEX_BUILD, times=None)
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    store = _store(client)

    with capture_logs() as logs:
        states = [await store.indexes.prepare(table) for table in SWITCH_TABLES]

    assert [state.unique_link for state in states] == [False, False]
    refused = [entry for entry in logs if entry["event"] == "index_not_created" and entry["table"] in SWITCH_TABLES]
    assert {(entry["table"], entry["code"]) for entry in refused} == {(table, 11000) for table in SWITCH_TABLES}
    first = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    again = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    assert (first.code, again.code) == (0, 1199014)
    assert len(await links_in(wire_mongo, "bk_switch")) == 1
    assert len(await audit_records(wire_mongo)) == 1


async def test_a_user_without_the_create_index_privilege_starts_when_the_indexes_exist(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.fail("createIndexes", UNAUTHORIZED, times=None)
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    store = _store(client)

    states = await store.indexes.prepare_all(list(SWITCH_TABLES))

    assert all(state.complete for state in states)
    assert "createIndexes" not in proxy.seen  # listIndexes first: nothing was missing, nothing was asked
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0


async def test_a_user_without_the_privilege_on_a_table_without_indexes_is_logged_and_served(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    await _drop_unique_link_indexes(wire_mongo)
    proxy.fail("createIndexes", UNAUTHORIZED, times=None)
    mongo = await connect(replace(wire_settings.mongodb, server_selection_timeout_ms=300), proxy.uri)

    with capture_logs() as logs:
        state = await IndexManager(mongo).prepare(SWITCH_TABLES[0])

    assert not state.unique_link
    assert proxy.seen.count("createIndexes") == 1  # one command per table, and no retries of a refusal
    assert [entry["code"] for entry in logs if entry["event"] == "index_not_created"] == [13] * len(state.missing)
    await mongo.close()
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0


async def test_an_index_on_the_same_keys_that_is_not_unique_answers_85_and_repeats_are_still_refused(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    await _drop_unique_link_indexes(wire_mongo)
    for table in SWITCH_TABLES:
        await wire_mongo.db[table].create_index(
            [("bk_inst_id", 1), ("bk_asst_inst_id", 1), ("bk_obj_asst_id", 1)], name="bkcc_idx_custom"
        )
    proxy.fail("createIndexes", INDEX_OPTIONS_CONFLICT, times=None)
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    store = _store(client)
    for table in SWITCH_TABLES:
        await store.indexes.prepare(table)

    first = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    again = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))

    assert not any(store.indexes.state(table).unique_link for table in SWITCH_TABLES)
    assert (first.code, again.code) == (0, 1199014)  # read first: the repeat is seen, not written
    assert len(await links_in(wire_mongo, "bk_switch")) == 1


async def test_an_existing_unique_index_under_another_name_counts(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    _client, mongo = await _app(aiohttp_client, wire_settings, proxy)

    state = await IndexManager(mongo).prepare(SWITCH_TABLES[0])

    # The embedded server names indexes its own way: the state is read from keys and `unique`, not names.
    assert state.unique_link
    assert state.missing == ()


async def test_on_a_replica_set_a_write_conflict_outlasting_the_budget_answers_the_rule_not_503(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    proxy.replica_set = "rs0"
    # Short enough that the conflict outlasts it; long enough that, on a loaded machine, the half left after the
    # retries still judges the rules (1 s was seen to fail under the whole suite's load).
    quick = replace(wire_settings, mongodb=replace(wire_settings.mongodb, request_deadline_seconds=3.0))
    client, _mongo = await _app(aiohttp_client, quick, proxy, transactions="always")
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0  # the winner
    store = _store(client)
    original = store.read_for_create
    blind = [True]

    async def stale_read(*args: Any, **kwargs: Any) -> Any:
        # The loser's first read misses the winner, as a read racing its commit would.
        existing, sources, targets = await original(*args, **kwargs)
        if blind:
            blind.pop()
            return [], sources, targets
        return existing, sources, targets

    monkeypatch.setattr(store, "read_for_create", stale_read)
    proxy.fail("insert", WRITE_CONFLICT, when=lambda command: command["insert"].startswith("cc_InstAsst"), times=None)

    answer = await create(client, link_body("app_run_host", 42, 21))

    assert (answer.status, answer.code) == (200, 1101052)
    assert proxy.seen.count("abortTransaction") >= 2  # the driver retried the transaction with backoff
    assert len(await links_in(wire_mongo, "app")) == 1
    assert len(await audit_records(wire_mongo)) == 1


async def test_on_a_replica_set_an_unknown_commit_result_is_retried_and_the_link_created_once(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.replica_set = "rs0"
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy, transactions="always")
    proxy.fail("commitTransaction", UNKNOWN_COMMIT, times=1)

    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21), headers={"Idempotency-Key": "k1"})

    assert answer.code == 0
    assert proxy.seen.count("commitTransaction") == 2
    for obj_id in ("bk_switch", "host"):
        assert [link["id"] for link in await links_in(wire_mongo, obj_id)] == [answer.data["id"]]
    assert len(await audit_records(wire_mongo)) == 1


async def test_transactions_state_majority_write_concern(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.replica_set = "rs0"
    commits: list[dict[str, Any]] = []

    def record(command: dict[str, Any]) -> bool:
        commits.append(command)
        return False  # only look

    proxy.fail("commitTransaction", {}, when=record, times=None)
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy, transactions="always")

    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    assert commits
    assert commits[-1]["writeConcern"]["w"] == "majority"


async def test_a_failover_during_a_write_answers_503_and_leaves_nothing_half_done(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy, transactions="never")
    proxy.fail("insert", NOT_PRIMARY, when=lambda command: command["insert"] == "cc_InstAsst_0_pub_host", times=None)

    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))

    assert (answer.status, answer.code) == (503, 1199998)
    assert answer.headers["Retry-After"] == "1"
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await links_in(wire_mongo, "host") == []
    assert await audit_records(wire_mongo) == []


ROOT = {"bk_obj_id": "host", "bk_inst_id": 21}
READS = [
    ("search", {"bk_obj_id": "host", "page": {"limit": 10}}),
    ("count", {"bk_obj_id": "host", "condition": {}}),
    ("find", {"bk_obj_id": "host", "condition": {}}),
    ("topo", ROOT),
    ("graph", ROOT),
    ("base_info", {"condition": {**ROOT, "association_obj_id": "bk_switch", "is_target_object": True}}),
]


@pytest.mark.parametrize(("operation", "body"), READS, ids=[operation for operation, _ in READS])
async def test_mongos_without_a_primary_answers_503_not_500(
    aiohttp_client: AiohttpClient,
    wire_settings: Settings,
    wire_mongo: MongoConnection,
    proxy: FaultProxy,
    operation: str,
    body: dict[str, Any],
) -> None:
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    for command in ("find", "aggregate", "count"):
        proxy.fail(command, FAILED_TO_SATISFY_READ_PREFERENCE, times=None)

    answer = await call(client, operation, body)

    assert (answer.status, answer.code) == (503, 1199017)


async def test_a_server_without_union_with_falls_back_to_separate_reads(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    folded = replace(wire_settings, mongodb=replace(wire_settings.mongodb, fold_reads="on"))
    client, _mongo = await _app(aiohttp_client, folded, proxy)
    # The tables' first write readies them for the event feed (a change stream opened once, an aggregate too).
    assert (await create(client, link_body("bk_switch_belong_bk_host", 13, 23))).code == 0
    before = proxy.seen.count("aggregate")
    proxy.fail("aggregate", command_error(40324, "Location40324", "Unrecognized pipeline stage name: '$unionWith'"))

    first = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    second = await create(client, link_body("bk_switch_belong_bk_host", 12, 22))

    assert (first.code, second.code) == (0, 0)
    assert proxy.seen.count("aggregate") - before == 1  # refused once, then separate finds from then on


async def test_sharded_association_tables_are_refused_with_a_clear_message(
    wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.mongos = True
    namespace = f"{wire_settings.mongodb.database}.cc_InstAsst_0_pub_host"
    sharded = {"cursor": {"firstBatch": [{"_id": namespace}], "id": 0, "ns": "config.collections"}, "ok": 1.0}
    proxy.fail("find", sharded, when=lambda command: command["find"] == "collections", times=None)
    mongo = await connect(replace(wire_settings.mongodb, server_selection_timeout_ms=300), proxy.uri)
    OPENED.setdefault(proxy.port, []).append(mongo)

    with pytest.raises(ShardedTables) as refused:
        await refuse_sharded_tables(mongo, "0")

    assert refused.value.tables == ["cc_InstAsst_0_pub_host"]
    assert "must stay unsharded" in str(refused.value)


async def test_an_unsharded_database_behind_mongos_is_served(
    wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.mongos = True
    empty = {"cursor": {"firstBatch": [], "id": 0, "ns": "config.collections"}, "ok": 1.0}
    proxy.fail("find", empty, when=lambda command: command["find"] == "collections", times=None)
    mongo = await connect(replace(wire_settings.mongodb, server_selection_timeout_ms=300), proxy.uri)
    OPENED.setdefault(proxy.port, []).append(mongo)

    await refuse_sharded_tables(mongo, "0")

    assert mongo.mongos


async def test_a_write_refused_for_another_reason_than_a_duplicate_is_not_taken_for_a_race(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy, transactions="never")
    refused = write_error(13, 'not authorized on cmdb to execute command { insert: "cc_InstAsst_0_pub_host" }')
    rule = proxy.fail("insert", refused, when=lambda command: command["insert"] == "cc_InstAsst_0_pub_host", times=None)

    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))

    # Not judged again as a lost race (which would end in a false 1199014): a plain failure, nothing left.
    assert (answer.status, answer.code) == (500, 1199999)
    assert rule.hits == 1  # the refused target insert is sent once, not retried as a race
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await links_in(wire_mongo, "host") == []
    assert await audit_records(wire_mongo) == []


async def test_what_the_server_says_it_is_chooses_the_strategy_not_how_it_was_reached(
    wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    # nx-27017 reached by a plain URI (as a shared local server or a container is): separate reads.
    by_uri = await connect(wire_settings.mongodb, proxy.uri, embedded=False)
    OPENED.setdefault(proxy.port, []).append(by_uri)
    assert (by_uri.embedded, by_uri.server_kind) == (True, "nx-27017")
    assert AssociationStore(by_uri, id_block_size=10, definition_cache_seconds=0).reads.fold is False

    # A server whose buildInfo names mongod (a real MongoDB): its reads are folded into one aggregation.
    proxy.fail("buildInfo", {"ok": 1.0, "version": "7.0.14", "process": "mongod"})
    real = await connect(wire_settings.mongodb, proxy.uri, embedded=False)
    OPENED.setdefault(proxy.port, []).append(real)
    assert (real.embedded, real.version) == (False, "7.0.14")
    assert AssociationStore(real, id_block_size=10, definition_cache_seconds=0).reads.fold is True
    # An explicit setting still wins.
    assert AssociationStore(real, id_block_size=10, definition_cache_seconds=0, fold_reads="off").reads.fold is False


async def test_a_pattern_the_server_cannot_compile_answers_1199011_not_500(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    # PCRE and Python disagree at the edges: what Python compiles, a real server may still refuse (the proxy
    # answers as a server does for a pattern whose Unicode property it does not know).
    proxy.fail("find", command_error(51091, "Location51091", "Regular expression is invalid: unknown property name"),
               when=lambda command: "$regex" in str(command.get("filter")))  # fmt: skip
    rule = {"field": "bk_asst_id", "operator": "contains", "value": "bel(?=o)ng"}
    body = {"bk_obj_id": "bk_switch", "condition": {"asst_filter": {"condition": "AND", "rules": [rule]}},
            "page": {"limit": 10}}  # fmt: skip

    answer = await call(client, "links_with_instances", body)

    assert (answer.status, answer.code) == (200, 1199011)
    assert "'condition.asst_filter'" in answer.message


# A standalone mongod refuses change streams.
NO_CHANGE_STREAMS = command_error(40573, "Location40573", "The $changeStream stage is only supported on replica sets")


async def test_a_standalone_server_leaves_the_watch_501_and_everything_else_working(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.fail("aggregate", NO_CHANGE_STREAMS, when=lambda command: "$changeStream" in str(command), times=None)
    client, _mongo = await _app(aiohttp_client, replace(wire_settings, watch=WatchSettings()), proxy)
    assert client.app is not None
    watch = client.app[WATCH]
    for _ in range(300):
        if watch.available is not None:
            break
        await asyncio.sleep(0.02)

    answer = await call(client, "watch", {"bk_resource": "inst_asst"})
    created = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    ready = await (await client.get("/readyz")).json()

    assert watch.available is False
    assert (answer.status, answer.code) == (501, 1199998)
    assert created.code == 0
    assert ready == {"status": "ready", "watch": "unavailable"}


async def test_a_watch_switched_on_refuses_to_start_without_change_streams(
    wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.fail("aggregate", NO_CHANGE_STREAMS, when=lambda command: "$changeStream" in str(command), times=None)
    settings = replace(wire_settings, watch=WatchSettings(enabled="on"))
    mongodb = replace(settings.mongodb, server_selection_timeout_ms=300)
    mongo = await connect(mongodb, proxy.uri, embedded=False)
    OPENED.setdefault(proxy.port, []).append(mongo)
    runner = web.AppRunner(create_app(replace(settings, mongodb=mongodb), mongo=mongo))

    with pytest.raises(RuntimeError, match="change streams"):
        await runner.setup()
    await runner.cleanup()


async def test_a_resume_token_the_server_lost_restarts_the_feed_with_an_alarm(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    settings = replace(wire_settings, watch=WatchSettings(long_poll_seconds=2.0, rescan_seconds=0.2, lease_seconds=3))
    client, _mongo = await _app(aiohttp_client, settings, proxy)
    assert client.app is not None
    feed = client.app[WATCH].feed
    assert feed is not None
    await asyncio.wait_for(feed.live.wait(), 30)
    lost = command_error(286, "ChangeStreamHistoryLost", "Resume of change stream was not possible, as the resume "
                         "point may no longer be in the oplog.")  # fmt: skip
    failed_at: list[int] = []

    def link_table_poll(command: dict[str, Any]) -> bool:
        if not str(command.get("collection", "")).startswith("cc_InstAsst"):
            return False
        failed_at.append(len(proxy.seen))
        return True

    rule = proxy.fail("getMore", lost, when=link_table_poll)

    def reopened() -> bool:  # an aggregate (the new stream), then a getMore on it: the stream is open again
        after = proxy.seen[failed_at[0] :] if failed_at else []
        return "aggregate" in after and "getMore" in after[after.index("aggregate") :]

    with capture_logs() as logs:
        for _ in range(500):  # the embedded server starts the new stream from now: create after it is open
            if reopened():
                break
            await asyncio.sleep(0.02)
        link_id = (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
        answer = await call(client, "watch", {"bk_resource": "inst_asst", "bk_start_from": int(time.time()) - 60})
        for _ in range(50):
            if answer.data["bk_watched"]:
                break
            await asyncio.sleep(0.1)
            answer = await call(client, "watch", {"bk_resource": "inst_asst", "bk_start_from": int(time.time()) - 60})

    assert rule.hits == 1
    assert any(entry["event"] == "watch_resume_token_lost" for entry in logs)
    assert [event["bk_detail"]["id"] for event in answer.data["bk_events"]] == [link_id]  # the feed goes on


async def test_a_user_who_may_not_watch_leaves_the_watch_501_with_an_error_log_and_everything_else_working(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    refused = command_error(13, "Unauthorized", "not authorized on cmdb to execute command { aggregate: 1 }")
    proxy.fail("aggregate", refused, when=lambda command: "$changeStream" in str(command), times=None)
    with capture_logs() as logs:
        client, _mongo = await _app(aiohttp_client, replace(wire_settings, watch=WatchSettings()), proxy)
        assert client.app is not None
        watch = client.app[WATCH]
        for _ in range(300):
            if watch.available is not None:
                break
            await asyncio.sleep(0.02)

    answer = await call(client, "watch", {"bk_resource": "inst_asst"})
    created = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))

    assert watch.available is False
    assert (answer.status, answer.code) == (501, 1199998)
    assert created.code == 0
    assert [entry["event"] for entry in logs].count("watch_not_authorized") == 1


async def test_a_create_whose_deadline_expires_between_its_tables_is_undone_with_a_budget_of_its_own(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    quick = replace(wire_settings, mongodb=replace(wire_settings.mongodb, request_deadline_seconds=1.0))
    client, _mongo = await _app(aiohttp_client, quick, proxy)
    # The target table's insert: the server works on it until the client's time is spent, then gives up.
    proxy.fail("insert", MAX_TIME_EXPIRED, when=lambda doc: doc.get("insert") == "cc_InstAsst_0_pub_host", delay=1.2)

    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))

    assert (answer.status, answer.code) == (503, 1199998)
    for _ in range(100):  # the undo may outlive the answer (it is shielded from the request's end)
        if not await wire_mongo.db["cmdb_asso_journal"].count_documents({}):
            break
        await asyncio.sleep(0.05)
    assert await wire_mongo.db["cmdb_asso_journal"].count_documents({}) == 0  # undone now, not left to recovery
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await audit_records(wire_mongo) == []


async def test_the_sharding_check_that_mongodb_could_not_answer_at_start_up_runs_later_and_says_so(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    proxy.mongos = True
    namespace = f"{wire_settings.mongodb.database}.cc_InstAsst_0_pub_host"
    sharded = {"cursor": {"firstBatch": [{"_id": namespace}], "id": 0, "ns": "config.collections"}, "ok": 1.0}
    is_check = lambda command: command["find"] == "collections"  # noqa: E731
    proxy.fail("find", command_error(6, "HostUnreachable", "no route to the config servers"), when=is_check, times=2)
    proxy.fail("find", sharded, when=is_check, times=None)

    with capture_logs() as logs:
        client, _mongo = await _app(aiohttp_client, wire_settings, proxy)  # starts: MongoDB did not answer
        for _ in range(200):
            ready = await client.get("/readyz")
            if ready.status == 503 and "sharded" in (await ready.json()).get("reason", ""):
                break
            await asyncio.sleep(0.05)

    assert ready.status == 503
    assert (await ready.json())["reason"] == "association tables are sharded: cc_InstAsst_0_pub_host"
    assert [entry["tables"] for entry in logs if entry["event"] == "association_tables_sharded"] == [
        ["cc_InstAsst_0_pub_host"]
    ]


async def test_a_full_disk_answers_503_with_a_log_line_naming_the_cause_never_a_500(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection, proxy: FaultProxy
) -> None:
    client, _mongo = await _app(aiohttp_client, wire_settings, proxy)
    out_of_space = command_error(14031, "OutOfDiskSpace", "No space left on device")
    unapplied = {"ok": 1.0, "value": None, "lastErrorObject": {"n": 0, "updatedExisting": False}}

    with capture_logs() as logs:
        proxy.fail("findAndModify", unapplied)  # the id counter's update, not applied (seen on a full disk)
        counter = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
        inserts = proxy.fail("insert", out_of_space, times=None)
        probes = proxy.fail(
            "update", out_of_space, when=lambda doc: doc.get("update") == "cmdb_asso_Readiness", times=None
        )
        insert = await create(client, link_body("bk_switch_belong_bk_host", 12, 22))
        full = await client.get("/readyz")
        full_again = await client.get("/readyz")
        proxy.rules.remove(inserts)  # space freed
        proxy.rules.remove(probes)
        freed = await client.get("/readyz")
        after = await create(client, link_body("bk_switch_belong_bk_host", 12, 22))

    assert (counter.status, counter.code) == (503, 1199998)
    assert (insert.status, insert.code) == (503, 1199998)
    assert (full.status, (await full.json())["reason"]) == (503, "mongodb: out of disk space (writes are refused)")
    assert full_again.status == 503  # still full: the probe's own write was refused
    assert (freed.status, after.code) == (200, 0)
    events = [entry["event"] for entry in logs]
    assert "id_counter_not_updated" in events
    assert "mongodb_out_of_disk_space" in events
    assert [link["bk_asst_inst_id"] for link in await links_in(wire_mongo, "bk_switch")] == [22]
