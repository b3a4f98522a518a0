"""Link events where the database serves no change streams (the in-memory store here): everything else works,
the watch answers 501, and /readyz says so. The events themselves are tested on the wire (test_watch_wire)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.config import Settings, WatchSettings
from cmdb_asso.keys import WATCH
from cmdb_asso.service.watch import NO_EVENT_CURSOR, encode_cursor
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, call, create, link_body

Client = TestClient[Any, Any]


async def _known(client: Client) -> None:
    assert client.app is not None
    for _ in range(200):
        if client.app[WATCH].available is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the watch's availability never became known")


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_without_change_streams_the_watch_answers_501_and_the_rest_works(client: Client, spelling: str) -> None:
    await _known(client)

    answer = await call(client, "watch", {"bk_resource": "inst_asst"}, spelling=spelling)
    created = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    ready = await client.get("/readyz")

    assert (answer.status, answer.code) == (501, 1199998)
    assert answer.message == "event watch is unavailable: the database does not support change streams"
    assert created.code == 0
    assert await ready.json() == {"status": "ready", "watch": "unavailable"}


async def test_switched_off_it_answers_501_in_chinese_too(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(app_settings=replace(settings, watch=WatchSettings(enabled="off")))

    answer = await call(client, "watch", {"bk_resource": "inst_asst"}, language="zh")

    assert (answer.status, answer.code) == (501, 1199998)
    assert answer.message == "事件监听不可用：数据库不支持变更流"


def test_cursors_are_bk_cmdbs() -> None:
    assert encode_cursor(3, "insert", 1717000000, 2) == "MQ0xMw0zDWluc2VydA0xNzE3MDAwMDAwDTINMw=="
    assert NO_EVENT_CURSOR == "MQ0xDTVlYTZkM2YzOTRjMWY1ZDk4NmU5YmQ4Ng1ub0V2ZW50DTENMQ0="
    assert base64.b64decode(NO_EVENT_CURSOR).split(b"\r") == [b"1", b"1", b"5ea6d3f394c1f5d986e9bd86", b"noEvent",
                                                              b"1", b"1", b""]  # fmt: skip
