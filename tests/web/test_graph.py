"""The graph of many hops: nodes and edges around one instance, cycle-safe, bounded, behind view permission."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, Answer, call, create, link_body

Client = TestClient[Any, Any]
LINKS = [
    ("bk_router_connect_bk_switch", 31, 11),
    ("bk_router_connect_bk_switch", 31, 12),
    ("bk_switch_belong_bk_host", 11, 21),
    ("bk_switch_belong_bk_host", 11, 22),
    ("bk_switch_belong_bk_host", 12, 22),
    ("app_run_host", 41, 21),
    ("host_connect_host", 21, 22),
    ("host_connect_host", 22, 21),  # a cycle
    ("host_connect_host", 24, 24),  # a link from an instance to itself
]
MODELS = {"bk_router": "bk_router", "bk_switch": "bk_switch", "host": "host", "app": "app"}


@pytest.fixture
async def linked(client: Client) -> dict[tuple[str, int, int], int]:
    """The links above, by (definition, source, target): their ids."""
    ids = {}
    for obj_asst_id, src, dst in LINKS:
        answer = await create(client, link_body(obj_asst_id, src, dst))
        assert answer.code == 0, answer
        ids[(obj_asst_id, src, dst)] = answer.data["id"]
    return ids


async def graph(client: Client, spelling: str = "native", user: str = "admin", **params: Any) -> Answer:
    """Ask for the graph."""
    return await call(client, "graph", params, spelling=spelling, user=user)


def nodes(answer: Answer) -> dict[tuple[str, int], int]:
    """Each node's hop, by (model, id)."""
    return {(node["bk_obj_id"], node["bk_inst_id"]): node["hop"] for node in answer.data["nodes"]}


def edges(answer: Answer) -> set[tuple[str, int, int]]:
    """The edges as (definition, source id, target id)."""
    return {(e["bk_obj_asst_id"], e["from"]["bk_inst_id"], e["to"]["bk_inst_id"]) for e in answer.data["edges"]}


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_both_directions_two_hops_around_a_switch(client: Client, linked: Any, spelling: str) -> None:
    answer = await graph(client, spelling, bk_obj_id="bk_switch", bk_inst_id=11)

    assert answer.code == 0
    assert nodes(answer) == {
        ("bk_switch", 11): 0,
        ("bk_router", 31): 1,
        ("host", 21): 1,
        ("host", 22): 1,
        ("bk_switch", 12): 2,
        ("app", 41): 2,
    }
    assert edges(answer) == {link for link in LINKS if link[1:] != (24, 24)}
    assert len(answer.data["edges"]) == len(edges(answer))  # each link once, the cycle included
    assert [edge["id"] for edge in answer.data["edges"]] == sorted(edge["id"] for edge in answer.data["edges"])
    names = {(node["bk_obj_id"], node["bk_inst_id"]): node["bk_inst_name"] for node in answer.data["nodes"]}
    assert names[("host", 21)] == "host-21"
    assert names[("bk_router", 31)] == "router-31"
    assert (answer.data["truncated"], answer.data["hidden"]) == (False, 0)


async def test_out_follows_links_from_source_to_target_only(client: Client, linked: Any) -> None:
    answer = await graph(client, bk_obj_id="bk_router", bk_inst_id=31, direction="out", depth=6)

    assert nodes(answer) == {
        ("bk_router", 31): 0,
        ("bk_switch", 11): 1,
        ("bk_switch", 12): 1,
        ("host", 21): 2,
        ("host", 22): 2,
    }
    assert ("app_run_host", 41, 21) not in edges(answer)
    assert ("host_connect_host", 22, 21) in edges(answer)


async def test_in_follows_links_from_target_to_source_only(client: Client, linked: Any) -> None:
    answer = await graph(client, bk_obj_id="host", bk_inst_id=22, direction="in", depth=1)

    assert nodes(answer) == {("host", 22): 0, ("bk_switch", 11): 1, ("bk_switch", 12): 1, ("host", 21): 1}
    assert edges(answer) == {
        ("bk_switch_belong_bk_host", 11, 22),
        ("bk_switch_belong_bk_host", 12, 22),
        ("host_connect_host", 21, 22),
    }


async def test_a_link_of_an_instance_to_itself_is_one_edge_and_one_node(client: Client, linked: Any) -> None:
    answer = await graph(client, bk_obj_id="host", bk_inst_id=24, depth=6)

    assert nodes(answer) == {("host", 24): 0}
    assert edges(answer) == {("host_connect_host", 24, 24)}


async def test_the_node_bound_cuts_the_walk_and_says_so(client: Client, linked: Any) -> None:
    answer = await graph(client, bk_obj_id="bk_switch", bk_inst_id=11, max_nodes=3)

    assert len(answer.data["nodes"]) == 3
    assert answer.data["truncated"] is True
    shown = set(nodes(answer))
    for edge in answer.data["edges"]:
        assert (edge["from"]["bk_obj_id"], edge["from"]["bk_inst_id"]) in shown
        assert (edge["to"]["bk_obj_id"], edge["to"]["bk_inst_id"]) in shown


async def test_only_the_definitions_asked_for_are_followed(client: Client, linked: Any) -> None:
    answer = await graph(
        client, bk_obj_id="bk_switch", bk_inst_id=11, depth=3, bk_obj_asst_ids=["bk_switch_belong_bk_host"]
    )

    assert nodes(answer) == {("bk_switch", 11): 0, ("host", 21): 1, ("host", 22): 1, ("bk_switch", 12): 2}
    assert {edge[0] for edge in edges(answer)} == {"bk_switch_belong_bk_host"}


async def test_models_the_caller_may_not_view_are_left_out_and_not_walked_through(
    make_client: MakeClient, linked: Any
) -> None:
    policy = StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch", "host"}))})
    client = await make_client(authorizer=policy)

    answer = await graph(client, user="eve", bk_obj_id="bk_switch", bk_inst_id=11)

    assert nodes(answer) == {("bk_switch", 11): 0, ("host", 21): 1, ("host", 22): 1, ("bk_switch", 12): 2}
    assert answer.data["hidden"] == 2  # router 31 and app 41
    assert all("bk_router" not in (e["from"]["bk_obj_id"], e["to"]["bk_obj_id"]) for e in answer.data["edges"])
    denied = await graph(client, user="eve", bk_obj_id="app", bk_inst_id=41)
    assert denied.code == 9900403
    action = denied.permission["actions"][0]
    assert (action["id"].startswith("view_comobj_"), action["name"], action["related_resource_types"]) == (
        True, "应用实例查询", []
    )  # fmt: skip


async def test_a_root_that_does_not_exist_answers_1101073(client: Client) -> None:
    answer = await graph(client, bk_obj_id="host", bk_inst_id=999)

    assert (answer.status, answer.code) == (200, 1101073)


@pytest.mark.parametrize("missing", [{"bk_inst_id": 11}, {"bk_obj_id": "bk_switch"}])
async def test_a_missing_root_field_answers_1199010(client: Client, missing: dict[str, Any]) -> None:
    answer = await call(client, "graph", missing)

    assert (answer.status, answer.code) == (200, 1199010)


@pytest.mark.parametrize(
    "bad",
    [
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "depth": 7},
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "depth": 0},
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "depth": True},
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "direction": "sideways"},
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "max_nodes": 0},
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "bk_obj_asst_ids": "bk_switch_belong_bk_host"},
        {"bk_obj_id": "bk_switch", "bk_inst_id": "11"},
    ],
)
async def test_bad_input_answers_1199006(client: Client, bad: dict[str, Any]) -> None:
    answer = await call(client, "graph", bad)

    assert (answer.status, answer.code) == (200, 1199006)
