"""Create-one through the HTTP app, by both spellings: every check of CONTRACT section 5, in order."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, add_definition, audit_records, create, link_body, links_in

Client = TestClient[Any, Any]
SEED = link_body("bk_switch_belong_bk_host", 11, 21)


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_the_seed_request_creates_a_link_in_both_tables_with_its_audit_record(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    answer = await create(client, SEED, spelling=spelling, user="alice")

    assert answer.status == 200
    assert (answer.result, answer.code, answer.message, answer.permission) == (True, 0, "success", None)
    new_id = answer.data["id"]
    assert isinstance(new_id, int)
    assert new_id > 0
    expected = {
        "id": new_id,
        "bk_inst_id": 11,
        "bk_obj_id": "bk_switch",
        "bk_asst_inst_id": 21,
        "bk_asst_obj_id": "host",
        "bk_supplier_account": "0",
        "bk_obj_asst_id": "bk_switch_belong_bk_host",
        "bk_asst_id": "belong",
        "bk_biz_id": 0,
    }
    for obj_id in ("bk_switch", "host"):
        (stored,) = await links_in(mock_mongo, obj_id)
        # bk-cmdb's own create_time and last_time are kept too.
        assert stored.pop("create_time") == stored.pop("last_time")
        assert stored == expected
        assert all(type(stored[key]) is Int64 for key in ("id", "bk_inst_id", "bk_asst_inst_id", "bk_biz_id"))
    (audit,) = await audit_records(mock_mongo)
    assert audit["audit_type"] == "model_instance"
    assert audit["resource_type"] == "instance_association"
    assert audit["action"] == "create"
    assert audit["operate_from"] == "user"
    assert audit["user"] == "alice"
    assert audit["bk_supplier_account"] == "0"
    assert audit["bk_biz_id"] == 0
    assert audit["resource_id"] == 11
    assert audit["resource_name"] == "switch-11"
    assert audit["code"] == ("esb_test" if spelling == "esb" else "")
    assert audit["rid"]
    assert audit["extend_resource_name"] == ""
    assert audit["operation_detail"] == {
        "asst_id": "bk_switch_belong_bk_host",
        "asst_kind": "belong",
        "src_obj_id": "bk_switch",
        "dest_obj_id": "host",
        "dest_inst_id": 21,
        "dest_inst_name": "host-21",
    }


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_the_esb_body_carries_the_request_id_that_the_headers_echo(client: Client, spelling: str) -> None:
    answer = await create(client, SEED, spelling=spelling, headers={"X-Request-Id": "trace-42"})

    assert answer.headers["X-Request-Id"] == "trace-42"
    assert answer.headers["X-Bkapi-Request-Id"] == "trace-42"
    if spelling == "esb":
        assert answer.body["request_id"] == "trace-42"


async def test_a_generated_request_id_is_stored_in_the_audit_record(
    client: Client, mock_mongo: MongoConnection
) -> None:
    answer = await create(client, SEED, spelling="esb")

    (audit,) = await audit_records(mock_mongo)
    assert audit["rid"] == answer.body["request_id"] == answer.headers["X-Request-Id"]


async def test_a_self_association_is_written_once(client: Client, mock_mongo: MongoConnection) -> None:
    answer = await create(client, link_body("host_connect_host", 21, 21))

    assert answer.code == 0
    (stored,) = await links_in(mock_mongo, "host")
    assert (stored["bk_inst_id"], stored["bk_asst_inst_id"]) == (21, 21)


async def test_esb_paths_without_version_or_trailing_slash_answer_too(client: Client) -> None:
    for index, path in enumerate(
        (
            "/api/c/compapi/v2/cc/add_instance_association",
            "/api/c/compapi/cc/add_instance_association/",
            "/api/c/compapi/cc/add_instance_association",
        )
    ):
        body = {"bk_username": "admin", **link_body("bk_switch_belong_bk_host", 11 + index, 22)}
        response = await client.post(path, json=body)
        assert (response.status, (await response.json())["code"]) == (200, 0)


async def test_unknown_body_keys_are_ignored(client: Client) -> None:
    answer = await create(client, {**SEED, "bk_obj_id": "ignored", "extra": [1, 2]})

    assert answer.code == 0


# --- step 1: the body -----------------------------------------------------------------------------------------

BAD_BODIES: list[tuple[Any, int, str]] = [
    ([1, 2], 1199006, "body"),
    ("text", 1199006, "body"),
    ({"bk_inst_id": 11, "bk_asst_inst_id": 21}, 1199010, "bk_obj_asst_id"),
    ({"bk_obj_asst_id": None, "bk_inst_id": 11, "bk_asst_inst_id": 21}, 1199010, "bk_obj_asst_id"),
    ({"bk_obj_asst_id": "", "bk_inst_id": 11, "bk_asst_inst_id": 21}, 1199010, "bk_obj_asst_id"),
    ({"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_inst_id": 21}, 1199010, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", 11, None), 1199010, "bk_asst_inst_id"),
    (link_body(5, 11, 21), 1199006, "bk_obj_asst_id"),
    (link_body("bk_switch_belong_bk_host", "11", 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", True, 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", 11.5, 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", 2**63, 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", 0, 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", -3, 21), 1199006, "bk_inst_id"),
    (link_body("bk_switch_belong_bk_host", 11, [21]), 1199006, "bk_asst_inst_id"),
    (link_body("bk_switch_belong_bk_host", 11, {"$gt": 0}), 1199006, "bk_asst_inst_id"),
    # The first failing field in the contract's order answers, whatever the others hold.
    ({"bk_obj_asst_id": None, "bk_inst_id": "x"}, 1199010, "bk_obj_asst_id"),
    (link_body("bk_switch_belong_bk_host", "x", None), 1199006, "bk_inst_id"),
]
EN_TEXT = {1199006: "'{}' data parameter verification does not pass", 1199010: "'{}' unassigned"}
ZH_TEXT = {1199006: "'{}' 数据参数校验不通过", 1199010: "'{}' 未赋值"}


@pytest.mark.parametrize(
    ("spelling", "body", "code", "field"),
    # An ESB body that is not an object has no credentials in it: it is sent with the authorization header.
    [("native", *case) for case in BAD_BODIES] + [("esb", *case) for case in BAD_BODIES],
)
async def test_a_bad_body_answers_its_code_naming_the_field_and_writes_nothing(
    client: Client, mock_mongo: MongoConnection, spelling: str, body: Any, code: int, field: str
) -> None:
    headers = {"X-Bkapi-Authorization": '{"bk_app_code": "esb_test", "bk_username": "admin"}'}
    answer = await create(client, body, spelling=spelling, headers=headers)

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, code, None)
    assert answer.message == EN_TEXT[code].format(field)
    assert await links_in(mock_mongo, "bk_switch") == []


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_body_that_is_not_json_answers_1199006(client: Client, spelling: str) -> None:
    path = (
        "/api/v3/create/instassociation" if spelling == "native" else "/api/c/compapi/v2/cc/add_instance_association/"
    )
    headers = {"X-Bkcmdb-User": "admin", "X-Bkapi-Authorization": '{"bk_app_code": "a", "bk_username": "admin"}'}
    response = await client.post(path, data=b"{not json", headers=headers)

    body = await response.json()
    assert response.status == 200
    assert body["result"] is False
    assert body.get("bk_error_code", body.get("code")) == 1199006


@pytest.mark.parametrize(("body", "code", "field"), BAD_BODIES[2:8])
async def test_body_errors_speak_chinese_when_asked(client: Client, body: Any, code: int, field: str) -> None:
    answer = await create(client, body, language="zh")

    assert answer.code == code
    assert answer.message == ZH_TEXT[code].format(field)


async def test_integral_floats_are_accepted_as_integers(client: Client, mock_mongo: MongoConnection) -> None:
    answer = await create(client, link_body("bk_switch_belong_bk_host", 11.0, 21))

    assert answer.code == 0
    (stored,) = await links_in(mock_mongo, "bk_switch")
    assert stored["bk_inst_id"] == 11
    assert type(stored["bk_inst_id"]) is Int64


# --- steps 2 to 6 -----------------------------------------------------------------------------------------------

RULE_TEXT = {
    1101046: ("object association does not exist.", "模型的关联关系不存在"),
    1101062: ("object association do not unique.", "关联关系不唯一"),
    1101052: (
        "can not create multiple instance association for a 1:1 association.",
        "关联关系为1:1的，不能同时关联多个实例",
    ),
    1101061: (
        "The relationship is 1:n, and multiple source model instances cannot be associated at the same time.",
        "关联关系为1:n的，不能同时关联多个源模型实例",
    ),
    1199014: ("duplicated instances exist, fields [association] duplicated", "数据唯一性校验失败， association 重复"),
    1101073: ("the association inst is not exist", "关联实例不存在"),
    1101074: ("the  inst to asst  is not exist", "被关联实例不存在"),
}


async def assert_refused(client: Client, body: dict[str, Any], code: int, spelling: str, language: str) -> None:
    """The create answers `code` with its text in `language`."""
    answer = await create(client, body, spelling=spelling, language=language)
    assert (answer.status, answer.result, answer.code, answer.data, answer.permission) == (200, False, code, None, None)
    assert answer.message == RULE_TEXT[code][0 if language == "en" else 1]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_an_unknown_definition_answers_1101046(client: Client, spelling: str, language: str) -> None:
    await assert_refused(client, link_body("no_such_definition", 11, 21), 1101046, spelling, language)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_definition_under_two_suppliers_answers_1101062(
    client: Client, mock_mongo: MongoConnection, spelling: str, language: str
) -> None:
    await add_definition(mock_mongo, "twice", "bk_switch", "belong", "host", "n:n", supplier="0")
    await add_definition(mock_mongo, "twice", "bk_switch", "belong", "host", "n:n", supplier="tenant")
    headers = {"X-Bkcmdb-Supplier-Account": "tenant"} if spelling == "native" else {}
    body = {**link_body("twice", 11, 21), **({"bk_supplier_account": "tenant"} if spelling == "esb" else {})}
    answer = await create(client, body, spelling=spelling, language=language, headers=headers)

    assert answer.code == 1101062
    assert answer.message == RULE_TEXT[1101062][0 if language == "en" else 1]


async def test_a_definition_of_another_supplier_is_not_seen(client: Client, mock_mongo: MongoConnection) -> None:
    await add_definition(mock_mongo, "theirs", "bk_switch", "belong", "host", "n:n", supplier="other")

    answer = await create(client, link_body("theirs", 11, 21))

    assert answer.code == 1101046


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_one_to_one_refuses_a_second_link_of_the_source_or_of_the_target(
    client: Client, mock_mongo: MongoConnection, spelling: str, language: str
) -> None:
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0

    await assert_refused(client, link_body("app_run_host", 41, 22), 1101052, spelling, language)
    await assert_refused(client, link_body("app_run_host", 42, 21), 1101052, spelling, language)
    # The exact same link is refused by the mapping rule first (step 4 before step 5).
    await assert_refused(client, link_body("app_run_host", 41, 21), 1101052, spelling, language)
    assert len(await links_in(mock_mongo, "app")) == 1
    assert len(await audit_records(mock_mongo)) == 1


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_one_to_many_refuses_a_second_source_for_a_target(
    client: Client, mock_mongo: MongoConnection, spelling: str, language: str
) -> None:
    assert (await create(client, link_body("bk_router_connect_bk_switch", 31, 11))).code == 0
    assert (await create(client, link_body("bk_router_connect_bk_switch", 31, 12))).code == 0

    await assert_refused(client, link_body("bk_router_connect_bk_switch", 32, 11), 1101061, spelling, language)
    assert len(await links_in(mock_mongo, "bk_router")) == 2


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_many_to_many_refuses_only_the_exact_duplicate(
    client: Client, mock_mongo: MongoConnection, spelling: str, language: str
) -> None:
    for pair in ((11, 21), (11, 22), (12, 21)):
        assert (await create(client, link_body("bk_switch_belong_bk_host", *pair))).code == 0

    await assert_refused(client, link_body("bk_switch_belong_bk_host", 11, 21), 1199014, spelling, language)
    assert len(await links_in(mock_mongo, "bk_switch")) == 3


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_missing_source_answers_1101073_before_a_missing_target(
    client: Client, spelling: str, language: str
) -> None:
    await assert_refused(client, link_body("bk_switch_belong_bk_host", 99, 98), 1101073, spelling, language)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_missing_target_answers_1101074(
    client: Client, mock_mongo: MongoConnection, spelling: str, language: str
) -> None:
    await assert_refused(client, link_body("bk_switch_belong_bk_host", 11, 98), 1101074, spelling, language)
    assert await audit_records(mock_mongo) == []


async def test_the_mapping_rule_answers_before_a_missing_instance(client: Client) -> None:
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0

    answer = await create(client, link_body("app_run_host", 41, 99))

    assert answer.code == 1101052


# --- step 3: permission ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_user_without_edit_permission_on_the_target_is_denied_with_the_permission_payload(
    make_client: MakeClient, mock_mongo: MongoConnection, spelling: str
) -> None:
    policy = StaticPolicy({"bob": UserGrants(edit=frozenset({"bk_switch"}))})
    client = await make_client(authorizer=policy)
    await mock_mongo.db["cc_ApplicationBase"].insert_one({"bk_biz_id": 2, "bk_biz_name": "demo", "default": 0,
                                                          "bk_supplier_account": "0"})  # fmt: skip
    await mock_mongo.db["cc_ModuleHostConfig"].insert_one({"bk_host_id": 21, "bk_biz_id": 2, "bk_set_id": 3,
                                                           "bk_module_id": 4, "bk_supplier_account": "0"})  # fmt: skip
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"bk_host_innerip": ["10.0.0.21"]}})

    answer = await create(client, SEED, spelling=spelling, user="bob")

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, 9900403, None)
    assert answer.message == "Do not have access permission."
    # A host in a business: the business, then the host named by its inner IPs (CONTRACT-ui Correction a).
    assert answer.permission == {
        "system_id": "bk_cmdb",
        "system_name": "配置平台",
        "actions": [
            {
                "id": "edit_biz_host",
                "name": "业务主机编辑",
                "related_resource_types": [
                    {
                        "system_id": "bk_cmdb",
                        "system_name": "配置平台",
                        "type": "host",
                        "type_name": "主机",
                        "instances": [
                            [
                                {"type": "biz", "type_name": "业务", "id": "2", "name": "demo"},
                                {"type": "host", "type_name": "主机", "id": "21", "name": "10.0.0.21"},
                            ]
                        ],
                    }
                ],
            }
        ],
    }
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_custom_model_denial_names_its_comobj_action(make_client: MakeClient) -> None:
    client = await make_client(authorizer=StaticPolicy({"bob": UserGrants(edit=frozenset({"host"}))}))

    answer = await create(client, SEED, user="bob", language="zh")

    assert answer.code == 9900403
    assert answer.message == "没有操作的权限"
    (action,) = answer.permission["actions"]
    assert action["id"] == "edit_comobj_2"
    assert action["name"] == "交换机实例编辑"
    (resource,) = action["related_resource_types"]
    assert resource["type"] == "comobj_2"
    assert resource["instances"] == [[{"type": "comobj_2", "type_name": "交换机", "id": "11", "name": "switch-11"}]]


async def test_permission_is_checked_after_the_definition_and_before_the_rules(make_client: MakeClient) -> None:
    client = await make_client(authorizer=StaticPolicy({}))

    assert (await create(client, link_body("no_such_definition", 11, 21))).code == 1101046
    assert (await create(client, link_body("bk_switch_belong_bk_host", 99, 98))).code == 9900403


async def test_a_wildcard_grant_allows_every_model(make_client: MakeClient) -> None:
    client = await make_client(authorizer=StaticPolicy({"bob": UserGrants(edit=frozenset({"*"}))}))

    assert (await create(client, SEED, user="bob")).code == 0


# --- identity -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_missing_user_answers_1199027_with_401(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    answer = await create(client, SEED, spelling=spelling, user=None)

    assert (answer.status, answer.result, answer.code) == (401, False, 1199027)
    assert answer.message == "'user' authorization information query failed"
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_the_esb_authorization_header_wins_over_the_body(client: Client, mock_mongo: MongoConnection) -> None:
    header = '{"bk_app_code": "from_header", "bk_username": "header_user"}'
    body = {"bk_app_code": "from_body", "bk_username": "body_user", **SEED}
    response = await client.post(
        "/api/c/compapi/v2/cc/add_instance_association/", json=body, headers={"X-Bkapi-Authorization": header}
    )

    assert (await response.json())["code"] == 0
    (audit,) = await audit_records(mock_mongo)
    assert (audit["user"], audit["code"]) == ("header_user", "from_header")


async def test_a_malformed_esb_authorization_header_is_an_authentication_failure(client: Client) -> None:
    response = await client.post(
        "/api/c/compapi/v2/cc/add_instance_association/",
        json={"bk_username": "admin", **SEED},
        headers={"X-Bkapi-Authorization": "{broken"},
    )

    body = await response.json()
    assert response.status == 401
    assert (body["code"], body["message"]) == (1199046, "Authorize request failed.")
    assert response.headers["X-Bkapi-Error-Code"]


async def test_the_supplier_account_header_selects_the_tables(client: Client, mock_mongo: MongoConnection) -> None:
    await mock_mongo.db["cc_ObjectBase_tenant_pub_bk_switch"].insert_one(
        {"bk_obj_id": "bk_switch", "bk_inst_id": Int64(11), "bk_inst_name": "tenant-switch",
         "bk_supplier_account": "tenant"}
    )  # fmt: skip
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"bk_supplier_account": "tenant"}})
    answer = await create(client, SEED, headers={"X-Bkcmdb-Supplier-Account": "tenant"})

    assert answer.code == 0
    (stored,) = await links_in(mock_mongo, "bk_switch", supplier="tenant")
    assert stored["bk_supplier_account"] == "tenant"
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_supplier_account_that_cannot_name_a_table_is_refused(client: Client) -> None:
    answer = await create(client, SEED, headers={"X-Bkcmdb-Supplier-Account": "a.b$c"})

    assert (answer.code, answer.message) == (1199006, "'bk_supplier_account' data parameter verification does not pass")


@pytest.mark.parametrize("header", ["X-Bkcmdb-Language", "Blueking-Language", "HTTP_BLUEKING_LANGUAGE"])
async def test_each_language_header_selects_chinese(client: Client, header: str) -> None:
    answer = await create(client, link_body("no_such_definition", 11, 21), headers={header: "zh-cn"})

    assert answer.message == "模型的关联关系不存在"


async def test_the_configured_default_language_applies_without_a_header(make_client: MakeClient, settings: Any) -> None:
    from dataclasses import replace

    client = await make_client(app_settings=replace(settings, language="zh"))

    answer = await create(client, link_body("no_such_definition", 11, 21))

    assert answer.message == "模型的关联关系不存在"


@pytest.mark.parametrize("mapping", ["m:n", "", None, "N:N"])
async def test_a_definition_whose_mapping_is_unknown_gets_no_links(
    client: Client, mock_mongo: MongoConnection, mapping: Any
) -> None:
    await mock_mongo.db["cc_ObjAsst"].update_one({"bk_obj_asst_id": "app_run_host"}, {"$set": {"mapping": mapping}})

    answer = await create(client, link_body("app_run_host", 41, 21))

    # Not silently the least restrictive mapping: the rules of such a definition are unknown.
    assert (answer.code, answer.data) == (1199011, None)
    assert "'mapping'" in answer.message
    assert await links_in(mock_mongo, "app") == []


async def test_a_null_bk_username_is_a_missing_user_as_the_readme_says(client: Client) -> None:
    body = {**SEED, "bk_app_code": "esb_test", "bk_app_secret": "xxx", "bk_username": None}
    response = await client.post("/api/c/compapi/v2/cc/add_instance_association/", json=body)

    answer = await response.json()
    assert response.status == 401
    assert (answer["result"], answer["code"]) == (False, 1199027)


async def test_a_resource_pool_host_and_a_module_are_denied_with_bk_cmdbs_actions(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    """CONTRACT-ui Correction a: a host of the resource pool is edited in its directory, a set, module or custom
    mainline level through its business's topology."""
    await add_definition(mock_mongo, "host_run_module", "host", "run", "module", "n:n")
    await mock_mongo.db["cc_ApplicationBase"].insert_many([
        {"bk_biz_id": 1, "bk_biz_name": "资源池", "default": 1, "bk_supplier_account": "0"},
        {"bk_biz_id": 2, "bk_biz_name": "demo", "default": 0, "bk_supplier_account": "0"},
    ])  # fmt: skip
    await mock_mongo.db["cc_ModuleBase"].insert_many([
        {"bk_module_id": 7, "bk_module_name": "空闲机", "bk_biz_id": 1, "bk_supplier_account": "0"},
        {"bk_module_id": 8, "bk_module_name": "web", "bk_biz_id": 2, "bk_supplier_account": "0"},
    ])  # fmt: skip
    await mock_mongo.db["cc_ModuleHostConfig"].insert_one({"bk_host_id": 22, "bk_biz_id": 1, "bk_module_id": 7,
                                                           "bk_supplier_account": "0"})  # fmt: skip
    client = await make_client(authorizer=StaticPolicy({"bob": UserGrants()}))

    answer = await create(client, link_body("host_run_module", 22, 8), user="bob")

    assert answer.code == 9900403
    assert [(action["id"], action["name"], action["related_resource_types"][0]["type"],
             action["related_resource_types"][0]["instances"]) for action in answer.permission["actions"]] == [
        ("edit_resource_pool_host", "主机池主机编辑", "host", [[
            {"type": "sys_host_rsc_pool_directory", "type_name": "主机池主机", "id": "7", "name": "空闲机"},
            {"type": "host", "type_name": "主机", "id": "22", "name": ""}]]),
        ("edit_biz_topology", "业务拓扑编辑", "biz",
         [[{"type": "biz", "type_name": "业务", "id": "2", "name": "demo"}]]),
    ]  # fmt: skip
