"""The Association tab's graph (CONTRACT-ui 19): a page of one instance's links in both directions, with the
instances at their ends, as bk-cmdb's frontend reads it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from cmdb_asso.config import QuerySettings, Settings
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import Answer, call, create, link_body, read_envelope

Client = TestClient[Any, Any]
TAB = "/api/v3/findmany/inst/association/object/{}/inst_id/{}/offset/{}/limit/{}/web"


async def tab(client: Client, obj_id: Any, inst_id: Any, start: Any = 0, limit: Any = 200, **kw: Any) -> Answer:
    """Ask for the Association tab's page as the frontend does (body `{}`)."""
    return await call(client, "association_tab", {"bk_obj_id": obj_id, "id": inst_id, "start": start, "limit": limit},
                      **kw)  # fmt: skip


async def link(client: Client, obj_asst_id: str, src: int, dst: int) -> int:
    """Create a link; its id."""
    answer = await create(client, link_body(obj_asst_id, src, dst))
    assert answer.code == 0, answer
    link_id: int = answer.data["id"]
    return link_id


async def test_both_directions_split_by_source_model_with_the_instances_at_their_ends(
    client: Client, mock_mongo: MongoConnection
) -> None:
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"bk_host_innerip": ["10.0.0.21"]}})
    to_host = await link(client, "bk_switch_belong_bk_host", 11, 21)
    from_router = await link(client, "bk_router_connect_bk_switch", 31, 11)
    await link(client, "bk_switch_belong_bk_host", 12, 21)  # another switch's link: not this instance's

    answer = await tab(client, "bk_switch", 11)

    assert answer.code == 0, answer
    common = {"bk_supplier_account": "0"}
    assert answer.data == {
        "association_count": 2,
        "data": {
            "association": {
                "src": [{"id": to_host, "bk_inst_id": 11, "bk_obj_id": "bk_switch", "bk_asst_inst_id": 21,
                         "bk_asst_obj_id": "host", **common, "bk_obj_asst_id": "bk_switch_belong_bk_host",
                         "bk_asst_id": "belong"}],
                "dst": [{"id": from_router, "bk_inst_id": 31, "bk_obj_id": "bk_router", "bk_asst_inst_id": 11,
                         "bk_asst_obj_id": "bk_switch", **common, "bk_obj_asst_id": "bk_router_connect_bk_switch",
                         "bk_asst_id": "connect"}],
            },
            "instance": {
                "bk_router": [{"bk_inst_id": 31, "bk_inst_name": "router-31"}],
                "bk_switch": [{"bk_inst_id": 11, "bk_inst_name": "switch-11"}],
                "host": [{"bk_host_id": 21, "bk_host_innerip": "10.0.0.21"}],
            },
        },
        "page": {"limit": 200, "start": 0},
    }  # fmt: skip
    assert list(answer.body["data"]) == ["association_count", "data", "page"]
    assert list(answer.body["data"]["data"]["association"]["src"][0]) == [
        "id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_supplier_account",
        "bk_obj_asst_id", "bk_asst_id",
    ]  # fmt: skip


async def test_no_links_answers_empty_lists_and_no_instances(client: Client) -> None:
    answer = await tab(client, "bk_switch", 11)

    assert answer.code == 0, answer
    assert answer.data == {"association_count": 0, "data": {"association": {"src": [], "dst": []}, "instance": {}},
                           "page": {"limit": 200, "start": 0}}  # fmt: skip


async def test_pages_in_id_order_with_the_count_of_all_and_limit_zero_is_twenty(client: Client) -> None:
    ids = [await link(client, "bk_switch_belong_bk_host", 11, host) for host in (21, 22, 23, 24, 25)]

    second = await tab(client, "bk_switch", 11, start=2, limit=2)
    default = await tab(client, "bk_switch", 11, limit=0)

    assert second.code == 0, second
    assert [item["id"] for item in second.data["data"]["association"]["src"]] == ids[2:4]
    assert second.data["association_count"] == 5
    assert [host["bk_host_id"] for host in second.data["data"]["instance"]["host"]] == [23, 24]
    assert second.data["page"] == {"limit": 2, "start": 2}
    assert default.data["page"] == {"limit": 20, "start": 0}
    assert len(default.data["data"]["association"]["src"]) == 5


async def test_a_link_whose_instance_is_gone_keeps_its_item_without_an_instance(
    client: Client, mock_mongo: MongoConnection
) -> None:
    link_id = await link(client, "bk_switch_belong_bk_host", 11, 22)
    await mock_mongo.db["cc_HostBase"].delete_one({"bk_host_id": 22})

    answer = await tab(client, "bk_switch", 11)

    assert answer.code == 0, answer
    assert [item["id"] for item in answer.data["data"]["association"]["src"]] == [link_id]
    assert answer.data["data"]["instance"]["host"] == []  # the frontend draws it as a deleted instance


async def test_the_body_is_never_read(client: Client) -> None:
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    path = TAB.format("bk_switch", 11, 0, 200)

    for body in (b"{not json", b"null", b"[1, 2]", b""):
        headers = {"X-Bkcmdb-User": "admin", "Content-Type": "application/json"}
        response = await client.post(path, data=body, headers=headers)
        answer = read_envelope(response.status, await response.json(), response.headers.copy())
        assert answer.code == 0, (body, answer)
        assert answer.data["association_count"] == 1


async def test_the_checks_answer_in_the_contracts_order(client: Client) -> None:
    cases = [
        (("bk_switch", "x", "y", "z"), 1199009, "'id'"),
        (("bk_switch", 11, "-1", "z"), 1199009, "'start'"),
        (("bk_switch", 11, 0, "1.5"), 1199009, "'limit'"),
        (("no_such_model", "x", 0, 0), 1199009, "'id'"),
        (("no_such_model", 11, 0, 0), 1199011, "'bk_obj_id'"),
        (("bk_switch", 11, 0, 1001), 1199059, ""),
    ]
    for (obj_id, inst_id, start, limit), code, named in cases:
        answer = await tab(client, obj_id, inst_id, start, limit)
        assert answer.code == code, (obj_id, inst_id, start, limit, answer)
        assert named in answer.message


async def test_no_limit_returns_all_up_to_the_setting(
    make_client: MakeClient, settings: Settings, client: Client
) -> None:
    for host in (21, 22, 23):
        await link(client, "bk_switch_belong_bk_host", 11, host)
    bounded = await make_client(app_settings=replace(settings, query=QuerySettings(max_unbounded=2)))

    everything = await tab(client, "bk_switch", 11, limit=999999999)
    too_many = await tab(bounded, "bk_switch", 11, limit=999999999)
    rest = await tab(bounded, "bk_switch", 11, start=1, limit=999999999)

    assert everything.code == 0, everything
    assert len(everything.data["data"]["association"]["src"]) == 3
    assert everything.data["page"] == {"limit": 999999999, "start": 0}
    assert too_many.code == 1199059
    assert rest.code == 0, rest
    assert len(rest.data["data"]["association"]["src"]) == 2


async def test_view_permission_on_the_model_only(make_client: MakeClient, client: Client) -> None:
    await link(client, "bk_switch_belong_bk_host", 11, 21)
    policy = StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"})), "mallory": UserGrants()})
    guarded = await make_client(authorizer=policy)

    allowed = await tab(guarded, "bk_switch", 11, user="eve")  # hosts are shown though eve may not view them
    denied = await tab(guarded, "bk_switch", 11, user="mallory")

    assert allowed.code == 0, allowed
    assert allowed.data["data"]["instance"]["host"] == [{"bk_host_id": 21}]
    assert denied.code == 9900403
    assert denied.permission is not None


async def test_native_only_no_esb_spelling(client: Client) -> None:
    response = await client.post("/api/c/compapi/v2/cc/find_instance_associations_web/", json={})

    assert response.status == 404
