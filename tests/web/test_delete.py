"""Delete one and delete many, by both spellings: both tables, the archive, the audit trail, the codes."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.keys import SERVICE
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import SPELLINGS, audit_records, call, create, link_body, links_in

Client = TestClient[Any, Any]


async def make_links(
    client: Client, pairs: list[tuple[int, int]], obj_asst_id: str = "bk_switch_belong_bk_host"
) -> list[int]:
    """Create links and return their ids."""
    ids = []
    for src, dst in pairs:
        answer = await create(client, link_body(obj_asst_id, src, dst))
        assert answer.code == 0
        ids.append(answer.data["id"])
    return ids


async def archived(mongo: MongoConnection) -> list[dict[str, Any]]:
    """Every archived copy."""
    return list(await mongo.db["cc_DelArchive"].find({}, {"_id": 0}).to_list(None))


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("side", ["bk_switch", "host"])
async def test_deleting_one_link_removes_both_sides_archives_them_and_audits(
    client: Client, mock_mongo: MongoConnection, spelling: str, side: str
) -> None:
    kept, gone = await make_links(client, [(11, 21), (12, 22)])

    answer = await call(client, "delete", {"bk_obj_id": side, "id": gone}, spelling=spelling, user="carol")

    assert (answer.status, answer.result, answer.code, answer.data) == (200, True, 0, None)
    assert [doc["id"] for doc in await links_in(mock_mongo, "bk_switch")] == [kept]
    assert [doc["id"] for doc in await links_in(mock_mongo, "host")] == [kept]
    copies = await archived(mock_mongo)
    assert sorted(copy["coll"] for copy in copies) == ["cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"]
    assert all(copy["detail"]["id"] == gone and copy["oid"] and copy["time"] for copy in copies)
    assert all("cmdb_asso_src_guard" not in copy["detail"] for copy in copies)
    deleted = [record for record in await audit_records(mock_mongo) if record["action"] == "delete"]
    (record,) = deleted
    assert (record["user"], record["resource_id"], record["resource_name"]) == ("carol", 12, "switch-12")
    assert record["operation_detail"]["dest_inst_name"] == "host-22"
    assert record["operation_detail"]["asst_id"] == "bk_switch_belong_bk_host"


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_deleting_a_missing_id_is_not_an_error(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    answer = await call(client, "delete", {"bk_obj_id": "bk_switch", "id": 12345}, spelling=spelling)

    assert (answer.result, answer.code, answer.data) == (True, 0, None)
    assert await audit_records(mock_mongo) == []


async def test_a_deleted_one_to_one_link_frees_its_ends(client: Client) -> None:
    (link_id,) = await make_links(client, [(41, 21)], "app_run_host")

    assert (await call(client, "delete", {"bk_obj_id": "app", "id": link_id})).code == 0

    assert (await create(client, link_body("app_run_host", 42, 21))).code == 0


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"bk_obj_id": "bk_switch", "id": "abc"}, 1199009, "'id' parameters must be integral"),
        ({"bk_obj_id": "bk_switch", "id": "1.5"}, 1199009, "'id' parameters must be integral"),
    ],
)
async def test_a_non_integer_id_answers_1199009(
    client: Client, spelling: str, params: dict[str, Any], code: int, message: str
) -> None:
    answer = await call(client, "delete", params, spelling=spelling)

    assert (answer.result, answer.code, answer.message) == (False, code, message)


async def test_an_esb_delete_without_a_model_answers_1199010(client: Client) -> None:
    answer = await call(client, "delete", {"bk_obj_id": "", "id": 1}, spelling="esb")

    assert (answer.code, answer.message) == (1199010, "'bk_obj_id' unassigned")


async def test_an_esb_delete_with_a_fractional_id_answers_1199009(client: Client) -> None:
    answer = await call(client, "delete", {"bk_obj_id": "host", "id": 2.5}, spelling="esb")

    assert answer.code == 1199009


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_deleting_many_answers_the_number_deleted(
    client: Client, mock_mongo: MongoConnection, spelling: str
) -> None:
    ids = await make_links(client, [(11, 21), (12, 22), (13, 23)])

    answer = await call(client, "delete_many", {"bk_obj_id": "host", "id": [ids[0], ids[2], 999999]}, spelling=spelling)

    assert (answer.result, answer.data) == (True, 2)
    assert [doc["id"] for doc in await links_in(mock_mongo, "bk_switch")] == [ids[1]]
    assert [doc["id"] for doc in await links_in(mock_mongo, "host")] == [ids[1]]
    assert len([r for r in await audit_records(mock_mongo) if r["action"] == "delete"]) == 2
    assert len(await archived(mock_mongo)) == 4


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(("ids", "code"), [([], 1199003), (list(range(1, 502)), 1199059), ([1, -5], 1199009)])
async def test_delete_many_refuses_bad_id_lists(client: Client, spelling: str, ids: Any, code: int) -> None:
    answer = await call(client, "delete_many", {"bk_obj_id": "host", "id": ids}, spelling=spelling)

    assert (answer.result, answer.code) == (False, code)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("body", [{"bk_obj_id": "host", "id": [1, "x"]}, {"bk_obj_id": "host", "id": "1"},
                                  {"bk_obj_id": "host", "id": [1.5]}, {"bk_obj_id": 7, "id": [1]}])  # fmt: skip
async def test_delete_many_answers_a_member_of_another_type_as_bk_cmdbs_decoder_fails(
    client: Client, spelling: str, body: dict[str, Any]
) -> None:
    answer = await call(client, "delete_many", body, spelling=spelling)

    assert (answer.result, answer.code, answer.message) == (False, 1199006, "Deserializing JSON data failed")


async def test_deleting_needs_edit_permission_on_both_instances(
    make_client: MakeClient, mock_mongo: MongoConnection
) -> None:
    admin = await make_client()
    (link_id,) = await make_links(admin, [(11, 21)])
    client = await make_client(authorizer=StaticPolicy({"bob": UserGrants(edit=frozenset({"bk_switch"}))}))

    answer = await call(client, "delete", {"bk_obj_id": "bk_switch", "id": link_id}, user="bob")

    assert answer.code == 9900403
    assert answer.permission["actions"][0]["id"] == "edit_biz_host"
    assert len(await links_in(mock_mongo, "host")) == 1


@pytest.mark.parametrize("named", ["bk_switch", "host"])
@pytest.mark.parametrize("failing", ["bk_switch", "host"])
async def test_a_delete_that_fails_midway_is_finished_by_recovery_and_counted_once(
    client: Client, mock_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch, named: str, failing: str
) -> None:
    """Whichever model the caller names and whichever table refuses, what is left stays claimed: retries by
    either model's name remove nothing, and the link is audited and archived once."""
    (link_id,) = await make_links(client, [(11, 21)])
    assert client.app is not None
    collection_class = type(mock_mongo.db["cc_InstAsst_0_pub_host"])
    original = collection_class.delete_many

    async def fail_on_one_side(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == f"cc_InstAsst_0_pub_{failing}":
            raise RuntimeError("injected failure on one side")
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(collection_class, "delete_many", fail_on_one_side)
    answer = await call(client, "delete", {"bk_obj_id": named, "id": link_id})
    monkeypatch.undo()
    retries = [
        await call(client, "delete_many", {"bk_obj_id": side, "id": [link_id]}) for side in ("host", "bk_switch")
    ]
    store = client.app[SERVICE].store
    report = await store.journal.recover("0", grace_seconds=0)

    assert (answer.status, answer.code) == (500, 1199999)
    assert [(retry.code, retry.data) for retry in retries] == [(0, 0), (0, 0)]  # claimed by the first delete
    assert report.rolled_forward == 1
    assert await links_in(mock_mongo, "bk_switch") == []
    assert await links_in(mock_mongo, "host") == []
    assert [r["action"] for r in await audit_records(mock_mongo)] == ["create", "delete"]
    assert sorted(copy["coll"] for copy in await archived(mock_mongo)) == [
        "cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"]  # fmt: skip
    assert await mock_mongo.db["cmdb_asso_journal"].count_documents({}) == 0


async def test_a_delete_uses_the_callers_supplier_not_what_a_stored_document_says(
    client: Client, mock_mongo: MongoConnection
) -> None:
    supplier = {"X-Bkcmdb-Supplier-Account": "tenant_b"}
    await mock_mongo.db["cc_ObjectBase_tenant_b_pub_bk_switch"].insert_one(
        {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "bk_inst_name": "switch-11", "bk_supplier_account": "tenant_b"}
    )
    await mock_mongo.db["cc_HostBase"].update_one({"bk_host_id": 21}, {"$set": {"bk_supplier_account": "tenant_b"}})
    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21), headers=supplier)
    assert answer.code == 0

    deleted = await call(client, "delete_many", {"bk_obj_id": "host", "id": [answer.data["id"]]}, headers=supplier)

    assert (deleted.code, deleted.data) == (0, 1)
    assert await links_in(mock_mongo, "bk_switch", "tenant_b") == []
    assert await links_in(mock_mongo, "host", "tenant_b") == []
