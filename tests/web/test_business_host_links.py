"""Host links gated by a business (CONTRACT-ui 20): Find on the host table for a caller with access to the
business, the business checked before the body is read."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import Answer, create, link_body, read_envelope

Client = TestClient[Any, Any]
PATH = "/api/v3/find/instassociation/biz/{}"


async def biz_links(client: Client, biz_id: Any, body: Any, user: str = "admin") -> Answer:
    """Post `body` (bytes as they are, anything else as JSON) to the business-gated Find."""
    data = body if isinstance(body, bytes) else None
    response = await client.post(PATH.format(biz_id), data=data, json=None if data is not None else body,
                                 headers={"X-Bkcmdb-User": user})  # fmt: skip
    return read_envelope(response.status, await response.json(), response.headers.copy())


@pytest.fixture
async def businesses(mock_mongo: MongoConnection) -> None:
    """The resource pool (1) and a business (2)."""
    await mock_mongo.db["cc_ApplicationBase"].insert_many([
        {"bk_biz_id": 1, "bk_biz_name": "资源池", "default": 1, "bk_supplier_account": "0"},
        {"bk_biz_id": 2, "bk_biz_name": "demo", "default": 0, "bk_supplier_account": "0"},
    ])  # fmt: skip


async def test_the_frontends_two_calls_answer_the_hosts_links_either_way(client: Client, businesses: None) -> None:
    out = (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).data["id"]
    await create(client, link_body("bk_switch_belong_bk_host", 12, 22))

    as_source = await biz_links(client, 2, {"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "bk_obj_id": "host"})
    as_target = await biz_links(
        client, 2, {"condition": {"bk_asst_obj_id": "host", "bk_asst_inst_id": 21}, "bk_obj_id": "host"}
    )

    assert (as_source.code, as_source.data) == (0, [])
    assert as_target.code == 0, as_target
    assert as_target.data == [
        {"id": out, "bk_inst_id": 11, "bk_obj_id": "bk_switch", "bk_asst_inst_id": 21, "bk_asst_obj_id": "host",
         "bk_supplier_account": "0", "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong"},
    ]  # fmt: skip


async def test_the_checks_answer_in_the_contracts_order(make_client: MakeClient, businesses: None) -> None:
    policy = StaticPolicy({"mallory": UserGrants(), "admin": UserGrants(view=frozenset({"biz"}))})
    client = await make_client(authorizer=policy)
    good = {"bk_obj_id": "host", "condition": {}}
    cases = [
        ("x", b"{bad", "admin", 1199006, "'bk_biz_id' data parameter verification does not pass"),
        ("0", good, "admin", 1199006, "'bk_biz_id'"),
        ("-2", good, "admin", 1199006, "'bk_biz_id'"),
        ("2", b"{bad", "mallory", 9900403, ""),  # the business before the body
        ("2", b"{bad", "admin", 1199006, "Deserializing JSON data failed"),
        ("2", {"bk_obj_id": 5}, "admin", 1199006, "Deserializing JSON data failed"),
        ("2", {"bk_obj_id": "host", "condition": []}, "admin", 1199006, "Deserializing JSON data failed"),
        ("2", {}, "admin", 1199010, "'bk_obj_id' unassigned"),
        ("2", b"", "admin", 1199010, "'bk_obj_id' unassigned"),
        ("2", {"bk_obj_id": "bk_switch"}, "admin", 1199006, "'bk_obj_id'"),
        ("2", {"bk_obj_id": "host", "condition": {"$where": "1"}}, "admin", 1199006, "$where"),
    ]
    for biz_id, body, user, code, text in cases:
        answer = await biz_links(client, biz_id, body, user)
        assert answer.code == code, (biz_id, body, user, answer)
        assert text in answer.message, (biz_id, body, answer.message)
    denied = await biz_links(client, 2, good, "mallory")
    assert denied.permission == {
        "system_id": "bk_cmdb", "system_name": "配置平台",
        "actions": [{"id": "find_business_resource", "name": "业务访问", "related_resource_types": [
            {"system_id": "bk_cmdb", "system_name": "配置平台", "type": "biz", "type_name": "业务",
             "instances": [[{"type": "biz", "type_name": "业务", "id": "2", "name": "demo"}]]}]}],
    }  # fmt: skip


async def test_the_resource_pool_and_an_unknown_business_are_not_checked(
    make_client: MakeClient, businesses: None
) -> None:
    client = await make_client(authorizer=StaticPolicy({"mallory": UserGrants()}))
    body = {"bk_obj_id": "host", "condition": {}}

    assert (await biz_links(client, 1, body, "mallory")).code == 0
    assert (await biz_links(client, 99, body, "mallory")).code == 0
    granted = await make_client(authorizer=StaticPolicy({"eve": UserGrants(view=frozenset({"biz"}))}))
    assert (await biz_links(granted, 2, body, "eve")).code == 0  # no view of hosts needed
