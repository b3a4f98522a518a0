"""Bad input on the real driver, where BSON encoding and the server's names matter: each was a 500, a wrong
write or a wrong delete before its fix, and each answers the contract's code now, leaving the store as it was."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.tables import inst_asst_table
from tests.helpers import audit_records, call, create, link_body, links_in, post, read_envelope, tables

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
BIG = 2**63
NON_ASCII_DIGITS = ["١٢", "１２", "²", "1_2", " 12", "12\n", "+12", "0x0c"]


async def _one_link(client: Client) -> int:
    answer = await create(client, link_body("bk_switch_belong_bk_host", 11, 21))
    assert answer.code == 0
    link_id: int = answer.data["id"]
    return link_id


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
async def test_a_delete_by_an_id_that_is_not_ascii_digits_is_refused_and_deletes_nothing(
    wire_client: Client, wire_mongo: MongoConnection, digits: str
) -> None:
    link_id = await _one_link(wire_client)
    assert link_id == 1  # "١٢" and friends would have named link 12 or 1 in int()'s eyes
    await create(wire_client, link_body("bk_switch_belong_bk_host", 12, 22))  # link 2

    one = await post(wire_client, f"/api/v3/delete/instassociation/bk_switch/{quote(digits)}", None, method="DELETE")
    many = await call(wire_client, "delete_many", {"bk_obj_id": "bk_switch", "id": [digits]})
    esb = await call(wire_client, "delete", {"bk_obj_id": "bk_switch", "id": digits}, spelling="esb")

    for answer in (one, esb):
        assert (answer.status, answer.code) == (200, 1199009), answer.body
    # A string among delete many's int64 ids fails bk-cmdb's decoder (CONTRACT-ui Correction g).
    assert (many.status, many.code, many.message) == (200, 1199006, "Deserializing JSON data failed"), many.body
    assert [link["id"] for link in await links_in(wire_mongo, "bk_switch")] == [1, 2]
    assert [record["action"] for record in await audit_records(wire_mongo)] == ["create", "create"]


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("find", {"bk_obj_id": "host", "condition": {"id": BIG}}),
        ("find", {"bk_obj_id": "host", "condition": {"id": -BIG * 4}}),
        ("find", {"bk_obj_id": "host", "condition": {"bk_inst_id": {"$in": [1, BIG]}}}),
        ("find", {"bk_obj_id": "host", "condition": {"$or": [{"bk_inst_id": {"$gt": BIG}}]}}),
        ("search", {"bk_obj_id": "host", "conditions": {"condition": "AND", "rules": [
            {"field": "id", "operator": "equal", "value": BIG}]}}),
        ("count", {"bk_obj_id": "host", "conditions": {"condition": "OR", "rules": [
            {"field": "bk_inst_id", "operator": "in", "value": [BIG]}]}}),
        ("search", {"bk_obj_id": "host", "page": {"start": BIG, "limit": 10}}),
        ("search", {"bk_obj_id": "host", "page": {"start": 0, "limit": BIG}}),
        ("find_related", {"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "page": {"start": BIG},
                          "fields": ["id"]}),
    ],
)  # fmt: skip
@pytest.mark.parametrize("spelling", ["native", "esb"])
async def test_integers_outside_int64_are_refused_before_bson_sees_them(
    wire_client: Client, operation: str, params: dict[str, Any], spelling: str
) -> None:
    await _one_link(wire_client)

    answer = await call(wire_client, operation, params, spelling=spelling)

    assert answer.status == 200
    # 1199011: find related's page (Correction c); 1199000: search's page, a Go int that does not decode (g)
    assert answer.code in (1199006, 1199059, 1199011, 1199000), answer.body
    assert answer.data is None


@pytest.mark.parametrize("obj_id", ["host%0A", "host%0D", "ho%20st", "h%C3%B6st", "a-b"])
async def test_a_model_id_must_be_a_plain_token_in_full(wire_client: Client, obj_id: str) -> None:
    answer = await post(wire_client, f"/api/v3/count/instance_associations/object/{obj_id}", {})

    assert (answer.status, answer.code) == (200, 1199006)


@pytest.mark.parametrize("operation", ["search", "count"])
@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"12"])
async def test_a_body_that_is_not_a_json_object_is_refused_not_ignored(
    wire_client: Client, operation: str, raw: bytes
) -> None:
    await _one_link(wire_client)

    response = await wire_client.post(
        f"/api/v3/{operation}/instance_associations/object/host",
        data=raw,
        headers={"X-Bkcmdb-User": "admin", "Content-Type": "application/json"},
    )

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.code, answer.data) == (1199000, None)  # search's and count's decode failure (Correction g)
    assert answer.message == "Deserializing JSON data failed"


@pytest.mark.parametrize("flag", ["true", 1, "yes", [True], {}])
@pytest.mark.parametrize("spelling", ["native", "esb"])
async def test_a_dry_run_flag_that_is_not_a_boolean_is_refused_and_writes_nothing(
    wire_client: Client, wire_mongo: MongoConnection, flag: Any, spelling: str
) -> None:
    answer = await create(
        wire_client, {**link_body("bk_switch_belong_bk_host", 11, 21), "dry_run": flag}, spelling=spelling
    )
    batch = await call(
        wire_client,
        "create_many",
        {"bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
         "details": [{"bk_inst_id": 12, "bk_asst_inst_id": 22}], "dry_run": flag},
        spelling=spelling,
    )  # fmt: skip

    assert (answer.code, batch.code) == (1199006, 1199006)
    assert await links_in(wire_mongo, "bk_switch") == []
    assert await audit_records(wire_mongo) == []


async def test_a_dry_run_header_that_is_not_a_known_word_is_refused(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    answer = await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21), headers={"X-Dry-Run": "maybe"})

    assert answer.code == 1199006
    assert await links_in(wire_mongo, "bk_switch") == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_whose_encoding_lies_answers_400_in_the_envelope(wire_client: Client, encoding: str) -> None:
    response = await wire_client.post(
        "/api/v3/create/instassociation",
        data=b'{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 11, "bk_asst_inst_id": 21}',
        headers={"X-Bkcmdb-User": "admin", "Content-Type": "application/json", "Content-Encoding": encoding},
    )

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert response.status == 400
    assert answer.code == 1199006


async def test_a_body_that_really_is_gzip_is_read(wire_client: Client) -> None:
    body = b'{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 11, "bk_asst_inst_id": 21}'
    response = await wire_client.post(
        "/api/v3/create/instassociation",
        data=gzip.compress(body),
        headers={"X-Bkcmdb-User": "admin", "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.code, answer.data) == (0, {"id": 1})


@pytest.mark.parametrize("operation", ["count", "search", "find", "find_related"])
async def test_reads_on_a_model_with_no_table_create_nothing(
    wire_client: Client, wire_mongo: MongoConnection, operation: str
) -> None:
    every: dict[str, dict[str, Any]] = {
        "count": {"bk_obj_id": "nothing_here"},
        "search": {"bk_obj_id": "nothing_here", "page": {"limit": 10}},
        "find": {"bk_obj_id": "nothing_here", "condition": {}},
        "find_related": {"condition": {"bk_obj_id": "nothing_here", "bk_inst_id": 1}, "fields": ["id"]},
    }
    params = every[operation]
    before = await tables(wire_mongo)

    answer = await call(wire_client, operation, params)

    assert answer.code == 0
    assert answer.data in ({"count": 0}, {"info": []}, [])
    assert await tables(wire_mongo) == before
    assert inst_asst_table("nothing_here", "0") not in before


@pytest.mark.parametrize(
    ("spelling", "supplier", "code"),
    [("native", "a-b", 1199006), ("native", "0 1", 1199006), ("native", "é", 1199006),
     ("esb", "-", 1199006), ("esb", "0\n", 1199006), ("esb", 7, 1199046)],
)  # fmt: skip
async def test_a_supplier_account_that_cannot_name_a_table_is_refused(
    wire_client: Client, wire_mongo: MongoConnection, spelling: str, supplier: Any, code: int
) -> None:
    for operation, params in (
        ("count", {"bk_obj_id": "host"}),
        ("create", link_body("bk_switch_belong_bk_host", 11, 21)),
    ):
        if spelling == "native":
            answer = await call(wire_client, operation, params, headers={"X-Bkcmdb-Supplier-Account": supplier})
        else:
            answer = await call(wire_client, operation, {**params, "bk_supplier_account": supplier}, spelling="esb")
        assert answer.code == code, answer.body
    assert await links_in(wire_mongo, "bk_switch") == []


async def test_an_idempotent_create_with_a_very_deep_body_is_refused_not_a_500(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    deep: Any = 1
    for _ in range(253):
        deep = {"x": deep}
    body = {**link_body("bk_switch_belong_bk_host", 11, 21), "ignored": deep}

    answer = await create(wire_client, body, headers={"Idempotency-Key": "deep-1"})

    assert (answer.status, answer.code) == (200, 1199006)
    assert await links_in(wire_mongo, "bk_switch") == []


async def test_a_body_nested_as_deep_as_an_operation_may_need_is_still_served(wire_client: Client) -> None:
    condition: dict[str, Any] = {"id": 1}
    for _ in range(6):
        condition = {"$and": [condition]}

    answer = await call(wire_client, "find", {"bk_obj_id": "host", "condition": condition})

    assert (answer.code, answer.data) == (0, [])
