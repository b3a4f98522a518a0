"""Links with instance details (CONTRACT-reads 12): a page of a model's links chosen by a query-builder filter,
with their source and target instances, checked in bk-cmdb's order and codes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, Answer, call, create, link_body

Client = TestClient[Any, Any]
LINK_KEYS = ["id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_supplier_account",
             "bk_obj_asst_id", "bk_asst_id"]  # fmt: skip


def rule(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    """One atomic rule."""
    return {"field": field, "operator": operator, "value": value}


def every(*rules: Any, condition: str = "AND") -> dict[str, Any]:
    """Rules combined."""
    return {"condition": condition, "rules": list(rules)}


SWITCH_LINKS = every(rule("bk_obj_id", "equal", "bk_switch"))
AF = "condition.asst_filter"
FIRST = f"{AF}.rules[0]"


async def detail(
    client: Client,
    asst_filter: Any = SWITCH_LINKS,
    *,
    page: Any = None,
    spelling: str = "native",
    user: str = "admin",
    obj_id: str = "bk_switch",
    **condition: Any,
) -> Answer:
    """Ask for links with details."""
    body = {"bk_obj_id": obj_id, "condition": {"asst_filter": asst_filter, **condition},
            "page": {"limit": 200} if page is None else page}  # fmt: skip
    return await call(client, "links_with_instances", body, spelling=spelling, user=user)


@pytest.fixture
async def linked(client: Client, mock_mongo: MongoConnection) -> list[int]:
    """Switch 12 → hosts 23, 21; switch 11 → hosts 21, 22; router 31 → switch 12 (in that order of ids); host 21
    has two inner IPs and no `bk_created_at`."""
    await mock_mongo.db["cc_HostBase"].update_one(
        {"bk_host_id": 21}, {"$set": {"bk_host_innerip": ["10.0.0.21", "10.0.1.21"], "bk_host_outerip": None}}
    )
    ids = []
    for body in (link_body("bk_switch_belong_bk_host", 12, 23), link_body("bk_switch_belong_bk_host", 12, 21),
                 link_body("bk_switch_belong_bk_host", 11, 21), link_body("bk_switch_belong_bk_host", 11, 22),
                 link_body("bk_router_connect_bk_switch", 31, 12)):  # fmt: skip
        answer = await create(client, body)
        assert answer.code == 0, answer
        ids.append(answer.data["id"])
    return ids


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_links_and_their_instances_each_once_in_order_of_first_appearance(
    client: Client, linked: list[int], spelling: str
) -> None:
    fields: dict[str, Any] = {
        "src_fields": ["bk_inst_name", "bk_inst_id"],
        "dst_fields": ["bk_host_innerip", "bk_host_id"],
    }
    answer = await detail(client, spelling=spelling, src_detail=True, dst_detail=True, **fields)

    assert answer.code == 0
    assert list(answer.data) == ["association", "src", "dst"]
    assert [item["id"] for item in answer.data["association"]] == linked[:4]
    assert all(list(item) == LINK_KEYS for item in answer.data["association"])  # bk_biz_id 0 left out
    assert answer.data["src"] == [{"bk_inst_id": 12, "bk_inst_name": "switch-12"},
                                  {"bk_inst_id": 11, "bk_inst_name": "switch-11"}]  # fmt: skip
    assert answer.data["dst"] == [
        {"bk_host_id": 23},  # a field the instance lacks is not made up
        {"bk_host_id": 21, "bk_host_innerip": "10.0.0.21,10.0.1.21"},
        {"bk_host_id": 22},
    ]


async def test_without_details_src_and_dst_are_null_and_the_filter_alone_decides_the_direction(
    client: Client, linked: list[int]
) -> None:
    both_sides = await detail(client, every(rule("bk_inst_id", "equal", 12), rule("bk_asst_inst_id", "equal", 12),
                                            condition="OR"))  # fmt: skip

    assert both_sides.data["src"] is None
    assert both_sides.data["dst"] is None
    assert [item["id"] for item in both_sides.data["association"]] == [linked[0], linked[1], linked[4]]


async def test_whole_instances_have_sorted_keys_filled_in_times_and_joined_ips(
    client: Client, linked: list[int], mock_mongo: MongoConnection
) -> None:
    stamp = datetime(2026, 11, 29, 8, 30, 15, 250000)
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"create_time": stamp}})

    answer = await detail(client, every(rule("id", "equal", linked[1])), dst_detail=True)

    (host,) = answer.data["dst"]
    assert list(host) == sorted(host)
    assert "_id" not in host
    assert host["bk_host_innerip"] == "10.0.0.21,10.0.1.21"
    assert host["bk_host_outerip"] == ""
    assert host["bk_created_at"] == host["create_time"] == "2026-11-29T08:30:15.25Z"
    assert host["bk_updated_at"] == host["last_time"]
    assert answer.data["src"] is None


async def test_item_fields_cut_the_links_but_never_the_details(client: Client, linked: list[int]) -> None:
    fields: dict[str, Any] = {"asst_fields": ["bk_asst_id", "id", "nope"], "src_fields": ["bk_inst_id"],
                              "dst_fields": ["bk_host_id"]}  # fmt: skip
    answer = await detail(client, every(rule("id", "equal", linked[0])), src_detail=True, dst_detail=True, **fields)

    assert answer.data == {"association": [{"id": linked[0], "bk_asst_id": "belong"}],
                           "src": [{"bk_inst_id": 12}], "dst": [{"bk_host_id": 23}]}  # fmt: skip


async def test_no_instance_found_is_null_and_a_page_past_the_end_is_empty(
    client: Client, linked: list[int], mock_mongo: MongoConnection
) -> None:
    await mock_mongo.db["cc_HostBase"].delete_one({"bk_host_id": 23})

    gone = await detail(client, every(rule("id", "equal", linked[0])), dst_detail=True)
    past = await detail(client, page={"start": 10, "limit": 5}, src_detail=True)

    assert gone.data["dst"] is None
    assert len(gone.data["association"]) == 1
    assert past.data == {"association": [], "src": None, "dst": None}


@pytest.mark.parametrize(
    ("asst_filter", "expected"),
    [
        (every(rule("bk_asst_id", "begins_with", "bel")), [0, 1, 2, 3]),
        (every(rule("bk_asst_id", "not_begins_with", "bel")), [4]),
        (every(rule("bk_obj_asst_id", "contains", "SWITCH_BELONG")), [0, 1, 2, 3]),
        (every(rule("bk_obj_asst_id", "not_contains", "router")), [0, 1, 2, 3]),
        (every(rule("bk_asst_obj_id", "ends_with", "witch")), [4]),
        (every(rule("bk_asst_obj_id", "not_ends_with", "witch")), [0, 1, 2, 3]),
        (every(rule("bk_asst_inst_id", "in", [21, 22]), rule("bk_inst_id", "not_in", [12])), [2, 3]),
        (every(rule("bk_asst_inst_id", "greater", 21), rule("bk_asst_inst_id", "less_or_equal", 23)), [0, 3]),
        (every(rule("bk_asst_inst_id", "greater_or_equal", 23), rule("bk_inst_id", "less", 100)), [0]),
        (every(rule("bk_inst_id", "not_equal", 12), rule("bk_obj_id", "equal", "bk_switch")), [2, 3]),
        (every(rule("bk_biz_id", "is_null")), []),
        (every(rule("bk_biz_id", "is_not_null"), rule("bk_biz_id", "exist")), [0, 1, 2, 3, 4]),
        (every(rule("bk_biz_id", "not_exist")), []),
        (every(rule("bk_asst_id", "is_empty")), []),
        (every(rule("bk_asst_id", "is_not_empty"), rule("bk_obj_id", "equal", "bk_router")), [4]),
        (every(rule("bk_asst_inst_id", "in", None)), []),
        (every(rule("bk_asst_inst_id", "not_in", None), rule("bk_inst_id", "equal", 31)), [4]),
        (
            every(
                every(rule("bk_inst_id", "equal", 11), rule("bk_inst_id", "equal", 31), condition="OR"),
                rule("bk_asst_inst_id", "not_equal", 21),
            ),
            [3, 4],
        ),
        (every(None, rule("bk_inst_id", "equal", 31)), [4]),  # bk-cmdb's decoder drops a null rule
    ],
)
async def test_every_operator_of_the_query_builder(
    client: Client, linked: list[int], asst_filter: Any, expected: list[int]
) -> None:
    answer = await detail(client, asst_filter, obj_id="bk_switch")

    assert answer.code == 0, answer
    assert [item["id"] for item in answer.data["association"]] == [linked[i] for i in expected]


async def test_the_page_sorts_and_skips(client: Client, linked: list[int]) -> None:
    answer = await detail(client, page={"start": 1, "limit": 2, "sort": "bk_asst_inst_id:-1,-id"})

    assert [(item["bk_asst_inst_id"], item["id"]) for item in answer.data["association"]] == [
        (22, linked[3]), (21, linked[2])
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "code", "argument"),
    [
        ([], 1199000, None),  # not an object: bk-cmdb's decoder refuses it (CONTRACT-ui Correction g)
        ({"condition": "x"}, 1199000, None),
        ({"condition": {"asst_filter": SWITCH_LINKS, "src_detail": "true"}}, 1199000, None),
        ({"condition": {"asst_filter": SWITCH_LINKS, "src_fields": [1]}}, 1199000, None),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 1.5}}, 1199000, None),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": "10"}}, 1199000, None),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 10, "sort": 1}}, 1199000, None),
        ({"condition": {"asst_filter": {}}}, 1199000, None),
        ({"condition": {"asst_filter": "x"}}, 1199000, None),
        ({"condition": {"asst_filter": {"condition": "AND", "rules": {}}}}, 1199000, None),
        ({"condition": {"asst_filter": every(["x"])}}, 1199000, None),
        ({"condition": {"asst_filter": every({"field": 1, "operator": "equal"})}}, 1199000, None),
        ({"condition": {"asst_filter": every({"value": 1})}}, 1199000, None),
        ({"condition": {}}, 1199011, "condition.asst_filter"),
        ({"condition": {"asst_filter": None}}, 1199011, "condition.asst_filter"),
        ({"condition": {"asst_filter": rule("id", "equal", 1)}}, 1199011, "condition.asst_filter"),
        ({"condition": {"asst_filter": every(rule("id", "equal", 1), condition="NOR")}}, 1199011,
         "condition.asst_filter.condition"),
        ({"condition": {"asst_filter": every()}}, 1199011, "condition.asst_filter.rules"),
        ({"condition": {"asst_filter": every(None)}}, 1199011, "condition.asst_filter.rules"),
        ({"condition": {"asst_filter": every(rule("id", "like", 1))}}, 1199011, f"{FIRST}.operator"),
        ({"condition": {"asst_filter": every(rule("_id", "equal", 1))}}, 1199011, f"{FIRST}.field"),
        ({"condition": {"asst_filter": every(rule("id", "equal", 1), rule("create_time", "exist"))}}, 1199011,
         f"{AF}.rules[1].field"),
        ({"condition": {"asst_filter": every(every(rule("id", "equal", [1])))}}, 1199011,
         f"{FIRST}.rules[0].value"),
        ({"condition": {"asst_filter": every(rule("id", "equal", None))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "equal", 2**63))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "in", [1, "1"]))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "in", [None]))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "in", list(range(501))))}}, 1199011,
         f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "less", True))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "greater", "1"))}}, 1199011, f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("id", "datetime_less", "yesterday"))}}, 1199011,
         f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("bk_asst_id", "contains", ""))}}, 1199011,
         f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("bk_asst_id", "contains", "a" * 257))}}, 1199011,
         f"{FIRST}.value"),
        ({"condition": {"asst_filter": every(rule("bk_asst_id", "ends_with", "(unclosed"))}}, 1199011,
         f"{FIRST}.value"),
        # Patterns whose matching can blow up on the server are refused before they reach it.
        *[({"condition": {"asst_filter": every(rule("bk_asst_id", operator, pattern))}}, 1199011, f"{FIRST}.value")
          for operator, pattern in (("ends_with", r"(\w|\w)*!"), ("ends_with", r"(\w|\w|\w)*!"),
                                    ("contains", "a{1,4294967295}"), ("contains", "a{1,1000}"),
                                    ("begins_with", "(?s)app"), ("contains", "(a+)+$"),
                                    ("not_contains", r"\w*\w*\w*\w*\w*!"), ("contains", r"(x)\1"))],
        ({"condition": {"asst_filter": every(rule("id", "datetime_greater", "0001-01-01T00:00:00+14:00"))},
          "page": {"limit": 5}}, 1199006, "rules[0].value"),
        ({"condition": {"asst_filter": every(rule("id", "datetime_less", "9999-12-31T23:59:59-14:00"))},
          "page": {"limit": 5}}, 1199006, "rules[0].value"),
        ({"condition": {"asst_filter": every(*[rule("id", "equal", n) for n in range(21)], condition="OR")}},
         1199011, "condition.asst_filter.rules"),
        ({"condition": {"asst_filter": every(every(every(rule("id", "equal", 1))))}}, 1199011,
         f"{FIRST}.rules[0]"),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 201}}, 1199059, None),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {}}, 1199010, "page.limit"),
        ({"condition": {"asst_filter": SWITCH_LINKS}}, 1199010, "page.limit"),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": -1}}, 1199011, "page.limit"),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 5, "start": -1}}, 1199011, "page.start"),
        ({"condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 5, "sort": "create_time"}}, 1199011,
         "page.sort"),
        ({"condition": {"asst_filter": every(rule("id", "datetime_less", "2026-13-01 00:00:00"))},
          "page": {"limit": 5}}, 1199006, "rules[0].value"),
        ({"bk_obj_id": "nope", "condition": {"asst_filter": SWITCH_LINKS}, "page": {"limit": 5}}, 1199011, "bk_obj_id"),
    ],
)  # fmt: skip
async def test_each_check_answers_in_bk_cmdbs_order_and_codes(
    client: Client, body: Any, code: int, argument: str | None
) -> None:
    sent = {"bk_obj_id": "bk_switch", **body} if isinstance(body, dict) else body
    path = "/api/v3/find/instassociation/object/{}/inst/detail"
    if isinstance(sent, dict):
        obj_id = sent.pop("bk_obj_id")
        response = await client.post(path.format(obj_id), json=sent, headers={"X-Bkcmdb-User": "admin"})
    else:
        response = await client.post(path.format("bk_switch"), json=sent, headers={"X-Bkcmdb-User": "admin"})
    answer = await response.json()

    assert (response.status, answer["bk_error_code"]) == (200, code), answer
    assert answer["data"] is None
    if argument is not None:
        assert f"'{argument}'" in answer["bk_error_msg"]


async def test_datetime_rules_compare_times_and_dates(client: Client, linked: list[int]) -> None:
    for value in ("2000-01-01", "2000-01-01 00:00:00", "2000-01-01T00:00:00.123456789+08:00"):
        answer = await detail(client, every(rule("id", "datetime_greater", value)))
        assert answer.code == 0, answer
        assert answer.data["association"] == []  # link ids are numbers: no time compares with them


async def test_view_on_the_model_then_on_every_instance_shown(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    admin = await make_client()
    for host in (21, 22):
        assert (await create(admin, link_body("bk_switch_belong_bk_host", 11, host))).code == 0
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 22}, {"$set": {"bk_host_innerip": ["10.0.0.22"]}})
    policy = StaticPolicy(
        {"eve": UserGrants(view=frozenset({"bk_switch"})), "ann": UserGrants(view=frozenset({"host"}))}
    )
    client = await make_client(authorizer=policy)

    model_denied = await detail(client, user="ann")
    links_only = await detail(client, user="eve", src_detail=True, dst_detail=False)
    hosts_denied = await detail(client, user="eve", dst_detail=True)

    assert model_denied.code == 9900403
    assert links_only.code == 9900403  # bk-cmdb checks every model of the page once details are asked for
    assert hosts_denied.code == 9900403
    assert hosts_denied.data is None
    (action,) = hosts_denied.permission["actions"]
    assert (action["id"], action["name"]) == ("view_resource_pool_host", "主机池主机查看")
    resource = action["related_resource_types"][0]
    assert resource["type"] == "host"
    shown = {"type": "host", "type_name": "主机"}
    assert resource["instances"] == [[{**shown, "id": "21", "name": ""}], [{**shown, "id": "22", "name": "10.0.0.22"}]]
    assert (await detail(client, user="eve")).code == 0  # no details, no instance check
