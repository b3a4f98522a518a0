"""Create many through the HTTP app, by both spellings: request checks, per-index outcomes, atomic batches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.config import LimitSettings, Settings
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, audit_records, call, create, link_body, links_in

Client = TestClient[Any, Any]


def batch(obj_asst_id: str, src: str, dst: str, pairs: list[Any], **extra: Any) -> dict[str, Any]:
    """A create-many body; a pair is a (source, target) tuple or any raw detail."""
    details = [{"bk_inst_id": p[0], "bk_asst_inst_id": p[1]} if isinstance(p, tuple) else p for p in pairs]
    return {"bk_obj_asst_id": obj_asst_id, "bk_obj_id": src, "bk_asst_obj_id": dst, "details": details, **extra}


SWITCH_HOST = ("bk_switch_belong_bk_host", "bk_switch", "host")
APP_HOST = ("app_run_host", "app", "host")
ROUTER_SWITCH = ("bk_router_connect_bk_switch", "bk_router", "bk_switch")


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_mixed_batch_reports_each_index_and_writes_exactly_the_successful_ones(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    assert (await create(client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    pairs: list[Any] = [
        (12, 21),  # 0: created
        (11, 21),  # 1: repeats an existing link
        (99, 21),  # 2: no such source
        (12, 98),  # 3: no such target
        (13, 22),  # 4: created
        (13, 22),  # 5: repeats index 4
        {"bk_inst_id": -1, "bk_asst_inst_id": 21},  # 6: a bad detail
        {"bk_asst_inst_id": 21},  # 7: a missing field
    ]

    answer = await call(client, "create_many", batch(*SWITCH_HOST, pairs), spelling=spelling)

    assert (answer.status, answer.result, answer.code) == (200, True, 0)
    created = answer.data["success_created"]
    assert sorted(created) == ["0", "4"]
    assert answer.data["error_msg"] == {
        "1": "the associations bk_switch->host already exist",
        "2": "the association inst is not exist",
        "3": "the  inst to asst  is not exist",
        "5": "the associations bk_switch->host already exist",
        "6": "'bk_inst_id' data parameter verification does not pass",
        "7": "'bk_inst_id' unassigned",
    }
    stored = await links_in(mock_mongo, "bk_switch")
    assert [(doc["bk_inst_id"], doc["bk_asst_inst_id"]) for doc in stored] == [(11, 21), (12, 21), (13, 22)]
    assert sorted(doc["id"] for doc in stored[1:]) == sorted(created.values())
    assert [doc["id"] for doc in await links_in(mock_mongo, "host")] == [doc["id"] for doc in stored]
    audits = await audit_records(mock_mongo)
    assert [(a["resource_id"], a["operation_detail"]["dest_inst_id"]) for a in audits] == [(11, 21), (12, 21), (13, 22)]


async def test_error_messages_of_a_batch_follow_the_language(client: Client) -> None:
    answer = await call(client, "create_many", batch(*SWITCH_HOST, [(99, 21)]), language="zh")

    assert answer.data["error_msg"] == {"0": "关联实例不存在"}


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_under_one_to_one_the_first_detail_in_index_order_wins(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    pairs = [(41, 21), (41, 22), (42, 21), (43, 23)]

    answer = await call(client, "create_many", batch(*APP_HOST, pairs), spelling=spelling)

    assert sorted(answer.data["success_created"]) == ["0", "3"]
    text = "can not create multiple instance association for a 1:1 association."
    assert answer.data["error_msg"] == {"1": text, "2": text}
    stored = await links_in(mock_mongo, "app")
    assert [(doc["bk_inst_id"], doc["bk_asst_inst_id"]) for doc in stored] == [(41, 21), (43, 23)]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_under_one_to_many_a_second_source_for_a_target_is_refused(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    pairs = [(31, 11), (32, 11), (31, 12), (31, 11)]

    answer = await call(client, "create_many", batch(*ROUTER_SWITCH, pairs), spelling=spelling)

    assert sorted(answer.data["success_created"]) == ["0", "2"]
    text = "The relationship is 1:n, and multiple source model instances cannot be associated at the same time."
    # Index 3 repeats index 0: a duplicate first, as bk-cmdb's core judges a batch detail.
    assert answer.data["error_msg"] == {"1": text, "3": "the associations bk_router->bk_switch already exist"}
    assert len(await links_in(mock_mongo, "bk_router")) == 2


async def test_the_mapping_rules_hold_against_existing_links_too(client: Client) -> None:
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0

    answer = await call(client, "create_many", batch(*APP_HOST, [(42, 21), (42, 22)]))

    assert sorted(answer.data["success_created"]) == ["1"]
    assert list(answer.data["error_msg"]) == ["0"]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_an_atomic_batch_with_one_bad_detail_writes_nothing(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    answer = await call(
        client, "create_many", batch(*SWITCH_HOST, [(11, 21), (12, 22), (12, 98)], atomic=True), spelling=spelling
    )

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, 1101074, None)
    assert await links_in(mock_mongo, "bk_switch") == []
    assert await audit_records(mock_mongo) == []


async def test_an_atomic_batch_answers_the_first_failing_index(client: Client) -> None:
    pairs: list[Any] = [(11, 21), {"bk_inst_id": -1, "bk_asst_inst_id": 1}, (99, 21)]

    answer = await call(client, "create_many", batch(*SWITCH_HOST, pairs, atomic=True))

    assert (answer.result, answer.code) == (False, 1199006)


async def test_an_atomic_batch_without_faults_writes_everything(client: Client, mock_mongo: MongoConnection) -> None:
    answer = await call(client, "create_many", batch(*SWITCH_HOST, [(11, 21), (12, 22)], atomic=True))

    assert answer.result is True
    assert sorted(answer.data["success_created"]) == ["0", "1"]
    assert answer.data["error_msg"] == {}
    assert len(await links_in(mock_mongo, "host")) == 2


REQUEST_ERRORS: list[tuple[dict[str, Any], int, str]] = [
    (
        {**batch(*SWITCH_HOST, [(11, 21)]), "bk_obj_asst_id": ""},
        1199011,
        "'bk_obj_asst_id' the parameter is invalid or does not exist",
    ),
    (
        {**batch(*SWITCH_HOST, [(11, 21)]), "bk_obj_id": ""},
        1199011,
        "'bk_obj_id' the parameter is invalid or does not exist",
    ),
    (
        {**batch(*SWITCH_HOST, [(11, 21)]), "bk_asst_obj_id": None},
        1199011,
        "'bk_asst_obj_id' the parameter is invalid or does not exist",
    ),
    (batch(*SWITCH_HOST, []), 1199038, "need data details is null"),
    (
        {key: value for key, value in batch(*SWITCH_HOST, []).items() if key != "details"},
        1199038,
        "need data details is null",
    ),
    (batch(*SWITCH_HOST, [(11, 21)] * 201), 1199035, " details exceed the limit 200"),
    (
        batch("bk_switch_belong_bk_host", "host", "host", [(11, 21)]),
        1199006,
        "'bk_obj_asst_id' data parameter verification does not pass",
    ),
    (
        batch("bk_switch_belong_bk_host", "bk_switch", "bk_switch", [(11, 21)]),
        1199006,
        "'bk_obj_asst_id' data parameter verification does not pass",
    ),
    (batch("bk_switch_nothing_host", "bk_switch", "host", [(11, 21)]), 1101046, "object association does not exist."),
    (
        batch("bk_switch_belong_bk_host", "bk_switch", "bk_host", [(11, 21)]),
        1199006,
        "'bk_asst_obj_id' data parameter verification does not pass",
    ),
    # A member of another JSON type fails bk-cmdb's decode of the whole body (CONTRACT-ui Correction g).
    ({**batch(*SWITCH_HOST, [(11, 21)]), "details": {"0": 1}}, 1199000, "Deserializing JSON data failed"),
    (
        batch(*SWITCH_HOST, [(11, 21), {"bk_inst_id": "12", "bk_asst_inst_id": 22}]),
        1199000,
        "Deserializing JSON data failed",
    ),
    (
        batch(*SWITCH_HOST, [(11, 21), {"bk_inst_id": True, "bk_asst_inst_id": 22}]),
        1199000,
        "Deserializing JSON data failed",
    ),
    (
        batch(*SWITCH_HOST, [(11, 21), {"bk_inst_id": 12.0, "bk_asst_inst_id": 22}]),
        1199000,
        "Deserializing JSON data failed",
    ),
    ({**batch(*SWITCH_HOST, [(11, 21)]), "bk_obj_id": 1}, 1199000, "Deserializing JSON data failed"),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("body", "code", "message"), REQUEST_ERRORS)
async def test_request_errors_of_a_batch_answer_their_codes_and_write_nothing(
    client: Client, mock_mongo: MongoConnection, spelling: str, body: dict[str, Any], code: int, message: str
) -> None:
    answer = await call(client, "create_many", body, spelling=spelling)

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, code, None)
    assert answer.message == message
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_the_batch_limit_is_a_setting(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(app_settings=replace(settings, limits=LimitSettings(create_many_max=2)))

    answer = await call(client, "create_many", batch(*SWITCH_HOST, [(11, 21), (11, 22), (11, 23)]))

    assert (answer.code, answer.message) == (1199035, " details exceed the limit 2")


async def test_a_batch_needs_edit_permission_on_both_models(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    client = await make_client(authorizer=StaticPolicy({"bob": UserGrants(edit=frozenset({"host"}))}))

    answer = await call(client, "create_many", batch(*SWITCH_HOST, [(11, 21), (12, 21)]), user="bob")

    assert answer.code == 9900403
    (action,) = answer.permission["actions"]
    instances = action["related_resource_types"][0]["instances"]
    assert [item[0]["id"] for item in instances] == ["11", "12"]
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_detail_is_judged_duplicate_first_then_its_instances_then_the_mapping(client: Client) -> None:
    """bk-cmdb's core order for create many (CONTRACT-ui Correction e), unlike create one's mapping first."""
    assert (await create(client, link_body("app_run_host", 41, 21))).code == 0
    pairs: list[Any] = [
        (41, 21),  # 0: repeats the link: its duplicate, though 1:1 is broken too
        (99, 21),  # 1: no such source, though host 21 is taken under 1:1
        (42, 98),  # 2: no such target
        (42, 21),  # 3: host 21 is taken under 1:1
    ]

    answer = await call(client, "create_many", batch(*APP_HOST, pairs))
    single = await create(client, link_body("app_run_host", 41, 21))

    assert answer.code == 0, answer
    assert answer.data["error_msg"] == {
        "0": "the associations app->host already exist",
        "1": "the association inst is not exist",
        "2": "the  inst to asst  is not exist",
        "3": answer.data["error_msg"]["3"],
    }
    assert "1:1" in answer.data["error_msg"]["3"] or "one to one" in answer.data["error_msg"]["3"].lower()
    assert single.code == 1101052  # create one: the mapping first
