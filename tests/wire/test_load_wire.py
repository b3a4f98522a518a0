"""Heavy readers beside writers, on the real driver and server: graphs over many links and many long polls
leave creating callers answered within their deadline (the bounds of limits.* do their work)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings, WatchSettings
from cmdb_asso.keys import WATCH
from cmdb_asso.service.watch import NO_EVENT_CURSOR
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import AiohttpClient
from tests.helpers import Answer, call, create, link_body
from tests.wire.conftest import add_host_tree, add_instances

pytestmark = pytest.mark.wire
BRANCHING, DEPTH = 5, 6


@pytest.mark.parametrize("driver", ["pymongo"], indirect=True)  # a load test: one driver is enough
async def test_graphs_and_long_polls_beside_creating_callers_leave_the_creates_answered(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    await add_host_tree(wire_mongo, BRANCHING, DEPTH)  # 19,530 hosts, six levels of five: a heavy graph's ground
    await add_instances(wire_mongo, "bk_switch", range(100, 116))
    settings = replace(wire_settings, watch=WatchSettings(long_poll_seconds=3.0, rescan_seconds=0.5, lease_seconds=3))
    client = await aiohttp_client(create_app(settings, mongo=wire_mongo))
    assert client.app is not None
    feed = client.app[WATCH].feed
    assert feed is not None
    await asyncio.wait_for(feed.live.wait(), 30)
    deadline = settings.mongodb.request_deadline_seconds
    stop = asyncio.Event()

    async def graphs() -> list[Answer]:
        answers = []
        while not stop.is_set():
            body = {"bk_obj_id": "host", "bk_inst_id": 1, "direction": "out", "depth": 6, "max_nodes": 1000}
            answer = await call(client, "graph", body)
            answers.append(answer)
            if answer.status == 503:  # as a client honouring Retry-After
                await asyncio.sleep(float(answer.headers["Retry-After"]))
        return answers

    async def long_polls() -> list[Answer]:
        answers = []
        cursor = NO_EVENT_CURSOR
        while not stop.is_set():  # a follower of the stream: each poll from the cursor the last one gave
            answer = await call(client, "watch", {"bk_resource": "inst_asst", "bk_cursor": cursor})
            answers.append(answer)
            if answer.code != 0:
                break
            cursor = answer.data["bk_events"][-1]["bk_cursor"]
        return answers

    async def creates(switch: int) -> list[tuple[Answer, float]]:
        timed = []
        for host in range(1, 21):
            started = time.monotonic()
            answer = await create(client, link_body("bk_switch_belong_bk_host", switch, host * 50 + switch))
            timed.append((answer, time.monotonic() - started))
        return timed

    readers = [asyncio.create_task(graphs()) for _ in range(8)]
    readers += [asyncio.create_task(long_polls()) for _ in range(50)]
    written = await asyncio.gather(*(creates(switch) for switch in range(100, 116)))
    stop.set()
    read: list[list[Answer]] = await asyncio.gather(*readers)

    for answer, seconds in (item for caller in written for item in caller):
        assert answer.code == 0, answer
        assert seconds < deadline
    graph_answers = [answer for answers in read[:8] for answer in answers]
    assert any(answer.code == 0 for answer in graph_answers)  # the graphs ran meanwhile
    for answer in graph_answers:  # answered, or refused at once past their bound
        assert answer.code == 0 or (answer.status, answer.code) == (503, 1199998), answer
    for answer in (answer for answers in read[8:] for answer in answers):
        assert answer.code == 0, answer


async def test_a_catastrophic_pattern_is_refused_before_the_store_and_creates_go_on(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection
) -> None:
    client = await aiohttp_client(create_app(wire_settings, mongo=wire_mongo))
    for host in (21, 22, 23):
        assert (await create(client, link_body("bk_switch_belong_bk_host", 11, host))).code == 0
    rule = {"field": "bk_obj_asst_id", "operator": "ends_with", "value": r"(\w|\w|\w)*!"}
    body = {"bk_obj_id": "bk_switch", "condition": {"asst_filter": {"condition": "AND", "rules": [rule]}},
            "page": {"limit": 200}}  # fmt: skip
    before = wire_mongo.commands.by_name.get("find", 0)

    refused = await asyncio.gather(*(call(client, "links_with_instances", body) for _ in range(8)))
    made = await create(client, link_body("bk_switch_belong_bk_host", 11, 24))

    for answer in refused:
        assert (answer.code, answer.message) == (1199011, "'condition.asst_filter.rules[0].value' the parameter is "
                                                 "invalid or does not exist")  # fmt: skip
    assert wire_mongo.commands.by_name.get("find", 0) - before < 8  # the create's reads only: no pattern was sent
    assert made.code == 0


@pytest.mark.parametrize("driver", ["pymongo"], indirect=True)  # motor's threads do not see the budget
async def test_every_read_of_a_request_carries_the_time_left_to_the_server(
    aiohttp_client: AiohttpClient, wire_settings: Settings, wire_mongo: MongoConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    client = await aiohttp_client(create_app(wire_settings, mongo=wire_mongo))
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    sent: list[dict[str, Any]] = []
    started = wire_mongo.commands.started

    def record(event: Any) -> None:
        if event.command_name in ("find", "aggregate", "count"):
            sent.append(dict(event.command))
        started(event)

    monkeypatch.setattr(wire_mongo.commands, "started", record)
    rule = {"field": "bk_obj_asst_id", "operator": "contains", "value": "belong"}
    details = {"bk_obj_id": "bk_switch", "page": {"limit": 10},
               "condition": {"asst_filter": {"condition": "AND", "rules": [rule]}, "dst_detail": True}}  # fmt: skip
    assert (await call(client, "links_with_instances", details)).code == 0
    assert (await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11})).code == 0

    assert sent
    limit_ms = wire_settings.mongodb.request_deadline_seconds * 1000
    for command in sent:
        assert 0 < command.get("maxTimeMS", 0) <= limit_ms, command
