"""Find, find related, search and count, by both spellings: filters, pages, projections, injection, permission."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmdb_asso.config import QuerySettings
from cmdb_asso.service.filters import BUILDER_FIELDS
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, call, create, link_body, links_in

Client = TestClient[Any, Any]
PAIRS = [(11, 21), (11, 22), (12, 21), (13, 23), (14, 24), (15, 25), (12, 22)]


@pytest.fixture
async def linked(client: Client) -> Client:
    """The client over a store holding switch→host links, an app→host link and a router→switch link."""
    for src, dst in PAIRS:
        assert (await create(client, link_body("bk_switch_belong_bk_host", src, dst))).code == 0
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0
    assert (await create(client, link_body("bk_router_connect_bk_switch", 31, 11))).code == 0
    return client


def ends(links: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The (source, target) of each link."""
    return [(link["bk_inst_id"], link["bk_asst_inst_id"]) for link in links]


# --- find ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_find_returns_the_links_matching_the_condition_in_bk_cmdb_fields(linked: Client, spelling: str) -> None:
    condition = {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": {"$in": [11, 12]}}

    answer = await call(linked, "find", {"bk_obj_id": "bk_switch", "condition": condition}, spelling=spelling)

    assert answer.code == 0
    assert ends(answer.data) == [(11, 21), (11, 22), (12, 21), (12, 22)]
    # bk-cmdb's InstAsst struct: its keys in order, `bk_biz_id: 0` left out, no time field (CONTRACT-ui f).
    assert list(answer.data[0]) == ["id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id",
                                    "bk_supplier_account", "bk_obj_asst_id", "bk_asst_id"]  # fmt: skip


async def test_search_and_find_related_answer_the_instasst_struct_cut_to_the_fields_asked(linked: Client) -> None:
    related = await call(linked, "find_related", {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11},
                                                  "fields": ["bk_inst_id", "create_time", "id"]})  # fmt: skip
    searched = await call(linked, "search", {"bk_obj_id": "bk_switch", "page": {"start": 0, "limit": 1}})

    assert related.code == 0, related
    assert [list(item) for item in related.data] == [["id", "bk_inst_id"]] * len(related.data)
    assert searched.code == 0, searched
    assert "create_time" not in searched.data["info"][0]
    assert "bk_biz_id" not in searched.data["info"][0]


async def test_find_accepts_nested_logical_operators_over_allowed_fields(linked: Client) -> None:
    condition = {
        "$or": [
            {"$and": [{"bk_inst_id": {"$gte": 13}}, {"bk_inst_id": {"$lt": 15}}]},
            {"bk_asst_inst_id": 25, "bk_obj_id": {"$ne": "app"}},
        ],
        "bk_asst_id": {"$exists": True},
    }

    answer = await call(linked, "find", {"bk_obj_id": "host", "condition": condition})

    assert ends(answer.data) == [(13, 23), (14, 24), (15, 25)]


async def test_find_on_the_target_model_sees_links_of_every_definition(linked: Client) -> None:
    answer = await call(linked, "find", {"bk_obj_id": "host", "condition": {"bk_asst_inst_id": 21}})

    assert sorted(link["bk_obj_asst_id"] for link in answer.data) == [
        "app_run_host", "bk_switch_belong_bk_host", "bk_switch_belong_bk_host",
    ]  # fmt: skip


INJECTIONS: list[tuple[Any, str]] = [
    ({"$where": "sleep(1000)"}, "$where"),
    ({"$expr": {"$eq": ["$bk_inst_id", "$bk_asst_inst_id"]}}, "$expr"),
    ({"$function": {"body": "return true", "args": [], "lang": "js"}}, "$function"),
    ({"$accumulator": {}}, "$accumulator"),
    ({"$or": [{"bk_inst_id": 11}, {"$where": "true"}]}, "$where"),
    ({"$and": [{"$or": [{"$expr": {"$gt": [1, 0]}}]}]}, "$expr"),
    ({"bk_inst_id": {"$where": "true"}}, "$where"),
    ({"bk_inst_id": {"$in": [{"$function": {}}]}}, "$in"),
    ({"bk_obj_id": {"$regex": "^bk", "$options": "i"}}, "$regex"),
    ({"bk_inst_id": {"$gt": {"$expr": 1}}}, "$gt"),
    ({"password": "x"}, "password"),
    ({"cmdb_asso_src_guard": {"$exists": True}}, "cmdb_asso_src_guard"),
    ({"$or": "bk_inst_id"}, "$or"),
    ({"$or": []}, "$or"),
    ({"bk_inst_id": "eleven"}, "bk_inst_id"),
    ({"bk_obj_id": {"nested": "document"}}, "nested"),
    ({"$nor": [{"bk_inst_id": 1}]}, "$nor"),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("condition", "named"), INJECTIONS)
async def test_find_refuses_anything_off_the_allow_list_naming_the_key(
    linked: Client, spelling: str, condition: Any, named: str
) -> None:
    answer = await call(linked, "find", {"bk_obj_id": "host", "condition": condition}, spelling=spelling)

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, 1199006, None)
    assert answer.message == f"'{named}' data parameter verification does not pass"


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("body", [{"bk_obj_id": "host", "condition": ["bk_inst_id"]}, {"bk_obj_id": 5, "condition": {}},
                                  {"bk_obj_id": ["host"]}])  # fmt: skip
async def test_find_answers_a_member_of_another_type_as_bk_cmdbs_decoder_fails(
    linked: Client, spelling: str, body: dict[str, Any]
) -> None:
    answer = await call(linked, "find", body, spelling=spelling)

    assert (answer.result, answer.code, answer.message) == (False, 1199006, "Deserializing JSON data failed")


async def test_find_needs_a_model(linked: Client) -> None:
    answer = await call(linked, "find", {"condition": {}})

    assert (answer.code, answer.message) == (1199010, "'bk_obj_id' unassigned")


# --- find related -------------------------------------------------------------------------------------------------

# bk-cmdb requires `fields` (1199010 without): the link's keys.
FIELDS = {"fields": ["id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_obj_asst_id"]}


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_find_related_returns_both_directions_sorted_by_id(linked: Client, spelling: str) -> None:
    params = {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, "page": {"start": 0, "limit": 10}, **FIELDS}

    answer = await call(linked, "find_related", params, spelling=spelling)

    assert answer.code == 0
    assert ends(answer.data) == [(11, 21), (11, 22), (31, 11)]
    assert [link["id"] for link in answer.data] == sorted(link["id"] for link in answer.data)


async def test_find_related_pages_and_projects(linked: Client) -> None:
    params = {
        "condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11},
        "fields": ["bk_inst_id", "bk_asst_inst_id", "no_such_field"],
        "page": {"start": 1, "limit": 1},
    }

    answer = await call(linked, "find_related", params)

    assert answer.data == [{"bk_inst_id": 11, "bk_asst_inst_id": 22}]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "page": {"limit": 501}, **FIELDS}, 1199059),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": "21"}, **FIELDS}, 1199006),
        ({"condition": {"bk_inst_id": 21}, **FIELDS}, 1199010),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 0}, **FIELDS}, 1199010),
        ({"page": {"limit": 1}, **FIELDS}, 1199010),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 21}}, 1199010),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "fields": []}, 1199010),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "page": {"start": -1}, **FIELDS}, 1199011),
        ({"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "page": {"limit": -1}, **FIELDS}, 1199011),
    ],
)
async def test_find_related_refuses_bad_requests(
    linked: Client, spelling: str, params: dict[str, Any], code: int
) -> None:
    answer = await call(linked, "find_related", params, spelling=spelling)

    assert (answer.result, answer.code) == (False, code)


async def test_find_related_names_both_condition_fields_and_then_fields_as_bk_cmdb_does(linked: Client) -> None:
    no_instance = await call(linked, "find_related", {"condition": {"bk_obj_id": "host"}})
    no_fields = await call(linked, "find_related", {"condition": {"bk_obj_id": "host", "bk_inst_id": 21}})

    assert no_instance.message == "''bk_inst_id' & 'bk_obj_id'' unassigned"
    assert no_fields.message == "'fields' unassigned"


async def test_find_related_without_a_page_returns_every_link_up_to_the_setting(
    make_client: MakeClient, request: pytest.FixtureRequest, linked: Client
) -> None:
    params = {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, **FIELDS}
    app_settings = replace(request.getfixturevalue("settings"), query=QuerySettings(max_unbounded=2))
    bounded = await make_client(app_settings=app_settings)

    everything = await call(linked, "find_related", params)
    zero = await call(linked, "find_related", {**params, "page": {"start": 1, "limit": 0}})
    too_many = await call(bounded, "find_related", params)

    assert ends(everything.data) == [(11, 21), (11, 22), (31, 11)]  # not cut at 500, nor at any page size
    assert ends(zero.data) == [(11, 22), (31, 11)]
    assert too_many.code == 1199059


# --- search and count ---------------------------------------------------------------------------------------------


def rule(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    """One query-builder rule."""
    return {"field": field, "operator": operator, "value": value}


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_search_and_count_agree_on_query_builder_conditions(linked: Client, spelling: str) -> None:
    conditions = {
        "condition": "AND",
        "rules": [
            rule("bk_obj_asst_id", "equal", "bk_switch_belong_bk_host"),
            {"condition": "OR", "rules": [rule("bk_inst_id", "in", [11, 13]), rule("bk_asst_inst_id", "greater", 24)]},
        ],
    }
    params = {"bk_obj_id": "bk_switch", "conditions": conditions, "page": {"start": 0, "limit": 500}}

    searched = await call(linked, "search", params, spelling=spelling)
    counted = await call(linked, "count", {"bk_obj_id": "bk_switch", "conditions": conditions}, spelling=spelling)

    assert ends(searched.data["info"]) == [(11, 21), (11, 22), (13, 23), (15, 25)]
    assert counted.data == {"count": 4}


async def test_count_counts_links_where_the_model_is_the_target_too(linked: Client) -> None:
    searched = await call(linked, "search", {"bk_obj_id": "bk_switch", "page": {"limit": 500}})
    counted = await call(linked, "count", {"bk_obj_id": "bk_switch"})

    assert counted.data["count"] == len(searched.data["info"]) == len(PAIRS) + 1


async def test_search_sorts_pages_and_projects(linked: Client) -> None:
    params = {
        "bk_obj_id": "host",
        "fields": ["bk_inst_id", "bk_asst_inst_id"],
        "page": {"start": 1, "limit": 3, "sort": "-bk_asst_inst_id,bk_inst_id"},
    }

    answer = await call(linked, "search", params)

    assert answer.data["info"] == [
        {"bk_inst_id": 14, "bk_asst_inst_id": 24},
        {"bk_inst_id": 13, "bk_asst_inst_id": 23},
        {"bk_inst_id": 11, "bk_asst_inst_id": 22},
    ]


NESTED_4 = {"condition": "AND", "rules": [{"condition": "AND", "rules": [{"condition": "AND", "rules": [
    {"condition": "AND", "rules": [rule("id", "exist")]}]}]}]}  # fmt: skip


@pytest.mark.parametrize("operation", ["search", "count"])
@pytest.mark.parametrize(
    ("conditions", "code"),
    [
        ({"condition": "XOR", "rules": [rule("id", "exist")]}, 1199006),
        ({"condition": "AND", "rules": []}, 1199006),
        ({"condition": "AND", "rules": [rule("bk_inst_name", "equal", "x")]}, 1199006),
        ({"condition": "AND", "rules": [rule("id", "regex", ".*")]}, 1199006),
        ({"condition": "AND", "rules": [rule("id", "equal", {"$gt": 0})]}, 1199006),
        ({"condition": "AND", "rules": [rule("id", "in", 5)]}, 1199006),
        ({"condition": "AND", "rules": [rule("id", "in", list(range(501)))]}, 1199006),
        ({"condition": "OR", "rules": [rule("id", "equal", n) for n in range(21)]}, 1199006),
        ({"condition": "AND", "rules": [rule("bk_obj_id", "less", "x")]}, 1199006),
        ({"condition": "AND", "rules": [rule("id", "in", [1, "x"])]}, 1199006),
        (NESTED_4, 1199006),
        ("AND", 1199000),  # not a rule tree: bk-cmdb's decoder refuses it
        ({"condition": "AND", "rules": [5]}, 1199000),
    ],
)
async def test_search_and_count_refuse_bad_conditions(
    linked: Client, operation: str, conditions: Any, code: int
) -> None:
    answer = await call(linked, operation, {"bk_obj_id": "host", "conditions": conditions})

    assert (answer.result, answer.code) == (False, code)


async def test_search_takes_a_limit_of_1_to_500_and_names_what_is_wrong(linked: Client) -> None:
    over = await call(linked, "search", {"bk_obj_id": "host", "page": {"limit": 501}}, spelling="esb")
    missing = await call(linked, "search", {"bk_obj_id": "host"})
    negative = await call(linked, "search", {"bk_obj_id": "host", "page": {"start": -1, "limit": 5}})

    assert (over.code, over.message) == (1199006, "'page.limit' data parameter verification does not pass")
    assert (missing.code, missing.message) == (1199006, "'page.limit' data parameter verification does not pass")
    assert (negative.code, negative.message) == (1199006, "'page.start' data parameter verification does not pass")


@pytest.mark.parametrize("operation", ["search", "count"])
async def test_bad_rules_are_named_by_their_path_under_conditions(linked: Client, operation: str) -> None:
    """CONTRACT-ui Correction d: each failure answers 1199006 with the rule's path."""
    page = {"page": {"limit": 10}}
    cases = [
        ({"condition": "AND", "rules": [rule("id", "equal", 1), rule("id", "bogus", 1)]},
         "conditions.rules[1].operator"),
        ({"condition": "AND", "rules": [{"condition": "OR", "rules": [rule("-x", "equal", 1)]}]},
         "conditions.rules[0].rules[0].field"),
        ({"condition": "AND", "rules": [rule("id", "greater", "x")]}, "conditions.rules[0].value"),
        ({"condition": "OR", "rules": [rule("id", "equal", n) for n in range(21)]}, "conditions.rules"),
        (NESTED_4, "conditions.rules"),
    ]  # fmt: skip
    for conditions, path in cases:
        answer = await call(linked, operation, {"bk_obj_id": "host", "conditions": conditions, **page})
        assert (answer.code, answer.message) == (1199006, f"'{path}' data parameter verification does not pass"), (
            conditions
        )


async def test_bk_cmdbs_documented_example_and_every_operator_are_served(linked: Client) -> None:
    """bk-cmdb's own search example compares bk_asst_id with a number (no link matches, but it is no error), and
    all 24 operators of its query builder are taken."""
    example = {"condition": "AND", "rules": [rule("bk_asst_id", "equal", 3)]}
    operators = [
        rule("bk_obj_asst_id", "begins_with", "bk_switch"), rule("bk_obj_asst_id", "not_ends_with", "_app"),
        rule("bk_asst_id", "contains", "LONG"), rule("bk_asst_id", "not_contains", "run"),
        rule("bk_obj_id", "not_begins_with", "app"), rule("bk_asst_obj_id", "ends_with", "host"),
        rule("bk_biz_id", "is_null"), rule("bk_biz_id", "is_not_empty"),
    ]  # fmt: skip

    counted = await call(linked, "count", {"bk_obj_id": "host", "conditions": example})
    found = {
        (one["field"], one["operator"]): await call(linked, "search", {
            "bk_obj_id": "host", "page": {"limit": 500}, "conditions": {"condition": "AND", "rules": [one]}})
        for one in operators
    }  # fmt: skip

    assert (counted.code, counted.data) == (0, {"count": 0})
    assert {key: answer.code for key, answer in found.items()} == dict.fromkeys(found, 0)
    assert found[("bk_asst_id", "contains")].data["info"]  # "belong", case aside


# Values drawn from what the store holds, plus some it does not.
INT_VALUES = st.sampled_from([0, 11, 12, 13, 21, 22, 25, 31, 41, 99])
STRING_VALUES = st.sampled_from(["bk_switch", "host", "app", "bk_router", "belong", "run", "connect",
                                 "bk_switch_belong_bk_host", "app_run_host", "nothing"])  # fmt: skip
INT_BUILDER_FIELDS = sorted(BUILDER_FIELDS & {"id", "bk_inst_id", "bk_asst_inst_id"})
STRING_BUILDER_FIELDS = sorted(BUILDER_FIELDS - set(INT_BUILDER_FIELDS))


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    """One random, valid query-builder rule."""
    is_int = draw(st.booleans())
    field = draw(st.sampled_from(INT_BUILDER_FIELDS if is_int else STRING_BUILDER_FIELDS))
    values = INT_VALUES if is_int else STRING_VALUES
    comparisons = ["less", "less_or_equal", "greater", "greater_or_equal"] if is_int else []  # numbers only
    operator = draw(st.sampled_from(["equal", "not_equal", "in", "not_in", *comparisons, "exist", "not_exist"]))
    if operator in ("in", "not_in"):
        return rule(field, operator, draw(st.lists(values, max_size=4)))
    if operator in ("exist", "not_exist"):
        return rule(field, operator)
    return rule(field, operator, draw(values))


def groups(depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    """Random, valid query-builder conditions up to bk-cmdb's depth 3 (two levels of groups, then rules)."""
    children: st.SearchStrategy[Any] = rules() if depth == 2 else st.one_of(rules(), groups(depth + 1))
    return st.builds(
        lambda combinator, items: {"condition": combinator, "rules": items},
        st.sampled_from(["AND", "OR"]),
        st.lists(children, min_size=1, max_size=4),
    )


def rule_holds(link: dict[str, Any], field: str, operator: str, want: Any) -> bool:
    """One rule, read as MongoDB reads its operator (a missing field is "not equal" and never compares)."""
    present, value = field in link, link.get(field)
    if operator in ("exist", "not_exist"):
        return present is (operator == "exist")
    if operator in ("in", "not_in"):
        return (present and value in want) is (operator == "in")
    if operator == "not_equal":
        return not present or value != want
    if not present or isinstance(value, str) is not isinstance(want, str):
        return False
    compare: dict[str, bool] = {
        "equal": value == want,
        "less": value < want,
        "less_or_equal": value <= want,
        "greater": value > want,
        "greater_or_equal": value >= want,
    }
    return compare[operator]


def holds(link: dict[str, Any], conditions: dict[str, Any]) -> bool:
    """A plain-Python reading of query-builder conditions: the oracle the store's answers are checked against."""
    results = []
    for item in conditions["rules"]:
        if "condition" in item:
            results.append(holds(link, item))
            continue
        results.append(rule_holds(link, item["field"], item["operator"], item["value"]))
    return all(results) if conditions["condition"] == "AND" else any(results)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conditions=groups())
async def test_count_equals_an_unpaged_search_and_both_match_the_conditions(
    linked: Client, mock_mongo: MongoConnection, conditions: dict[str, Any]
) -> None:
    searched = await call(linked, "search", {"bk_obj_id": "host", "conditions": conditions, "page": {"limit": 500}})
    counted = await call(linked, "count", {"bk_obj_id": "host", "conditions": conditions})

    assert searched.code == counted.code == 0
    assert counted.data["count"] == len(searched.data["info"])
    expected = [link["id"] for link in await links_in(mock_mongo, "host") if holds(link, conditions)]
    assert [link["id"] for link in searched.data["info"]] == expected


# --- view permission ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("find", {"bk_obj_id": "host", "condition": {}}),
        ("find_related", {"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, **FIELDS}),
        ("search", {"bk_obj_id": "host", "page": {"limit": 10}}),
        ("count", {"bk_obj_id": "host"}),
    ],
)
@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_every_query_needs_view_permission_count_included(
    make_client: MakeClient, operation: str, params: dict[str, Any], spelling: str
) -> None:
    client = await make_client(authorizer=StaticPolicy({"eve": UserGrants(view=frozenset({"bk_switch"}))}))

    denied = await call(client, operation, params, spelling=spelling, user="eve")
    allowed = await call(client, operation, {**params, "bk_obj_id": "bk_switch"} if "bk_obj_id" in params else params,
                         spelling=spelling, user="eve")  # fmt: skip

    assert (denied.result, denied.code, denied.data) == (False, 9900403, None)
    # bk-cmdb's type-level view of hosts (CONTRACT-ui Correction a), not a `find_comobj_*` IAM does not know.
    assert denied.permission["actions"] == [
        {"id": "view_resource_pool_host", "name": "主机池主机查看", "related_resource_types": []}
    ]
    assert allowed.code == (0 if "bk_obj_id" in params else 9900403)


async def test_a_links_claim_by_a_running_delete_is_never_shown(linked: Client, mock_mongo: MongoConnection) -> None:
    # A delete marks the links it claimed until it removes them; a read in between must not show the mark.
    for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"):
        await mock_mongo.db[table].update_many({}, {"$set": {"cmdb_asso_deleting": "t", "cmdb_asso_deleting_at": 1.0}})
    reads: list[tuple[str, dict[str, Any]]] = [
        ("find", {"bk_obj_id": "host", "condition": {}}),
        ("find_related", {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, "page": {"limit": 10}, **FIELDS}),
        ("search", {"bk_obj_id": "bk_switch", "conditions": None, "page": {"limit": 10}}),
    ]
    for operation, params in reads:
        answer = await call(linked, operation, params)
        assert answer.code == 0, (operation, answer)
        links = answer.data["info"] if isinstance(answer.data, dict) else answer.data
        assert links
        assert not [key for link in links for key in link if key.startswith("cmdb_asso")], (operation, links)


async def test_set_module_process_and_custom_mainline_levels_are_never_denied_a_view(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    client = await make_client(authorizer=StaticPolicy({"eve": UserGrants()}))
    before = await call(client, "find", {"bk_obj_id": "app", "condition": {}}, user="eve")
    await mock_mongo.db["cc_ObjAsst"].insert_one({"id": 90, "bk_obj_asst_id": "app_bk_mainline_biz", "bk_obj_id": "app",
                                                  "bk_asst_obj_id": "biz", "bk_asst_id": "bk_mainline",
                                                  "bk_supplier_account": "0"})  # fmt: skip

    level = await call(client, "find", {"bk_obj_id": "app", "condition": {}}, user="eve")
    builtin = [await call(client, "find", {"bk_obj_id": obj_id, "condition": {}}, user="eve")
               for obj_id in ("set", "module", "process")]  # fmt: skip
    business = await call(client, "find", {"bk_obj_id": "biz", "condition": {}}, user="eve")

    assert before.code == 9900403
    assert level.code == 0, level  # app is now a custom mainline level
    assert [answer.code for answer in builtin] == [0, 0, 0]
    assert business.code == 9900403  # the mainline's business is checked (find_business)
    assert business.permission["actions"][0]["id"] == "find_business"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"bk_obj_id": "host", "condition": {"id": -9223372036854775809}}', "id"),  # below int64: a float
        (b'{"bk_obj_id": "host", "condition": {"bk_inst_id": {"$in": [1, 18446744073709551616]}}}', "$in"),
        (b'{"bk_obj_id": "host", "condition": {"id": 1e300}}', "id"),
    ],
)
async def test_a_number_past_what_a_float_names_exactly_is_refused_not_rounded(
    linked: Client, raw: bytes, named: str
) -> None:
    response = await linked.post("/api/v3/find/instassociation", data=raw, headers={"X-Bkcmdb-User": "admin"})
    answer = await response.json()

    assert (answer["bk_error_code"], answer["bk_error_msg"]) == (
        1199006,
        f"'{named}' data parameter verification does not pass",
    )


async def test_an_integral_float_within_2_to_the_53_still_names_its_integer(linked: Client) -> None:
    answer = await call(linked, "find", {"bk_obj_id": "host", "condition": {"bk_asst_inst_id": 21.0}})

    assert answer.code == 0, answer
    assert answer.data
