"""Instance topology (CONTRACT 11): the instances one instance points to, grouped by target model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.config import Settings, TopoSettings
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, Answer, call, create, link_body

Client = TestClient[Any, Any]


async def topo(client: Client, obj_id: Any, inst_id: Any, spelling: str = "native", user: str = "admin") -> Answer:
    """Ask for an instance's topology."""
    return await call(client, "topo", {"bk_obj_id": obj_id, "bk_inst_id": inst_id}, spelling=spelling, user=user)


async def link(client: Client, obj_asst_id: str, src: int, dst: int) -> int:
    """Create a link; its id."""
    answer = await create(client, link_body(obj_asst_id, src, dst))
    assert answer.code == 0, answer
    link_id: int = answer.data["id"]
    return link_id


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_the_targets_of_an_instance_grouped_by_model_in_a_stated_order(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    await mock_mongo.db["cc_HostBase"].update_one(
        {"bk_host_id": 22}, {"$set": {"bk_host_innerip": ["10.0.0.22", "10.0.1.22"]}}
    )
    to_22 = await link(client, "bk_switch_belong_bk_host", 11, 22)
    to_21 = await link(client, "bk_switch_belong_bk_host", 11, 21)
    await link(client, "bk_router_connect_bk_switch", 31, 11)  # switch 11 is its target: not shown

    answer = await topo(client, "bk_switch", 11, spelling)

    assert answer.code == 0
    assert answer.data == [
        {"id": "", "bk_obj_id": "host", "bk_obj_icon": "", "bk_inst_id": 0, "bk_obj_name": "主机", "bk_inst_name": "",
         "asso_id": 0, "count": 2,
         "children": [
             {"id": "22", "bk_obj_id": "host", "bk_obj_icon": "", "bk_inst_id": 22, "bk_obj_name": "主机",
              "bk_inst_name": "10.0.0.22,10.0.1.22", "asso_id": to_22},
             {"id": "21", "bk_obj_id": "host", "bk_obj_icon": "", "bk_inst_id": 21, "bk_obj_name": "主机",
              "bk_inst_name": "", "asso_id": to_21},
         ]},
    ]  # fmt: skip
    assert list(answer.data[0]) == ["id", "bk_obj_id", "bk_obj_icon", "bk_inst_id", "bk_obj_name", "bk_inst_name",
                                    "asso_id", "count", "children"]  # fmt: skip


async def test_no_links_answers_an_empty_list(client: Client) -> None:
    answer = await topo(client, "bk_switch", 12)

    assert (answer.code, answer.data) == (0, [])


async def test_a_link_whose_target_is_gone_is_skipped(client: Client, mock_mongo: MongoConnection) -> None:
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    kept = await link(client, "bk_switch_belong_bk_host", 11, 22)
    await mock_mongo.db["cc_HostBase"].delete_one({"bk_host_id": 21})

    answer = await topo(client, "bk_switch", 11)

    assert [child["asso_id"] for child in answer.data[0]["children"]] == [kept]
    assert answer.data[0]["count"] == 1


async def test_links_of_a_definition_that_is_gone_are_not_shown(client: Client, mock_mongo: MongoConnection) -> None:
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    await mock_mongo.db["cc_ObjAsst"].delete_one({"bk_obj_asst_id": "bk_switch_belong_bk_host"})

    assert (await topo(client, "bk_switch", 11)).data == []


@pytest.mark.parametrize(
    ("obj_id", "inst_id", "code", "argument"),
    [
        ("bk_switch", "x", 1199009, "bk_inst_id"),
        ("bk_switch", 2**63, 1199009, "bk_inst_id"),
        ("nope", 11, 1199011, "bk_obj_id"),
        ("bk_switch", 0, 1199011, "bk_inst_id"),
        ("host", 0, 1199011, "bk_host_id"),
        ("bk_switch", 999, 1199011, "bk_inst_id"),
        ("bk_switch", -5, 1199011, "bk_inst_id"),
    ],
)
async def test_the_checks_answer_in_the_contracts_order(
    client: Client, obj_id: str, inst_id: Any, code: int, argument: str
) -> None:
    answer = await topo(client, obj_id, inst_id)

    assert (answer.status, answer.code) == (200, code)
    assert f"'{argument}'" in answer.message


async def test_the_esb_spelling_takes_a_decimal_string_and_names_missing_fields(client: Client) -> None:
    await link(client, "bk_switch_belong_bk_host", 11, 21)

    assert (await topo(client, "bk_switch", "11", "esb")).data[0]["count"] == 1
    missing = await call(client, "topo", {"bk_obj_id": "bk_switch"}, spelling="esb")
    assert missing.code == 1199010


async def test_more_links_than_the_setting_answer_1199059(
    make_client: MakeClient, settings: Settings, mock_mongo: MongoConnection
) -> None:
    client = await make_client(app_settings=replace(settings, topo=TopoSettings(max_links=1)))
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    await link(client, "bk_switch_belong_bk_host", 11, 22)

    assert (await topo(client, "bk_switch", 11)).code == 1199059


async def test_view_permission_on_the_model_and_on_every_target_model(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    admin = await make_client()
    await link(admin, "bk_switch_belong_bk_host", 11, 21)
    policy = StaticPolicy(
        {"eve": UserGrants(view=frozenset({"bk_switch"})), "ann": UserGrants(view=frozenset({"host"}))}
    )
    client = await make_client(authorizer=policy)

    for user, model in (("ann", "bk_switch"), ("eve", "host")):
        denied = await topo(client, "bk_switch", 11, user=user)
        row = await mock_mongo.db["cc_ObjDes"].find_one({"bk_obj_id": model})
        assert row is not None
        assert denied.code == 9900403
        assert denied.permission["actions"][0]["id"] == "view_sys_model"
        instance = denied.permission["actions"][0]["related_resource_types"][0]["instances"][0][0]
        assert instance == {"type": "sys_model", "type_name": "模型", "id": str(row["id"]), "name": row["bk_obj_name"]}


async def test_a_self_associated_model_is_its_own_target_group(client: Client, mock_mongo: MongoConnection) -> None:
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 22}, {"$set": {"bk_host_innerip": "10.0.0.22"}})
    link_id = await link(client, "host_connect_host", 21, 22)

    answer = await topo(client, "host", 21)

    assert [(group["bk_obj_id"], [child["asso_id"] for child in group["children"]]) for group in answer.data] == [
        ("host", [link_id])
    ]
    assert answer.data[0]["children"][0]["bk_inst_name"] == "10.0.0.22"


async def test_every_model_of_a_mainline_definition_is_exempt_from_the_model_view(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    """bk-cmdb reads the mainline set from the `bk_mainline` definitions on every check: in a standard database
    `host` is in it (host -> module), so a caller who may view switches sees their hosts."""
    admin = await make_client()
    await link(admin, "bk_switch_belong_bk_host", 11, 21)
    client = await make_client(authorizer=StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"}))}))
    before = await topo(client, "bk_switch", 11, user="eve")
    await mock_mongo.db["cc_ObjAsst"].insert_many([
        {"id": 80 + row, "bk_obj_asst_id": f"{src}_bk_mainline_{dst}", "bk_obj_id": src, "bk_asst_obj_id": dst,
         "bk_asst_id": "bk_mainline", "bk_supplier_account": "0"}
        for row, (src, dst) in enumerate([("set", "biz"), ("module", "set"), ("host", "module")])
    ])  # fmt: skip

    after = await topo(client, "bk_switch", 11, user="eve")

    assert before.code == 9900403  # no mainline row: no mainline model, host is checked
    assert after.code == 0, after
    assert [group["bk_obj_id"] for group in after.data] == ["host"]
