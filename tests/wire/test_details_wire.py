"""Links with instance details over the real driver and the embedded server: the query builder's regular
expressions and times reach a real wire, and instances stored with BSON's own types come back as JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson import ObjectId

from cmdb_asso.storage.client import MongoConnection
from tests.helpers import call, create, link_body

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]


def _rules(*rules: dict[str, Any], condition: str = "AND") -> dict[str, Any]:
    return {"condition": condition, "rules": list(rules)}


async def _detail(client: Client, asst_filter: dict[str, Any], **condition: Any) -> Any:
    body = {"bk_obj_id": "bk_switch", "condition": {"asst_filter": asst_filter, **condition}, "page": {"limit": 50}}
    answer = await call(client, "links_with_instances", body)
    assert answer.code == 0, answer
    return answer.data


async def test_pattern_rules_run_on_the_server(wire_client: Client) -> None:
    ids = []
    for body in (link_body("bk_switch_belong_bk_host", 11, 21), link_body("bk_router_connect_bk_switch", 31, 11)):
        ids.append((await create(wire_client, body)).data["id"])

    cases = [
        (_rules({"field": "bk_obj_asst_id", "operator": "contains", "value": "SWITCH_BELONG"}), [ids[0]]),
        (_rules({"field": "bk_obj_asst_id", "operator": "not_begins_with", "value": "bk_switch"}), [ids[1]]),
        (_rules({"field": "bk_asst_obj_id", "operator": "ends_with", "value": "host"}), [ids[0]]),
        (
            _rules(
                {"field": "bk_asst_id", "operator": "not_ends_with", "value": "ect"},
                {"field": "bk_inst_id", "operator": "in", "value": [11, 31]},
            ),
            [ids[0]],
        ),
    ]
    for asst_filter, expected in cases:
        assert [item["id"] for item in (await _detail(wire_client, asst_filter))["association"]] == expected


async def test_instances_with_bson_types_render_as_json(wire_client: Client, wire_mongo: MongoConnection) -> None:
    link_id = (await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    await wire_mongo.db["cc_HostBase"].update_one(
        {"bk_host_id": 21},
        {"$set": {"ref": ObjectId("65f0a0a0a0a0a0a0a0a0a0a0"), "seen": stamp,
                  "bk_host_innerip": ["10.0.0.21"], "tags": {"b": 1, "a": [stamp]}}},
    )  # fmt: skip

    data = await _detail(wire_client, _rules({"field": "id", "operator": "equal", "value": link_id}), dst_detail=True)

    (host,) = data["dst"]
    assert host["ref"] == "65f0a0a0a0a0a0a0a0a0a0a0"
    assert host["seen"] == "2026-01-02T03:04:05.678Z"
    assert host["tags"] == {"a": ["2026-01-02T03:04:05.678Z"], "b": 1}
    assert list(host["tags"]) == ["a", "b"]
    assert host["bk_host_innerip"] == "10.0.0.21"
    assert list(host) == sorted(host)


async def test_a_datetime_rule_compares_bson_times(wire_client: Client, wire_mongo: MongoConnection) -> None:
    link_id = (await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    await wire_mongo.db["cc_InstAsst_0_pub_bk_switch"].update_one(
        {"id": link_id}, {"$set": {"bk_biz_id": datetime(2026, 6, 1, 12, 0, tzinfo=UTC)}}
    )

    def on(operator: str, value: str) -> dict[str, Any]:
        return _rules({"field": "bk_biz_id", "operator": operator, "value": value})

    after = await _detail(wire_client, on("datetime_greater", "2026-06-01T11:59:59Z"))
    before = await _detail(wire_client, on("datetime_less", "2026-06-01 12:00:00"))
    zoned = await _detail(wire_client, on("datetime_less_or_equal", "2026-06-01T20:00:00+08:00"))

    assert [item["id"] for item in after["association"]] == [link_id]
    assert before["association"] == []
    assert [item["id"] for item in zoned["association"]] == [link_id]
