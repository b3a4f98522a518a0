"""The definitions bk-cmdb's web server reads for its Excel flows: model associations by condition
(CONTRACT-ui 21) and a model's definitions by their ids (CONTRACT-ui 22)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import Answer, read_envelope

Client = TestClient[Any, Any]
MODEL = "/api/v3/find/instassociation/model"
BY_IDS = "/api/v3/topo/find/object/{}/association/by/bk_obj_asst_id"
SWITCH_HOST = {"id": 1, "bk_supplier_account": "0", "bk_obj_asst_id": "bk_switch_belong_bk_host",
               "bk_obj_asst_name": "", "bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_asst_id": "belong",
               "mapping": "n:n", "on_delete": "none", "ispre": False}  # fmt: skip


async def send(client: Client, path: str, body: Any, user: str = "admin") -> Answer:
    """Post `body` (bytes as they are, anything else as JSON)."""
    data = body if isinstance(body, bytes) else None
    response = await client.post(path, data=data, json=None if data is not None else body,
                                 headers={"X-Bkcmdb-User": user})  # fmt: skip
    return read_envelope(response.status, await response.json(), response.headers.copy())


async def test_model_associations_by_condition_with_their_count_in_bk_cmdbs_struct(
    client: Client, mock_mongo: MongoConnection
) -> None:
    await mock_mongo.db["cc_ObjAsst"].insert_one({"id": 90, "bk_obj_asst_id": "set_bk_mainline_module",
                                                  "bk_obj_id": "set", "bk_asst_obj_id": "module",
                                                  "bk_asst_id": "bk_mainline", "bk_supplier_account": "0"})  # fmt: skip

    mainline = await send(client, MODEL, {"condition": {"bk_asst_id": "bk_mainline"}})
    belong = await send(client, MODEL, {"condition": {"bk_asst_id": {"$in": ["belong"]}}, "fields": ["id"]})

    assert mainline.code == 0, mainline
    assert mainline.data == {"count": 1, "info": [
        {"id": 90, "bk_supplier_account": "0", "bk_obj_asst_id": "set_bk_mainline_module", "bk_obj_asst_name": "",
         "bk_obj_id": "set", "bk_asst_obj_id": "module", "bk_asst_id": "bk_mainline", "mapping": "", "on_delete": "",
         "ispre": None}]}  # fmt: skip
    assert belong.data == {"count": 1, "info": [SWITCH_HOST]}
    assert list(belong.body["data"]["info"][0]) == list(SWITCH_HOST)


async def test_model_associations_check_the_body_and_the_condition(client: Client) -> None:
    cases = [
        (b"{bad", 1199000),
        ({"condition": []}, 1199000),
        ({"fields": "id"}, 1199000),
        ({"disable_counter": "yes"}, 1199000),
        ({"condition": {"bk_inst_id": 1}}, 1199006),  # a link's field, not a definition's
        ({"condition": {"bk_asst_id": {"$regex": "."}}}, 1199006),
        ({"condition": {"ispre": "no"}}, 1199006),
    ]
    for body, code in cases:
        answer = await send(client, MODEL, body)
        assert answer.code == code, (body, answer)
    everything = await send(client, MODEL, b"")
    assert (everything.code, everything.data["count"]) == (0, 4)  # the demo's three and host_connect_host


async def test_model_associations_need_the_view_of_every_source_model(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    policy = StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"}))})
    client = await make_client(authorizer=policy)

    switch_only = await send(client, MODEL, {"condition": {"bk_obj_id": "bk_switch"}}, "eve")
    both = await send(client, MODEL, {"condition": {}}, "eve")

    assert switch_only.code == 0, switch_only
    assert both.code == 9900403
    action = both.permission["actions"][0]
    assert action["id"] == "view_sys_model"
    # One inner list per source model denied (app, bk_router, host), none for the switch.
    assert [[item["name"] for item in group] for group in action["related_resource_types"][0]["instances"]] == [
        ["应用"],
        ["路由器"],
        ["主机"],
    ]


async def test_definitions_by_ids_on_either_end_of_the_model(client: Client) -> None:
    ids = ["bk_switch_belong_bk_host", "bk_router_connect_bk_switch", "host_connect_host", "nothing"]

    as_target = await send(client, BY_IDS.format("host"), {"bk_obj_asst_ids": ids})
    as_source = await send(client, BY_IDS.format("bk_switch"), {"bk_obj_asst_ids": ids})

    assert as_target.code == 0, as_target
    assert [row["bk_obj_asst_id"] for row in as_target.data] == ["bk_switch_belong_bk_host", "host_connect_host"]
    assert as_source.data[0] == SWITCH_HOST
    assert [row["bk_obj_asst_id"] for row in as_source.data] == [
        "bk_switch_belong_bk_host",
        "bk_router_connect_bk_switch",
    ]


async def test_definitions_by_ids_without_ids_or_with_a_bad_body(make_client: MakeClient, client: Client) -> None:
    empty: list[Any] = [{}, {"bk_obj_asst_ids": None}, {"bk_obj_asst_ids": []}, b""]
    bad: list[Any] = [b"{bad", {"bk_obj_asst_ids": "x"}, {"bk_obj_asst_ids": [1]}]
    for body in empty:
        answer = await send(client, BY_IDS.format("host"), body)
        assert (answer.code, answer.data) == (0, []), (body, answer)
    for body in bad:
        answer = await send(client, BY_IDS.format("host"), body)
        assert answer.code == 1199006, (body, answer)
        assert answer.message == "Deserializing JSON data failed"
    guarded = await make_client(authorizer=StaticPolicy({"eve": UserGrants()}))
    denied = await send(guarded, BY_IDS.format("bk_switch"), {"bk_obj_asst_ids": ["x"]}, "eve")
    unknown = await send(guarded, BY_IDS.format("no_such_model"), {"bk_obj_asst_ids": ["x"]}, "eve")
    assert denied.code == 9900403
    assert (unknown.code, unknown.data) == (0, [])
