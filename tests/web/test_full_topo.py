"""The full instance topology (CONTRACT-ui 18): one instance, what points to it and what it points to."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import Answer, create, link_body, read_envelope

Client = TestClient[Any, Any]
PATH = "/api/v3/find/instassttopo/object/{}/inst/{}"


async def full_topo(client: Client, obj_id: Any, inst_id: Any, user: str = "admin", body: bytes = b"") -> Answer:
    """Ask for it as the frontend's store action does (its body is never read)."""
    response = await client.post(PATH.format(obj_id, inst_id), data=body, headers={"X-Bkcmdb-User": user})
    return read_envelope(response.status, await response.json(), response.headers.copy())


async def link(client: Client, obj_asst_id: str, src: int, dst: int) -> int:
    """Create a link; its id."""
    answer = await create(client, link_body(obj_asst_id, src, dst))
    assert answer.code == 0, answer
    link_id: int = answer.data["id"]
    return link_id


async def test_the_instance_its_sources_and_its_targets(client: Client, mock_mongo: MongoConnection) -> None:
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"bk_host_innerip": ["10.0.0.21"]}})
    from_router = await link(client, "bk_router_connect_bk_switch", 31, 11)
    to_host = await link(client, "bk_switch_belong_bk_host", 11, 21)

    answer = await full_topo(client, "bk_switch", 11, body=b"{not json")

    assert answer.code == 0, answer
    [topo] = answer.data
    assert list(topo) == ["prev", "next", "curr"]
    assert topo["curr"] == {"id": "11", "bk_obj_id": "bk_switch", "bk_obj_icon": "", "bk_inst_id": 11,
                            "bk_obj_name": "交换机", "bk_inst_name": "switch-11", "asso_id": 0}  # fmt: skip
    assert [(group["bk_obj_id"], group["count"]) for group in topo["prev"]] == [("bk_router", 1)]
    assert topo["prev"][0]["children"] == [
        {"id": "31", "bk_obj_id": "bk_router", "bk_obj_icon": "", "bk_inst_id": 31, "bk_obj_name": "路由器",
         "bk_inst_name": "router-31", "asso_id": from_router},
    ]  # fmt: skip
    assert [
        (child["bk_inst_id"], child["bk_inst_name"], child["asso_id"]) for child in topo["next"][0]["children"]
    ] == [(21, "10.0.0.21", to_host)]


async def test_an_instance_without_links_has_empty_lists(client: Client) -> None:
    answer = await full_topo(client, "host", 21)

    assert answer.code == 0, answer
    assert (answer.data[0]["prev"], answer.data[0]["next"], answer.data[0]["curr"]["bk_inst_name"]) == ([], [], "")


async def test_the_checks_answer_in_the_contracts_order(client: Client) -> None:
    cases = [
        ("no_such_model", "x", 1199011, "'inst_id' the parameter is invalid or does not exist"),
        ("no_such_model", 1, 1101016, "No relevant data found"),
        ("bk_switch", 0, 1199011, "'bk_inst_id'"),
        ("host", 0, 1199011, "'bk_host_id'"),
        ("host", -5, 1199011, "'bk_host_id'"),
        ("bk_switch", 999, 1199011, "'bk_inst_id'"),
    ]
    for obj_id, inst_id, code, text in cases:
        answer = await full_topo(client, obj_id, inst_id)
        assert answer.code == code, (obj_id, inst_id, answer)
        assert text in answer.message, (obj_id, inst_id, answer)


async def test_the_view_of_every_model_is_checked_and_a_denial_names_each(
    make_client: MakeClient, client: Client
) -> None:
    await link(client, "bk_router_connect_bk_switch", 31, 11)
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    policy = StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"})),
                           "ann": UserGrants(view=frozenset({"bk_switch", "bk_router", "host"}))})  # fmt: skip
    guarded = await make_client(authorizer=policy)

    denied = await full_topo(guarded, "bk_switch", 11, user="eve")
    allowed = await full_topo(guarded, "bk_switch", 11, user="ann")
    alone = await full_topo(guarded, "bk_switch", 12, user="eve")  # no links: only the switch is checked

    assert denied.code == 9900403
    action = denied.permission["actions"][0]
    assert action["id"] == "view_sys_model"
    assert [[item["name"] for item in group] for group in action["related_resource_types"][0]["instances"]] == [
        ["路由器"],
        ["主机"],
    ]
    assert allowed.code == 0, allowed
    assert alone.code == 0, alone
