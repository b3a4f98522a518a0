"""Base info of linked instances (CONTRACT 13): a page of links between one instance and another model, as
the other side's ids and names, with the true count."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.config import QuerySettings, Settings
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, Answer, call, create, link_body

Client = TestClient[Any, Any]


async def base_info(client: Client, spelling: str = "native", user: str = "admin", **body: Any) -> Answer:
    """Ask for base info."""
    return await call(client, "base_info", body, spelling=spelling, user=user)


def condition(obj_id: Any = "bk_switch", inst_id: Any = 11, other: Any = "host", **more: Any) -> dict[str, Any]:
    """A condition."""
    return {"bk_obj_id": obj_id, "bk_inst_id": inst_id, "association_obj_id": other, **more}


@pytest.fixture
async def switch_11(client: Client, mock_mongo: MongoConnection) -> None:
    """Switch 11 linked to hosts 23, 21, 22 (in that order); host 22 has two inner IPs."""
    await mock_mongo.db["cc_HostBase"].update_one(
        {"bk_host_id": 22}, {"$set": {"bk_host_innerip": ["10.0.0.22", "10.0.1.22"]}}
    )
    for host in (23, 21, 22):
        assert (await create(client, link_body("bk_switch_belong_bk_host", 11, host))).code == 0


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_the_other_side_in_link_order_with_the_true_count(client: Client, switch_11: None, spelling: str) -> None:
    answer = await base_info(client, spelling, condition=condition(), page={"start": 0, "limit": 2})

    assert answer.code == 0
    assert answer.data == {
        "count": 3,
        "info": [{"bk_inst_id": 23, "bk_inst_name": ""}, {"bk_inst_id": 21, "bk_inst_name": ""}],
    }
    assert list(answer.data) == ["count", "info"]


async def test_sorted_by_the_page_and_names_from_inner_ips(client: Client, switch_11: None) -> None:
    answer = await base_info(client, condition=condition(), page={"sort": "bk_asst_inst_id:-1"})

    assert [item["bk_inst_id"] for item in answer.data["info"]] == [23, 22, 21]
    assert answer.data["info"][1]["bk_inst_name"] == "10.0.0.22,10.0.1.22"
    assert [
        i["bk_inst_id"] for i in (await base_info(client, condition=condition(), page={"sort": "-id"})).data["info"]
    ] == [22, 21, 23]


async def test_the_target_direction_reads_the_sources(client: Client, switch_11: None) -> None:
    answer = await base_info(client, condition=condition("host", 21, "bk_switch", is_target_object=True))

    assert answer.data == {"count": 1, "info": [{"bk_inst_id": 11, "bk_inst_name": "switch-11"}]}
    wrong_way = await base_info(client, condition=condition("host", 21, "bk_switch"))
    assert wrong_way.data == {"count": 0, "info": []}


async def test_paging_past_the_end_keeps_the_count(client: Client, switch_11: None) -> None:
    answer = await base_info(client, condition=condition(), page={"start": 10, "limit": 5})

    assert answer.data == {"count": 3, "info": []}


async def test_a_link_to_a_missing_instance_gives_no_item(
    client: Client, switch_11: None, mock_mongo: MongoConnection
) -> None:
    await mock_mongo.db["cc_HostBase"].delete_one({"bk_host_id": 21})

    answer = await base_info(client, condition=condition())

    assert answer.data["count"] == 3
    assert [item["bk_inst_id"] for item in answer.data["info"]] == [23, 22]


@pytest.mark.parametrize(
    ("body", "code", "argument"),
    [
        ({"condition": condition(obj_id="")}, 1199010, "bk_obj_id"),
        ({"condition": condition(inst_id=0)}, 1199010, "bk_inst_id"),
        ({"condition": {"bk_obj_id": "bk_switch", "association_obj_id": "host"}}, 1199010, "bk_inst_id"),
        ({"condition": condition(inst_id=-1)}, 1199011, "bk_inst_id"),
        ({"condition": condition(other="")}, 1199010, "association_obj_id"),
        # A member of another JSON type fails bk-cmdb's decode (CONTRACT-ui Correction g).
        ({"condition": condition(inst_id=True)}, 1199000, ""),
        ({"condition": condition(inst_id="21")}, 1199000, ""),
        ({"condition": condition(is_target_object="yes")}, 1199000, ""),
        ({"condition": condition(), "page": {"start": "0"}}, 1199000, ""),
        ({"condition": condition(), "page": {"start": -1}}, 1199011, "page.start"),
        ({"condition": condition(), "page": {"limit": -1}}, 1199011, "page.limit"),
        ({"condition": condition(), "page": {"limit": 1001}}, 1199059, ""),
        ({"condition": condition(), "page": {"sort": "bk_host_name"}}, 1199011, "page.sort"),
        ({"condition": condition(obj_id="nope")}, 1199011, "bk_obj_id"),
        ({"condition": condition(other="nope")}, 1199011, "association_obj_id"),
    ],
)
async def test_the_checks_answer_in_the_contracts_order(
    client: Client, body: dict[str, Any], code: int, argument: str
) -> None:
    answer = await call(client, "base_info", body)

    assert (answer.status, answer.code) == (200, code)
    if argument:
        assert f"'{argument}'" in answer.message


async def test_no_limit_is_capped_by_the_setting(make_client: MakeClient, settings: Settings, switch_11: None) -> None:
    client = await make_client(app_settings=replace(settings, query=QuerySettings(max_unbounded=2)))

    assert (await base_info(client, condition=condition(), page={"limit": 999999999})).code == 1199059
    paged = await base_info(client, condition=condition(), page={"limit": 999999999, "start": 1})
    assert [item["bk_inst_id"] for item in paged.data["info"]] == [21, 22]


async def test_view_permission_on_both_models(make_client: MakeClient, switch_11: None) -> None:
    policy = StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"}))})
    client = await make_client(authorizer=policy)

    denied = await base_info(client, user="eve", condition=condition())

    assert denied.code == 9900403
    assert denied.permission is not None
