"""Link events (CONTRACT-reads 14 and 15) over the real driver and the embedded server's change streams: exactly
one event per link change, bk-cmdb's cursors, the three modes, and the checks."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.__main__ import follow_events
from cmdb_asso.app import create_app
from cmdb_asso.client import AssociationClient
from cmdb_asso.clock import utc_now
from cmdb_asso.config import Settings, WatchSettings
from cmdb_asso.keys import DRAINING, SERVICE, WATCH
from cmdb_asso.service.associations import MappingRules, link_audit
from cmdb_asso.service.context import Caller
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.service.watch import NO_EVENT_CURSOR, EventFeed
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import archive_document, stored_link_from
from cmdb_asso.storage.schema import seed_demo
from cmdb_asso.storage.watch import CHAIN, ChangeSource, LinkChange, StreamStalled
from tests.conftest import AiohttpClient
from tests.helpers import Answer, add_definition, call, create, link_body
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
DETAIL_KEYS = ["bk_asst_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_biz_id", "bk_inst_id", "bk_obj_asst_id",
               "bk_obj_id", "bk_supplier_account", "id"]  # fmt: skip


@pytest.fixture
def watch_settings(wire_settings: Settings) -> Settings:
    """The feed on, quick to find new tables, quick to find a stream that stopped delivering, and a short long
    poll. (On the embedded server a stream now and then stops after a test that wrote thousands of changes to
    tables of the same names in another database: the feed then starts again, as in production.)"""
    watch = WatchSettings(long_poll_seconds=2.0, rescan_seconds=0.2, lease_seconds=3, stall_seconds=2.0)
    # A budget of their own: thousands of concurrent writes take longer than the default 10 s on a loaded machine.
    mongodb = replace(wire_settings.mongodb, request_deadline_seconds=30, recovery_grace_seconds=60)
    return replace(wire_settings, watch=watch, mongodb=mongodb)


async def _live_client(aiohttp_client: AiohttpClient, settings: Settings, mongo: MongoConnection, **kw: Any) -> Client:
    client = await aiohttp_client(create_app(settings, mongo=mongo, **kw))
    assert client.app is not None
    feed = client.app[WATCH].feed
    assert feed is not None
    await asyncio.wait_for(feed.live.wait(), 30)
    return client


async def _following(aiohttp_client: AiohttpClient, settings: Settings, mongo: MongoConnection) -> tuple[Client, str]:
    """A live app with one link created and its event followed: the app and the cursor after that event."""
    client = await _live_client(aiohttp_client, settings, mongo)
    await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    _, cursor = await _events_until(client, NO_EVENT_CURSOR, 1)
    return client, cursor


@pytest.fixture
async def watcher(wire_mongo: MongoConnection, aiohttp_client: AiohttpClient, watch_settings: Settings) -> Client:
    """The app over the embedded server with its feeder running."""
    return await _live_client(aiohttp_client, watch_settings, wire_mongo)


async def watch(client: Client, spelling: str = "native", user: str = "admin", **body: Any) -> Answer:
    """Ask for link events."""
    return await call(client, "watch", {"bk_resource": "inst_asst", **body}, spelling=spelling, user=user)


async def _events_until(
    client: Client, cursor: str, count: int, rounds: int = 100, **body: Any
) -> tuple[list[dict[str, Any]], str]:
    """Follow the stream from `cursor` until `count` events came (each call a long poll, at most `rounds`)."""
    events: list[dict[str, Any]] = []
    for _ in range(rounds):
        answer = await watch(client, bk_cursor=cursor, **body)
        assert answer.code == 0, answer
        if answer.data["bk_watched"]:
            events += answer.data["bk_events"]
        cursor = answer.data["bk_events"][-1]["bk_cursor"]
        if len(events) >= count:
            return events, cursor
    raise AssertionError(f"only {len(events)} events came")


def _decoded(cursor: str) -> list[str]:
    return base64.b64decode(cursor).decode().split("\r")


async def test_one_event_per_link_change_with_bk_cmdbs_cursor_and_details(watcher: Client) -> None:
    start = await watch(watcher)
    nothing = {"bk_cursor": NO_EVENT_CURSOR, "bk_resource": "inst_asst", "bk_event_type": "", "bk_detail": None}
    assert start.data == {"bk_watched": False, "bk_events": [nothing]}

    link_id = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    delete = await call(watcher, "delete", {"bk_obj_id": "bk_switch", "id": link_id})
    assert delete.code == 0
    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, 2)

    assert [event["bk_event_type"] for event in events] == ["create", "delete"]  # once each, not once per table
    created, deleted = (event["bk_detail"] for event in events)
    assert list(created) == sorted([*DETAIL_KEYS, "_id"])
    assert len(created["_id"]) == 24
    assert list(deleted) == DETAIL_KEYS
    assert {k: v for k, v in created.items() if k != "_id"} == deleted
    assert (deleted["id"], deleted["bk_inst_id"], deleted["bk_asst_inst_id"]) == (link_id, 11, 21)
    version, kind, oid, operation, sec, inc, unique = _decoded(events[0]["bk_cursor"])
    assert (version, kind, oid, operation, unique) == ("1", "13", str(link_id), "insert", str(link_id))
    assert abs(int(sec) - time.time()) < 120
    assert int(inc) >= 1
    assert _decoded(events[1]["bk_cursor"])[3] == "delete"


async def test_a_cursor_continues_and_a_long_poll_wakes_on_news(watcher: Client) -> None:
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    first, cursor = await _events_until(watcher, NO_EVENT_CURSOR, 1)

    waiting = asyncio.create_task(watch(watcher, bk_cursor=cursor))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # nothing new: the call waits
    await create(watcher, link_body("bk_switch_belong_bk_host", 12, 22))
    answer = await asyncio.wait_for(waiting, 10)

    assert answer.data["bk_watched"] is True
    assert [event["bk_detail"]["bk_inst_id"] for event in answer.data["bk_events"]] == [12]
    again = await watch(watcher, bk_cursor=answer.data["bk_events"][-1]["bk_cursor"])
    assert again.data["bk_watched"] is False  # the deadline passed with nothing new
    assert again.data["bk_events"][0]["bk_cursor"] == answer.data["bk_events"][-1]["bk_cursor"]
    assert first[0]["bk_detail"]["bk_inst_id"] == 11


async def test_in_the_feeding_process_a_long_poll_is_woken_by_the_storing_not_by_the_poll(
    wire_mongo: MongoConnection,
    aiohttp_client: AiohttpClient,
    watch_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The newest-event reader of the feeding process waits for the feeder's news: with its poll and the long
    poll made a minute long, the event reaches the long poll that was waiting for it long before either ends."""
    patient = replace(watch_settings, watch=replace(watch_settings.watch, long_poll_seconds=60))
    watcher, cursor = await _following(aiohttp_client, patient, wire_mongo)
    monkeypatch.setattr("cmdb_asso.service.watch.POLL_SECONDS", 60.0)
    assert watcher.app is not None
    newest = watcher.app[WATCH].newest
    await newest.close()  # the reader starts again, with the long poll
    read, read_newest = asyncio.Event(), newest.store.newest

    async def reading() -> tuple[int, str] | None:
        found: tuple[int, str] | None = await read_newest()
        read.set()
        return found

    monkeypatch.setattr(newest.store, "newest", reading)
    waiting = asyncio.create_task(watch(watcher, bk_cursor=cursor))
    await asyncio.wait_for(read.wait(), 30)  # the reader has read the newest id once and now waits
    await create(watcher, link_body("bk_switch_belong_bk_host", 12, 22))
    answer = await asyncio.wait_for(waiting, 30)

    assert answer.code == 0, answer
    assert [event["bk_detail"]["bk_inst_id"] for event in answer.data["bk_events"]] == [12]


async def test_filters_fields_and_start_time(watcher: Client) -> None:
    before = int(time.time())
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    await create(watcher, link_body("bk_router_connect_bk_switch", 31, 12))
    await _events_until(watcher, NO_EVENT_CURSOR, 2)

    hosts = await watch(watcher, bk_cursor=NO_EVENT_CURSOR, bk_filter={"bk_sub_resource": "host"},
                        bk_fields=["bk_inst_id", "bk_inst_id", "_id", "nope.deeper"])  # fmt: skip
    deletes = await watch(watcher, bk_start_from=before, bk_event_types=["delete", "update"])
    since = await watch(watcher, bk_start_from=before)
    now = await watch(watcher)

    assert [event["bk_detail"] for event in hosts.data["bk_events"]] == [
        {"bk_inst_id": 11, "_id": hosts.data["bk_events"][0]["bk_detail"]["_id"], "nope.deeper": None}
    ]
    assert deletes.data["bk_watched"] is False
    assert [event["bk_detail"]["bk_inst_id"] for event in since.data["bk_events"]] == [11, 31]
    assert now.data["bk_watched"] is False  # from now never hands back a past event
    assert now.data["bk_events"][0]["bk_cursor"] == since.data["bk_events"][-1]["bk_cursor"]


@pytest.mark.parametrize(
    ("body", "code", "argument"),
    [
        ({"bk_cursor": 5}, 1199000, None),
        ({"bk_start_from": 1.5}, 1199000, None),
        ({"bk_event_types": ["create", 1]}, 1199000, None),
        ({"bk_filter": "host"}, 1199000, None),
        ({"bk_resource": "host"}, 1199011, "bk_resource"),
        ({"bk_filter": {"bk_sub_resource": "nope"}}, 1199011, "bk_filter.bk_sub_resource"),
        ({"bk_event_types": ["create", "insert"]}, 1199006, "bk_event_types"),
        ({"bk_start_from": 1, "bk_cursor": NO_EVENT_CURSOR}, 1199006, "bk_cursor"),
        ({"bk_start_from": int(time.time()) + 3600}, 1199006, "bk_start_from"),
        ({"bk_start_from": 1}, 1199006, "bk_start_from"),
        ({"bk_cursor": "bm90IG9ucw=="}, 1103007, None),
    ],
)
async def test_each_check_answers_with_its_code_after_a_pause(
    watcher: Client, body: dict[str, Any], code: int, argument: str | None
) -> None:
    started = time.monotonic()
    answer = await watch(watcher, spelling="esb", **body)

    assert (answer.status, answer.code) == (200, code), answer
    if argument:
        assert f"'{argument}'" in answer.message
    assert time.monotonic() - started >= 0.5


async def test_the_legacy_no_event_cursor_and_an_expired_cursor(watcher: Client, wire_mongo: MongoConnection) -> None:
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    await create(watcher, link_body("bk_switch_belong_bk_host", 12, 21))
    events, newest = await _events_until(watcher, "MQ0xDTVlYTZkM2YzOTRjMWY1ZDk4NmU5YmQ4Ng1ub0V2ZW50DTENMQ==", 2)
    assert len(events) == 2
    for _ in range(400):  # the feeder records the newest event just after storing it: a reader may be quicker
        recorded = await wire_mongo.db["cmdb_asso_WatchToken"].find_one({"_id": "cc_InstAsst"})
        if recorded and recorded.get("newest_cursor") == newest:
            break
        await asyncio.sleep(0.05)
    # Every event expired: the oldest cursor is unknown now, the newest one still continues.
    await wire_mongo.db[CHAIN].update_many({}, {"$set": {"time": 0}})

    expired = await watch(watcher, bk_cursor=events[0]["bk_cursor"])
    caught_up = await watch(watcher, bk_cursor=newest)

    assert expired.code == 1103007
    assert caught_up.code == 0
    assert caught_up.data["bk_events"][0]["bk_cursor"] == NO_EVENT_CURSOR  # nothing inside the retention


async def test_a_second_process_does_not_feed_and_a_replay_adds_nothing(
    wire_mongo: MongoConnection, aiohttp_client: AiohttpClient, watcher: Client, watch_settings: Settings
) -> None:
    other = await aiohttp_client(create_app(watch_settings, mongo=wire_mongo))
    assert other.app is not None
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    events, _ = await _events_until(other, NO_EVENT_CURSOR, 1)  # read through the process that does not feed
    feed = other.app[WATCH].feed
    assert feed is not None
    assert not feed.live.is_set()  # the first process holds the lease

    # A replay of every change the server kept (a restart from an old token) stores nothing new.
    replayed = EventFeed(feed.store)
    tables = await feed.store.link_tables()
    source = ChangeSource(feed.store, per_table=True)
    batches = source.batches({table: {"_data": "nx:0"} for table in tables})
    changes, _tokens = await anext(batches)
    await batches.aclose()
    assert len(changes) == 2  # the link's two halves
    assert await replayed.store.append(await replayed._rows(changes)) == []
    assert await wire_mongo.db[CHAIN].count_documents({}) == len(events) == 1

    await watcher.close()  # the feeder stops and gives its lease up: the other process takes over
    await asyncio.wait_for(feed.live.wait(), 10)
    later = (await create(other, link_body("bk_switch_belong_bk_host", 12, 22))).data["id"]
    taken_over, _ = await _events_until(other, events[0]["bk_cursor"], 1)
    assert [event["bk_detail"]["id"] for event in taken_over] == [later]


async def test_watch_permission_names_the_model(
    wire_mongo: MongoConnection, aiohttp_client: AiohttpClient, watch_settings: Settings
) -> None:
    policy = StaticPolicy({"eve": UserGrants(watch=frozenset({"host"})), "ann": UserGrants(watch=frozenset({"*"}))})
    client = await _live_client(aiohttp_client, watch_settings, wire_mongo, authorizer=policy)

    everything = await watch(client, user="eve")
    hosts = await watch(client, user="eve", bk_filter={"bk_sub_resource": "host"})
    switches = await watch(client, user="eve", bk_filter={"bk_sub_resource": "bk_switch"})

    assert everything.code == 9900403
    assert "instances" not in everything.permission["actions"][0]["related_resource_types"][0]
    assert hosts.code == 0
    assert switches.code == 9900403
    (action,) = switches.permission["actions"]
    assert (action["id"], action["name"]) == ("watch_inst_asst_event", "实例关联事件监听")
    row = await wire_mongo.db["cc_ObjDes"].find_one({"bk_obj_id": "bk_switch"})
    assert row is not None
    assert action["related_resource_types"][0]["instances"] == [
        [{"type": "inst_asst_event", "type_name": "实例关联事件", "id": str(row["id"]), "name": row["bk_obj_name"]}]
    ]
    assert (await watch(client, user="ann")).code == 0


async def test_a_delete_without_its_archive_copy_is_dropped_and_counted(
    watcher: Client, wire_mongo: MongoConnection
) -> None:
    link_id = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    _, cursor = await _events_until(watcher, NO_EVENT_CURSOR, 1)
    for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"):  # a writer that does not archive
        await wire_mongo.db[table].delete_one({"id": link_id})
    second = (await create(watcher, link_body("bk_switch_belong_bk_host", 12, 22))).data["id"]

    events, _ = await _events_until(watcher, cursor, 1)
    metrics = await (await watcher.get("/metrics")).text()

    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in events] == [("create", second)]
    assert "cmdb_asso_watch_deletes_dropped_total 2.0" in metrics
    assert "cmdb_asso_watch_events_stored_total 2.0" in metrics


async def test_batches_and_delete_many_appear_once_each_in_commit_order(watcher: Client) -> None:
    batch = await call(watcher, "create_many", {
        "bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
        "details": [{"bk_inst_id": 11, "bk_asst_inst_id": host} for host in (21, 22, 23)]})  # fmt: skip
    created = [batch.data["success_created"][str(index)] for index in range(3)]
    single = (await create(watcher, link_body("bk_router_connect_bk_switch", 31, 11))).data["id"]
    removed = await call(watcher, "delete_many", {"bk_obj_id": "host", "id": created[:2]})
    assert removed.data == 2

    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, 6)

    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in events] == [
        ("create", created[0]), ("create", created[1]), ("create", created[2]), ("create", single),
        ("delete", created[0]), ("delete", created[1]),
    ]  # fmt: skip


async def test_links_created_and_deleted_before_the_feed_opens_their_new_tables_still_give_their_events(
    watcher: Client, wire_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded server records a table's changes only while it is tracked: tables a writer made and changed
    before the feeder looked at them (a busy feeder, a slow rescan) still give every create and delete."""
    await seed_demo(wire_mongo, "tenant2")  # a second supplier, whose link tables do not exist yet
    tenant = {"X-Bkcmdb-Supplier-Account": "tenant2"}
    writes_done = asyncio.Event()
    open_missing = ChangeSource._open_missing

    async def after_the_writes(source: ChangeSource, tokens: dict[str, Any]) -> None:
        await writes_done.wait()
        await open_missing(source, tokens)

    monkeypatch.setattr(ChangeSource, "_open_missing", after_the_writes)
    batch = await call(watcher, "create_many", {
        "bk_obj_id": "bk_router", "bk_asst_obj_id": "bk_switch", "bk_obj_asst_id": "bk_router_connect_bk_switch",
        "details": [{"bk_inst_id": 31, "bk_asst_inst_id": switch} for switch in (11, 12, 13)]},
        headers=tenant)  # fmt: skip
    assert batch.code == 0, batch
    assert len(batch.data["success_created"]) == 3, batch.body
    created = [batch.data["success_created"][str(index)] for index in range(3)]
    removed = await call(watcher, "delete_many", {"bk_obj_id": "bk_switch", "id": created[:2]}, headers=tenant)
    assert (removed.code, removed.data) == (0, 2)
    writes_done.set()

    events = await _tenant_events_until(watcher, tenant, 5)

    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in events] == [
        ("create", created[0]), ("create", created[1]), ("create", created[2]),
        ("delete", created[0]), ("delete", created[1]),
    ]  # fmt: skip


async def _tenant_events_until(client: Client, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = NO_EVENT_CURSOR
    for _ in range(20):
        answer = await call(client, "watch", {"bk_resource": "inst_asst", "bk_cursor": cursor}, headers=headers)
        assert answer.code == 0, answer
        if answer.data["bk_watched"]:
            events += answer.data["bk_events"]
        cursor = answer.data["bk_events"][-1]["bk_cursor"]
        if len(events) >= count:
            return events
    raise AssertionError(f"only {len(events)} events came: {events}")


async def test_a_slow_round_is_no_stalled_stream(watcher: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link written while the feeder spends longer than `stall_seconds` on a round is reported by the next
    round's read of its stream: the feed does not start again (which replays, and once lost removals)."""
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    slow, rows = asyncio.Event(), EventFeed._rows

    async def slow_rows(self: EventFeed, changes: list[Any]) -> list[dict[str, Any]]:
        found = await rows(self, changes)
        if changes and not slow.is_set():
            slow.set()
            await asyncio.sleep(3 * feed.stall_seconds)  # the second link is written meanwhile
        return found

    monkeypatch.setattr(EventFeed, "_rows", slow_rows)
    first = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    await slow.wait()
    second = (await create(watcher, link_body("bk_switch_belong_bk_host", 12, 22))).data["id"]

    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, 2, rounds=30)

    assert [event["bk_detail"]["id"] for event in events] == [first, second]
    assert feed.restarts == 0


async def test_after_a_stalled_stream_the_changes_it_recorded_are_replayed_with_its_table(
    watcher: Client, wire_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link created and deleted while its table's stream did not deliver: the feed starts again from the
    stream's saved token (and reads the table whole), so neither change is lost. (A link between hosts: one table,
    whose stream alone records it.)"""
    await add_definition(wire_mongo, "host_connect_host", "host", "connect", "host", "n:n")
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    await _events_until(watcher, NO_EVENT_CURSOR, 1)
    silent, stall = asyncio.Event(), asyncio.Event()
    drain, check = ChangeSource._drain, ChangeSource._check_stalls

    async def maybe_silent(source: ChangeSource, name: str, stream: Any, tokens: dict[str, Any]) -> list[Any]:
        # Silent until the feed started again (with new streams, which a driver opens at their first read).
        return [] if silent.is_set() and feed.restarts == 0 else await drain(source, name, stream, tokens)

    async def stalled_when_told(source: ChangeSource) -> None:
        if stall.is_set():
            stall.clear()
            raise StreamStalled("cc_InstAsst_0_pub_host")
        await check(source)

    monkeypatch.setattr(ChangeSource, "_drain", maybe_silent)
    monkeypatch.setattr(ChangeSource, "_check_stalls", stalled_when_told)
    silent.set()
    made = await create(watcher, link_body("host_connect_host", 21, 22))
    assert made.code == 0, made
    link_id = made.data["id"]
    removed = await call(watcher, "delete", {"bk_obj_id": "host", "id": link_id})
    assert removed.code == 0, removed
    stall.set()

    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, 3, rounds=30)

    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in events[1:]] == [
        ("create", link_id),
        ("delete", link_id),
    ]


async def test_a_cursor_resumes_after_a_restart_with_nothing_lost_or_repeated(
    wire_mongo: MongoConnection, aiohttp_client: AiohttpClient, watch_settings: Settings
) -> None:
    first = await _live_client(aiohttp_client, watch_settings, wire_mongo)
    before = (await create(first, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    _, cursor = await _events_until(first, NO_EVENT_CURSOR, 1)
    await first.close()  # the service stops; its feeder saved where it was
    # Meanwhile bk-cmdb writes a link of its own, to both tables.
    written = {"id": 9001, "bk_inst_id": 12, "bk_obj_id": "bk_switch", "bk_asst_inst_id": 22, "bk_asst_obj_id": "host",
               "bk_supplier_account": "0", "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong",
               "bk_biz_id": 0}  # fmt: skip
    for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"):
        await wire_mongo.db[table].insert_one(dict(written))

    second = await _live_client(aiohttp_client, watch_settings, wire_mongo)
    after = (await create(second, link_body("bk_switch_belong_bk_host", 13, 23))).data["id"]
    events, _ = await _events_until(second, cursor, 2)

    assert [event["bk_detail"]["id"] for event in events] == [9001, after]
    assert before not in [event["bk_detail"]["id"] for event in events]
    assert await wire_mongo.db[CHAIN].count_documents({}) == 3


async def test_callers_see_their_own_suppliers_events_only(watcher: Client, wire_mongo: MongoConnection) -> None:
    theirs = {"id": 9100, "bk_inst_id": 1, "bk_obj_id": "bk_switch", "bk_asst_inst_id": 2,
              "bk_asst_obj_id": "host", "bk_supplier_account": "tenant2",
              "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong"}  # fmt: skip
    for table in ("cc_InstAsst_tenant2_pub_bk_switch", "cc_InstAsst_tenant2_pub_host"):  # tables new to the feed
        await wire_mongo.db[table].insert_one(dict(theirs))
    ours = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    await _events_until(watcher, NO_EVENT_CURSOR, 1)
    for _ in range(100):  # until the feeder found the new tables and stored their event too
        if await wire_mongo.db[CHAIN].count_documents({}) == 2:
            break
        await asyncio.sleep(0.05)

    default = await watch(watcher, bk_cursor=NO_EVENT_CURSOR)
    tenant = await call(watcher, "watch", {"bk_resource": "inst_asst", "bk_cursor": NO_EVENT_CURSOR},
                        headers={"X-Bkcmdb-Supplier-Account": "tenant2"})  # fmt: skip

    assert [event["bk_detail"]["id"] for event in default.data["bk_events"]] == [ours]
    assert sorted(event["bk_detail"]["id"] for event in tenant.data["bk_events"]) == [ours, 9100]


async def test_a_new_table_of_many_links_is_read_a_page_at_a_time_and_announced_once_each(
    watcher: Client, wire_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table that appears with 450 links (written by another writer before the feed saw the table): every
    link gets its one create event, and no read of the table asks for more than a page."""
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    rounds: list[int] = []
    rows = feed._rows

    async def counted(changes: Any) -> list[dict[str, Any]]:
        rounds.append(sum(change.table == "cc_InstAsst_paged_pub_host" for change in changes))
        found: list[dict[str, Any]] = await rows(changes)
        return found

    monkeypatch.setattr(feed, "_rows", counted)
    links = [{"id": 9500 + n, "bk_inst_id": n, "bk_obj_id": "bk_switch", "bk_asst_inst_id": n, "bk_asst_obj_id": "host",
              "bk_supplier_account": "paged", "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong"}
             for n in range(450)]  # fmt: skip
    await wire_mongo.db["cc_InstAsst_paged_pub_host"].insert_many(links)

    async with feed.stored:  # checked under the condition's lock: no notification is missed
        while await wire_mongo.db[CHAIN].count_documents({"bk_supplier_account": "paged"}) < 450:
            await asyncio.wait_for(feed.stored.wait(), 30)
    ids = [doc["inst_id"] for doc in await wire_mongo.db[CHAIN].find({"bk_supplier_account": "paged"}).to_list(None)]

    assert sorted(ids) == [9500 + n for n in range(450)]
    assert max(rounds) <= 200  # a page of the table per round, never the whole table


async def test_superadmin_is_a_grant_of_the_policy_not_a_supplier_header(
    aiohttp_client: AiohttpClient, watch_settings: Settings, wire_mongo: MongoConnection
) -> None:
    policy = StaticPolicy({"root": UserGrants(watch=frozenset({"*"}), all_suppliers=True),
                           "eve": UserGrants(watch=frozenset({"*"}))})  # fmt: skip
    watcher = await _live_client(aiohttp_client, watch_settings, wire_mongo, authorizer=policy)
    theirs = {"id": 9200, "bk_inst_id": 1, "bk_obj_id": "bk_switch", "bk_asst_inst_id": 2,
              "bk_asst_obj_id": "host", "bk_supplier_account": "acme",
              "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong"}  # fmt: skip
    for table in ("cc_InstAsst_acme_pub_bk_switch", "cc_InstAsst_acme_pub_host"):
        await wire_mongo.db[table].insert_one(dict(theirs))
    for _ in range(200):  # until the feeder found the new tables and stored the event
        if await wire_mongo.db[CHAIN].count_documents({}) == 1:
            break
        await asyncio.sleep(0.05)
    body = {"bk_resource": "inst_asst", "bk_cursor": NO_EVENT_CURSOR}
    header = {"X-Bkcmdb-Supplier-Account": "superadmin"}

    forged = await call(watcher, "watch", body, user="eve", headers=header)
    granted = await call(watcher, "watch", body, user="root")

    assert forged.code == 0
    assert granted.code == 0
    assert forged.data["bk_watched"] is False  # no event of supplier "0" or "superadmin"
    assert [event["bk_detail"]["id"] for event in granted.data["bk_events"]] == [9200]


async def test_the_stream_equals_the_tables_after_thousands_of_concurrent_writes(
    watcher: Client, wire_mongo: MongoConnection
) -> None:
    await add_instances(wire_mongo, "bk_switch", range(1000, 1040))
    await add_instances(wire_mongo, "host", range(2000, 2050))

    async def batch(source: int) -> list[int]:
        answer = await call(watcher, "create_many", {
            "bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
            "details": [{"bk_inst_id": source, "bk_asst_inst_id": host} for host in range(2000, 2050)]})  # fmt: skip
        return list(answer.data["success_created"].values())

    async def singles(source: int) -> list[int]:
        ids = []
        for host in range(2000, 2050):
            ids.append((await create(watcher, link_body("bk_switch_belong_bk_host", source, host))).data["id"])
        return ids

    made = await asyncio.gather(*(batch(source) for source in range(1000, 1030)),
                                *(singles(source) for source in range(1030, 1034)))  # fmt: skip
    created = [link_id for ids in made for link_id in ids]
    removed = created[::7]
    for start in range(0, len(removed), 200):
        await call(watcher, "delete_many", {"bk_obj_id": "bk_switch", "id": removed[start : start + 200]})

    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, len(created) + len(removed))

    kinds = [(event["bk_event_type"], event["bk_detail"]["id"]) for event in events]
    assert len(kinds) == len(set(kinds)) == len(created) + len(removed) == 1700 + 243
    live = {link_id for kind, link_id in kinds if kind == "create"} - {i for kind, i in kinds if kind == "delete"}
    stored = {doc["id"] for doc in await wire_mongo.db["cc_InstAsst_0_pub_bk_switch"].find({}, {"id": 1}).to_list(None)}
    assert live == stored


async def test_the_watch_command_prints_events_and_resumes_from_its_cursor_file(
    watcher: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cursor_file = tmp_path / "links.cursor"
    args = argparse.Namespace(cursor_file=cursor_file, start_from=int(time.time()) - 5, event_types="create",
                              fields="id,bk_inst_id", sub_resource="")  # fmt: skip
    url = str(watcher.make_url("")).rstrip("/")

    async def follow_until_printed(lines: int) -> list[dict[str, Any]]:
        stop = asyncio.Event()
        async with AssociationClient(url) as client:
            following = asyncio.create_task(follow_events(client, args, stop))
            printed: list[str] = []
            for _ in range(400):
                # The service's own log lines share stdout in this test: the events are the JSON lines.
                printed += [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"bk_cursor"')]
                if len(printed) >= lines:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(following, 10)
        return [orjson.loads(line) for line in printed]

    first = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    before = await follow_until_printed(1)
    second = (await create(watcher, link_body("bk_switch_belong_bk_host", 12, 22))).data["id"]
    after = await follow_until_printed(1)

    assert [event["bk_detail"] for event in before] == [{"id": first, "bk_inst_id": 11}]
    assert [event["bk_detail"] for event in after] == [{"id": second, "bk_inst_id": 12}]
    assert cursor_file.read_text() == after[0]["bk_cursor"]


async def test_a_long_poll_answers_at_once_when_the_service_starts_draining(
    wire_mongo: MongoConnection, aiohttp_client: AiohttpClient, watch_settings: Settings
) -> None:
    patient = replace(watch_settings, watch=replace(watch_settings.watch, long_poll_seconds=30))
    watcher, cursor = await _following(aiohttp_client, patient, wire_mongo)
    assert watcher.app is not None
    waiting = asyncio.create_task(watch(watcher, bk_cursor=cursor))
    await asyncio.sleep(0.3)
    assert not waiting.done()

    watcher.app[DRAINING].set()
    answer = await asyncio.wait_for(waiting, 2)  # not the rest of its 30 s

    assert answer.code == 0
    assert answer.data["bk_watched"] is False
    assert answer.data["bk_events"][0]["bk_cursor"] == cursor


async def test_fifty_long_polls_share_one_reader_and_one_more_past_the_bound_answers_503(
    aiohttp_client: AiohttpClient, watch_settings: Settings, wire_mongo: MongoConnection
) -> None:
    settings = replace(watch_settings, limits=replace(watch_settings.limits, long_polls_in_flight=50))
    watcher, cursor = await _following(aiohttp_client, settings, wire_mongo)
    assert watcher.app is not None
    before = wire_mongo.commands.by_name.get("find", 0)

    async def poll() -> Answer:
        return await watch(watcher, bk_cursor=cursor)

    polls = [asyncio.create_task(poll()) for _ in range(50)]
    for _ in range(3000):  # until every poll waits
        if watcher.app[WATCH].long_polls.in_flight == 50:
            break
        await asyncio.sleep(0.01)
    refused = await watch(watcher, bk_cursor=cursor)
    answers = await asyncio.gather(*polls)

    assert (refused.status, refused.code, refused.headers["Retry-After"]) == (503, 1199998, "1")
    for answer in answers:
        assert answer.code == 0
        assert answer.data["bk_watched"] is False
    # Each poll reads its cursor, the events, then the newest event and the events once more, and its answer;
    # while they wait (2 s), one reader of the newest event serves all fifty (before: each poll read the events
    # every 0.25 s, 400 reads more).
    finds = wire_mongo.commands.by_name.get("find", 0) - before
    assert finds <= 50 * 5 + watcher.app[WATCH].newest.reads, finds
    assert watcher.app[WATCH].newest.reads <= 2 * 2 / 0.25


async def test_a_create_many_undone_by_the_store_gives_exactly_the_events_of_the_links_that_exist(
    watcher: Client, wire_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert watcher.app is not None
    writer = watcher.app[SERVICE].store.writer
    undo = writer._undo

    async def slow_undo(insert: Any) -> None:
        # The feeder reads the batch's rows before they are undone (its busy round is 0.1 s), as under load.
        await asyncio.sleep(0.3)
        await undo(insert)

    monkeypatch.setattr(writer, "_undo", slow_undo)
    await add_instances(wire_mongo, "host", range(3000, 3100))
    # Half a link, in the host table only (a crash, or another writer): the switch table takes a batch that
    # repeats it, the host table refuses that row, and the batch is undone, then written again one by one.
    half = {"id": Int64(99_999), "bk_obj_id": "bk_switch", "bk_inst_id": Int64(11), "bk_asst_obj_id": "host",
            "bk_asst_inst_id": Int64(3000), "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong",
            "bk_supplier_account": "0"}  # fmt: skip
    await wire_mongo.db["cc_InstAsst_0_pub_host"].insert_one(half)
    for batch in range(3):
        hosts = [3000, *range(3001 + batch * 9, 3010 + batch * 9)]
        answer = await call(watcher, "create_many", {
            "bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
            "details": [{"bk_inst_id": 11, "bk_asst_inst_id": host} for host in hosts]})  # fmt: skip
        assert answer.code == 0, answer
        assert len(answer.data["success_created"]) == 9, answer.data
    marker = await create(watcher, link_body("bk_router_connect_bk_switch", 31, 11))
    assert marker.code == 0
    switch_table = wire_mongo.db["cc_InstAsst_0_pub_bk_switch"]
    linked = {doc["id"] for doc in await switch_table.find({"bk_asst_obj_id": "host"}, {"id": 1}).to_list(None)}
    assert len(linked) == 27

    events: list[dict[str, Any]] = []
    cursor = NO_EVENT_CURSOR
    while marker.data["id"] not in {event["bk_detail"]["id"] for event in events}:
        more, cursor = await _events_until(watcher, cursor, 1)
        events += more

    assert {event["bk_event_type"] for event in events} == {"create"}
    announced = [event["bk_detail"]["id"] for event in events if event["bk_detail"]["id"] != marker.data["id"]]
    assert sorted(announced) == sorted({*linked, 99_999})  # no link that never existed, none twice
    assert watcher.app[WATCH].feed is not None
    assert watcher.app[WATCH].feed.dropped_deletes == 0  # the undoing of a batch is no delete either


async def test_events_follow_the_commit_order_across_tables_when_a_round_is_cut(
    watcher: Client, wire_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    await add_instances(wire_mongo, "host", range(4000, 4450))
    # The feeder stops storing while the writes pile up (its streams stay open), as under load.
    go_on = asyncio.Event()
    append = feed.store.append

    async def held_append(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await go_on.wait()
        stored: list[dict[str, Any]] = await append(rows)
        return stored

    monkeypatch.setattr(feed.store, "append", held_append)
    links: list[int] = []
    for start in range(4000, 4450, 150):
        answer = await call(watcher, "create_many", {
            "bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
            "details": [{"bk_inst_id": 11, "bk_asst_inst_id": h} for h in range(start, start + 150)]})  # fmt: skip
        assert answer.code == 0, answer
        links += [answer.data["success_created"][str(index)] for index in range(150)]
    last = await create(watcher, link_body("bk_router_connect_bk_switch", 31, 11))  # the router table's only change
    assert last.code == 0
    go_on.set()

    events, _ = await _events_until(watcher, NO_EVENT_CURSOR, len(links) + 1)

    assert [event["bk_detail"]["id"] for event in events] == [*links, last.data["id"]]


class _SilentStream:
    """A change stream that stopped delivering (as after a server restart): open, but never reporting."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    async def try_next(self) -> None:
        return None

    @property
    def resume_token(self) -> Any:
        return self.stream.resume_token

    async def close(self) -> None:
        await self.stream.close()


async def test_a_stream_that_stops_delivering_is_found_reopened_and_reported(
    aiohttp_client: AiohttpClient,
    watch_settings: Settings,
    wire_mongo: MongoConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = ChangeSource._open
    silenced: list[str] = []

    async def open_silent_first(source: ChangeSource, name: str, token: Any, *, back: bool = False) -> Any:
        stream = await opened(source, name, token, back=back)
        if name.startswith("cc_InstAsst_0_") and name not in silenced:  # the first stream of each table is silent
            silenced.append(name)
            assert await stream.try_next() is None  # read once, as the feed does at once: nothing is written yet
            return _SilentStream(stream)
        return stream

    monkeypatch.setattr(ChangeSource, "_open", open_silent_first)
    settings = replace(watch_settings, watch=replace(watch_settings.watch, stall_seconds=1.5, lease_seconds=1.5))
    watcher = await _live_client(aiohttp_client, settings, wire_mongo)
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    await add_instances(wire_mongo, "host", range(5000, 5100))

    created: list[int] = []
    events: list[dict[str, Any]] = []
    cursor = NO_EVENT_CURSOR
    for host in range(5000, 5100):  # writes go on, as in a live system, until the feed reports them again
        made = await create(watcher, link_body("bk_switch_belong_bk_host", 11, host))
        assert made.code == 0, made
        created.append(made.data["id"])
        answer = await watch(watcher, bk_cursor=cursor)
        assert answer.code == 0, answer
        cursor = answer.data["bk_events"][-1]["bk_cursor"]
        if answer.data["bk_watched"]:
            events += answer.data["bk_events"]
            break
    while len(events) < len(created):
        more, cursor = await _events_until(watcher, cursor, 1)
        events += more

    assert feed.restarts >= 1
    assert [event["bk_detail"]["id"] for event in events] == created  # none lost while the streams were silent
    metrics = await (await watcher.get("/metrics")).text()
    assert "cmdb_asso_watch_lag_seconds" in metrics


async def test_a_delete_is_announced_once_the_link_is_gone_from_both_tables(
    watcher: Client, wire_mongo: MongoConnection
) -> None:
    link_id = (await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    _created, cursor = await _events_until(watcher, NO_EVENT_CURSOR, 1)

    async def remove_from(table: str) -> None:
        # What a delete does per table (archive copy, then removal), done by hand so that a pause can come
        # between the tables, as when a delete is killed and recovery finishes it minutes later.
        doc = await wire_mongo.db[table].find_one({"id": link_id})
        assert doc is not None
        await wire_mongo.db["cc_DelArchive"].insert_one(archive_document(table, stored_link_from(doc), utc_now()))
        await wire_mongo.db[table].delete_one({"_id": doc["_id"]})

    await remove_from("cc_InstAsst_0_pub_host")
    marker = (await create(watcher, link_body("bk_router_connect_bk_switch", 31, 12))).data["id"]
    more, cursor = await _events_until(watcher, cursor, 1)  # the feed has read past the first removal
    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in more] == [("create", marker)]

    await remove_from("cc_InstAsst_0_pub_bk_switch")
    gone, _ = await _events_until(watcher, cursor, 1)

    assert [(event["bk_event_type"], event["bk_detail"]["id"]) for event in gone] == [("delete", link_id)]


async def test_a_feeder_paused_past_its_lease_stores_and_saves_nothing_after_another_took_over(
    wire_mongo: MongoConnection,
    aiohttp_client: AiohttpClient,
    watch_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first feeder stops (as a stopped process would) between reading a batch and storing it; the second
    takes the lease, stores that batch and the next; when the first goes on, its epoch is stale: it stores no
    event and its resume tokens do not replace the second's."""
    client = await _live_client(aiohttp_client, watch_settings, wire_mongo)
    assert client.app is not None
    first = client.app[WATCH].feed
    assert first is not None
    paused, resume, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()
    read_rows, live_clear = first._rows, first.live.clear

    async def pausing_rows(changes: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await read_rows(changes)
        if rows and not resume.is_set():
            paused.set()
            await resume.wait()
        return rows

    def stop_feeding() -> None:  # the feeder's loop clears `live` whenever its feeding ends
        live_clear()
        stopped.set()

    monkeypatch.setattr(first, "_rows", pausing_rows)
    monkeypatch.setattr(first.live, "clear", stop_feeding)
    one = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    assert one.code == 0, one
    await asyncio.wait_for(paused.wait(), 30)
    second = EventFeed(type(first.store)(wire_mongo, first.store.retention_seconds), lease_seconds=3,
                       rescan_seconds=0.2, stall_seconds=2.0)  # fmt: skip
    runner = asyncio.create_task(second.run())
    try:
        two = await create(client, link_body("bk_switch_belong_bk_host", 12, 22))
        assert two.code == 0, two

        async def both_stored() -> bool:
            stored: int = await wire_mongo.db[CHAIN].count_documents({"type": "create"})
            return stored == 2

        async with second.stored:  # checked under the condition's lock: no notification is missed
            while not await both_stored():
                await asyncio.wait_for(second.stored.wait(), 30)
        progress = await wire_mongo.db["cmdb_asso_WatchToken"].find_one({"_id": "cc_InstAsst"})
        resume.set()
        await asyncio.wait_for(stopped.wait(), 30)
        after = await wire_mongo.db["cmdb_asso_WatchToken"].find_one({"_id": "cc_InstAsst"})
        events = await wire_mongo.db[CHAIN].find({}, {"_id": 0, "id": 1, "inst_id": 1, "type": 1}).to_list(None)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert after == progress  # the stale feeder saved nothing
    assert [(event["inst_id"], event["type"]) for event in sorted(events, key=lambda e: e["id"])] == [
        (one.data["id"], "create"), (two.data["id"], "create")]  # fmt: skip
    assert first.events_stored == 0


async def test_with_the_watch_off_no_write_has_the_embedded_server_track_a_table(wire_mongo: MongoConnection) -> None:
    # Each table the embedded server tracks costs every later write to it a recorded change: with the event feed
    # off (watch.enabled: off), a table's first write opens no change stream; with it on, it does.
    async def first_write(track: bool, obj_asst_id: str, pair: tuple[int, int]) -> int:
        store = AssociationStore(wire_mongo, id_block_size=10, definition_cache_seconds=0, track_changes=track)
        (definition,) = await store.find_definitions(obj_asst_id, ("0",))
        audit = link_audit(Caller("admin", "0"), "create", obj_asst_id, definition.asst_id,
                           (definition.obj_id, pair[0], ""), (definition.asst_obj_id, pair[1], ""))  # fmt: skip
        before = wire_mongo.commands.by_name.get("aggregate", 0)
        await store.create_links([MappingRules.new_link(definition, *pair, "0")], [audit])
        return wire_mongo.commands.by_name.get("aggregate", 0) - before

    assert await first_write(False, "bk_switch_belong_bk_host", (11, 21)) == 0
    assert await first_write(True, "app_run_host", (41, 22)) > 0  # the app table is new to the server


async def test_once_a_links_creation_is_stored_its_copies_read_again_are_neither_looked_up_nor_stored(
    watcher: Client, wire_mongo: MongoConnection
) -> None:
    await create(watcher, link_body("bk_switch_belong_bk_host", 11, 21))
    await _events_until(watcher, NO_EVENT_CURSOR, 1)
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    copies = {
        table: await wire_mongo.db[table].find_one({"bk_inst_id": 11, "bk_asst_inst_id": 21})
        for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host")
    }
    # Each copy as its own table's stream reports it, in a round of its own (the embedded server's streams are
    # per table, so the two copies of a link may come in different rounds, after the first one's event is stored).
    rounds = [[LinkChange("insert", table, str(doc["_id"]), doc, 1, 1)] for table, doc in copies.items()]
    filters = []
    started = wire_mongo.commands.started

    def record(event: Any) -> None:
        if event.command_name == "find":
            filters.append((event.command["find"], event.command.get("filter")))
        started(event)

    wire_mongo.commands.started = record  # type: ignore[method-assign]

    rows = [await feed._rows(changes) for changes in rounds]

    assert rows == [[], []]  # before: a row each, which the chain's unique index then refused
    assert [table for table, _ in filters if str(table).startswith("cc_InstAsst")] == []  # nor looked up again
    # A delete's detail is looked up by its copy's `_id`: through an index, where the archive is never expired.
    archive_keys = [index["key"] for index in (await wire_mongo.db["cc_DelArchive"].index_information()).values()]
    assert [("oid", 1)] in [list(map(tuple, key)) for key in archive_keys], archive_keys


async def test_the_feed_checks_a_rounds_inserted_links_with_one_read_per_table_and_still_finds_an_undone_row(
    watcher: Client, wire_mongo: MongoConnection
) -> None:
    made = [await create(watcher, link_body("bk_switch_belong_bk_host", 11, host)) for host in range(21, 26)]
    assert [answer.code for answer in made] == [0] * 5, made
    switch_table, host_table = "cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"
    docs = await wire_mongo.db[switch_table].find({"bk_inst_id": 11}).to_list(None)
    # A row that a write without a transaction inserted and undid: gone, with no archive copy.
    undone = {"id": Int64(88_888), "bk_obj_id": "bk_switch", "bk_inst_id": Int64(12), "bk_asst_obj_id": "host",
              "bk_asst_inst_id": Int64(21), "bk_obj_asst_id": "bk_switch_belong_bk_host",
              "bk_supplier_account": "0"}  # fmt: skip
    inserted = await wire_mongo.db[host_table].insert_one(dict(undone))
    await wire_mongo.db[host_table].delete_one({"_id": inserted.inserted_id})
    changes = [LinkChange("insert", switch_table, str(doc["_id"]), doc, 1, 1) for doc in docs]
    changes.append(LinkChange("insert", host_table, str(inserted.inserted_id), undone, 1, 1))
    assert watcher.app is not None
    feed = watcher.app[WATCH].feed
    assert feed is not None
    reads: list[str] = []
    started = wire_mongo.commands.started
    # This test's own reads only: the running feeder reads the same tables meanwhile, from its own task.
    ours = contextvars.ContextVar("ours", default=False)

    def record(event: Any) -> None:
        if ours.get() and event.command_name == "find" and str(event.command["find"]).startswith("cc_InstAsst"):
            reads.append(str(event.command["find"]))
        started(event)

    wire_mongo.commands.started = record  # type: ignore[method-assign]
    ours.set(True)

    found = await feed._undone(changes)

    assert found == {(str(inserted.inserted_id), host_table)}
    assert sorted(reads) == [switch_table, host_table, host_table], reads  # before: one read per link (6)
