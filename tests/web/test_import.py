"""Importing an Excel sheet's association rows (CONTRACT-ui 23.2): rows named by unique keys, judged in row order,
each on its own, with bk-cmdb's row messages."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import Answer, read_envelope

Client = TestClient[Any, Any]
IMPORT = "/api/v3/import/instassociation/{}"
# The demo's unique rules (one per model, on its name attribute): host 1, bk_switch 2, bk_router 3, app 4.
UNIQUES = {"host": 1, "bk_switch": 2, "bk_router": 3, "app": 4}
SWITCH_HOST = "bk_switch_belong_bk_host"


def row(obj_asst_id: str, operate: int, src: str, dst: str) -> dict[str, Any]:
    """One sheet row as bk-cmdb's web server sends it."""
    return {"bk_obj_asst_id": obj_asst_id, "operate": operate, "src_primary_key": src, "dst_primary_key": dst}


def body(obj_id: str, rows: dict[int, dict[str, Any]], others: dict[str, int] | None = None) -> dict[str, Any]:
    """An import body for `obj_id`, naming the other models by the demo's unique rules."""
    other_models = others if others is not None else {m: u for m, u in UNIQUES.items() if m != obj_id}
    return {"association_info": {str(number): item for number, item in rows.items()},
            "object_unique_id": UNIQUES[obj_id], "asst_object_unique_id_info": other_models}  # fmt: skip


async def send(client: Client, obj_id: str, payload: Any, *, user: str = "admin", language: str = "en") -> Answer:
    """Post an import (bytes as they are, anything else as JSON)."""
    data = payload if isinstance(payload, bytes) else None
    response = await client.post(IMPORT.format(obj_id), data=data, json=None if data is not None else payload,
                                 headers={"X-Bkcmdb-User": user, "HTTP_BLUEKING_LANGUAGE": language})  # fmt: skip
    return read_envelope(response.status, await response.json(), response.headers.copy())


async def links(mongo: MongoConnection, obj_id: str) -> set[tuple[str, int, int]]:
    """The links in `obj_id`'s table."""
    docs = await mongo.db[f"cc_InstAsst_0_pub_{obj_id}"].find({}).to_list(None)
    return {(doc["bk_obj_asst_id"], doc["bk_inst_id"], doc["bk_asst_inst_id"]) for doc in docs}


async def test_rows_add_and_delete_links_named_by_their_keys_and_each_bad_row_gets_bk_cmdbs_message(
    client: Client, mock_mongo: MongoConnection
) -> None:
    rows = {
        3: row(SWITCH_HOST, 2, "Instance Name=switch-11", "Hostname=host-21"),
        4: row(SWITCH_HOST, 2, "Instance Name=switch-11", "Hostname=host-21"),  # the same link again: done
        5: row("bk_switch_belong_nothing", 2, "Instance Name=switch-11", "Hostname=host-21"),
        6: row(SWITCH_HOST, 2, "Instance Name=switch-99", "Hostname=host-21"),
        7: row(SWITCH_HOST, 2, "Instance Name=switch-12", "Hostname=host-21,Hostname"),
        8: row(SWITCH_HOST, 2, "Instance Name=switch-12", "Name=host-21"),
        9: row(SWITCH_HOST, 1, "Instance Name=switch-12", "Hostname=host-22"),
        10: row(SWITCH_HOST, 2, " Instance Name=switch-12 ", "Hostname=host-22"),  # trimmed, unlike bk-cmdb
        11: row(SWITCH_HOST, 3, "Instance Name=switch-13", "Hostname=host-23"),  # nothing to delete: no error
        12: row("bk_router_connect_bk_switch", 2, "Instance Name=router-31", "Instance Name=switch-14"),
    }

    answer = await send(client, "bk_switch", body("bk_switch", rows))

    assert answer.code == 0, answer
    assert answer.body["data"] == {"err_msg": [
        {"row": 5, "message": "association [bk_switch_belong_nothing]  does not exists"},
        {"row": 6, "message": "[bk_switch] model [Instance Name=switch-99]  does not exists"},
        {"row": 7, "message": "[host] association primary Key [Hostname=host-21,Hostname] data format error"},
        {"row": 8, "message": "[host] object unique rule does not contain 'rule: [Name]'"},
        {"row": 9, "message": "operate not found"},
    ]}  # fmt: skip
    assert list(answer.body["data"]["err_msg"][0]) == ["row", "message"]
    assert await links(mock_mongo, "bk_switch") == {(SWITCH_HOST, 11, 21), (SWITCH_HOST, 12, 22),
                                                    ("bk_router_connect_bk_switch", 31, 14)}  # fmt: skip
    assert await links(mock_mongo, "host") == {(SWITCH_HOST, 11, 21), (SWITCH_HOST, 12, 22)}
    audits = await mock_mongo.db["cc_AuditLog"].find({}).to_list(None)
    assert len(audits) == 3


async def test_rows_are_judged_in_row_order_each_seeing_the_rows_before_it(
    client: Client, mock_mongo: MongoConnection
) -> None:
    rows = {
        # 1:1: one host per app and one app per host
        20: row("app_run_host", 2, "Name=app-41", "Hostname=host-21"),
        21: row("app_run_host", 2, "Name=app-41", "Hostname=host-22"),
        22: row("app_run_host", 2, "Name=app-42", "Hostname=host-21"),
        # add, delete, add again: the link exists at the end; delete then add of a new one
        23: row("app_run_host", 2, "Name=app-43", "Hostname=host-23"),
        24: row("app_run_host", 3, "Name=app-43", "Hostname=host-23"),
        25: row("app_run_host", 2, "Name=app-43", "Hostname=host-24"),
        # 1:n: one router per switch; the second router is refused
        30: row("bk_router_connect_bk_switch", 2, "Instance Name=router-31", "Instance Name=switch-11"),
        31: row("bk_router_connect_bk_switch", 2, "Instance Name=router-32", "Instance Name=switch-11"),
    }
    rows_for_app = {number: item for number, item in rows.items() if number < 30}

    app_answer = await send(client, "app", body("app", rows_for_app))
    router_answer = await send(client, "bk_switch", body("bk_switch", {30: rows[30], 31: rows[31]}))

    assert app_answer.body["data"] == {"err_msg": [
        {"row": 21, "message": "duplicated instances exist, fields [association] duplicated"},
        {"row": 22, "message": "can not create multiple instance association for a 1:1 association."},
    ]}  # fmt: skip
    one_to_n = "The relationship is 1:n, and multiple source model instances cannot be associated at the same time."
    assert router_answer.body["data"] == {"err_msg": [{"row": 31, "message": one_to_n}]}
    assert await links(mock_mongo, "app") == {("app_run_host", 41, 21), ("app_run_host", 43, 24)}
    deleted = await mock_mongo.db["cc_DelArchive"].count_documents({})
    assert deleted == 2  # the link of row 23, from both tables


async def test_a_denied_row_fails_alone_and_the_messages_follow_the_request_language(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    client = await make_client(authorizer=StaticPolicy({"eve": UserGrants(edit=frozenset({"bk_switch", "host"}))}))
    rows = {
        3: row(SWITCH_HOST, 2, "实例名=switch-11", "主机名称=host-21"),
        4: row("app_run_host", 2, "Name=app-41", "主机名称=host-21"),
        5: row(SWITCH_HOST, 2, "实例名=switch-11", "Hostname=host-22"),
    }

    answer = await send(client, "host", body("host", rows), user="eve", language="zh")

    assert answer.body["data"] == {"err_msg": [
        {"row": 4, "message": "没有操作的权限"},
        {"row": 5, "message": "[host]唯一校验中不存在“规则：[Hostname]”"},
    ]}  # fmt: skip
    assert await links(mock_mongo, "host") == {(SWITCH_HOST, 11, 21)}


async def test_a_body_that_does_not_decode_answers_1199006_with_the_decoders_text(client: Client) -> None:
    cases = [
        b"{bad",
        b"[]",
        {"association_info": {"three": row(SWITCH_HOST, 2, "a=b", "c=d")}},
        {"association_info": {"3": row(SWITCH_HOST, "2", "a=b", "c=d")}},  # type: ignore[arg-type]
        {"association_info": {"3": row(SWITCH_HOST, 2, "a=b", 5)}},  # type: ignore[arg-type]
        {"association_info": []},
        {"object_unique_id": 1.5},
        {"asst_object_unique_id_info": {"host": "1"}},
    ]
    for payload in cases:
        answer = await send(client, "bk_switch", payload)
        assert (answer.code, answer.message) == (1199006, "Deserializing JSON data failed"), (payload, answer)
    for empty in (b"", b"null", {}, {"association_info": None}):
        answer = await send(client, "bk_switch", empty)
        assert (answer.code, answer.body["data"]) == (0, {"err_msg": None}), (empty, answer)


async def test_more_rows_than_an_import_takes_answer_1199035(client: Client) -> None:
    rows = {number: row(SWITCH_HOST, 2, "a=b", "c=d") for number in range(3, 1004)}

    answer = await send(client, "bk_switch", body("bk_switch", rows))

    assert (answer.code, answer.message) == (1199035, " association_info exceed the limit 1000")


async def test_key_values_are_compared_by_their_attributes_type(client: Client, mock_mongo: MongoConnection) -> None:
    # A unique rule of two keys on the switch: an int and an enum (bk-cmdb compares their text to typed values and
    # never finds the instance; we convert as its convStrToCCType intends).
    await mock_mongo.db["cc_ObjAttDes"].insert_many([
        {"id": 50, "bk_obj_id": "bk_switch", "bk_property_id": "port_count", "bk_property_name": "Ports",
         "bk_property_type": "int", "bk_supplier_account": "0"},
        {"id": 51, "bk_obj_id": "bk_switch", "bk_property_id": "tier", "bk_property_name": "Tier",
         "bk_property_type": "enum", "option": [{"id": "t1", "name": "core"}, {"id": "t2", "name": "edge"}],
         "bk_supplier_account": "0"},
    ])  # fmt: skip
    await mock_mongo.db["cc_ObjectUnique"].insert_one(
        {"id": 9, "bk_obj_id": "bk_switch", "keys": [{"key_kind": "property", "key_id": 50},
                                                      {"key_kind": "property", "key_id": 51}],
         "bk_supplier_account": "0"})  # fmt: skip
    table = mock_mongo.db["cc_ObjectBase_0_pub_bk_switch"]
    await table.update_one({"bk_inst_id": 12}, {"$set": {"port_count": 48, "tier": "t2"}})
    rows = {
        3: row(SWITCH_HOST, 2, "Ports=48,Tier=edge", "Hostname=host-23"),
        4: row(SWITCH_HOST, 2, "Ports=forty,Tier=edge", "Hostname=host-23"),
        5: row(SWITCH_HOST, 2, "Ports=48", "Hostname=host-23"),
        6: row(SWITCH_HOST, 2, "Ports=48,Tier=core", "Hostname=host-23"),
    }

    answer = await send(client, "bk_switch", {**body("bk_switch", rows), "object_unique_id": 9})

    assert answer.body["data"] == {"err_msg": [
        {"row": 4, "message": "[bk_switch] association primary Key [Ports] data transform type  error"},
        {"row": 5, "message": " [bk_switch] Object [Ports=48] primary Key  count error"},
        {"row": 6, "message": "[bk_switch] model [Ports=48,Tier=core]  does not exists"},
    ]}  # fmt: skip
    assert await links(mock_mongo, "bk_switch") == {(SWITCH_HOST, 12, 23)}


async def test_a_row_of_a_definition_whose_stored_mapping_is_unknown_fails_alone_with_1199011s_text(
    client: Client, mock_mongo: MongoConnection
) -> None:
    await mock_mongo.db["cc_ObjAsst"].update_one({"bk_obj_asst_id": SWITCH_HOST}, {"$set": {"mapping": "m:n"}})
    rows = {
        3: row(SWITCH_HOST, 2, "Instance Name=switch-11", "Hostname=host-21"),
        4: row(SWITCH_HOST, 3, "Instance Name=switch-14", "Hostname=host-24"),
        5: row("bk_router_connect_bk_switch", 2, "Instance Name=router-31", "Instance Name=switch-11"),
    }
    before = await links(mock_mongo, "host")

    answer = await send(client, "bk_switch", body("bk_switch", rows))

    assert answer.code == 0, answer  # before: 1199999 with HTTP 500, the whole import lost
    unknown = "'mapping' the parameter is invalid or does not exist"
    assert answer.body["data"] == {"err_msg": [{"row": 3, "message": unknown}, {"row": 4, "message": unknown}]}
    assert await links(mock_mongo, "host") == before  # neither added nor deleted
    assert ("bk_router_connect_bk_switch", 31, 11) in await links(mock_mongo, "bk_switch")
