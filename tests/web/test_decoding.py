"""A member of another JSON type anywhere in a body fails bk-cmdb's decoder, and each operation answers that as
bk-cmdb's handler does (CONTRACT-ui Correction g), in both spellings."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.inputs import INT64_MAX, decodes_as
from cmdb_asso.operations import BY_NAME, OPERATIONS
from tests.helpers import call

Client = TestClient[Any, Any]
SPELLINGS = ["native", "esb"]
RAW = (1199006, "Deserializing JSON data failed")
UNDECODABLE = (1199000, "Deserializing JSON data failed")
NAMED = (1199006, "'Deserializing JSON data failed' data parameter verification does not pass")
RELATED = {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, "fields": ["id"]}
SEARCH = {"bk_obj_id": "bk_switch", "page": {"start": 0, "limit": 10}}

CASES: list[tuple[str, dict[str, Any], tuple[int, str]]] = [
    ("find_related", {**RELATED, "condition": {"bk_obj_id": 5, "bk_inst_id": 11}}, NAMED),
    ("find_related", {**RELATED, "condition": {"bk_obj_id": "bk_switch", "bk_inst_id": "11"}}, NAMED),
    ("find_related", {**RELATED, "fields": "id"}, NAMED),
    ("find_related", {**RELATED, "fields": ["id", 3]}, NAMED),
    ("find_related", {**RELATED, "page": {"start": 1.5}}, NAMED),
    ("search", {**SEARCH, "page": {"start": "0", "limit": 10}}, UNDECODABLE),
    ("search", {**SEARCH, "page": {"start": 0, "limit": 10, "sort": 1}}, UNDECODABLE),
    ("search", {**SEARCH, "fields": "id"}, UNDECODABLE),
    ("count", {"bk_obj_id": "bk_switch", "time_condition": []}, UNDECODABLE),
    ("delete_many", {"bk_obj_id": "bk_switch", "id": [1, True]}, RAW),
    ("find", {"bk_obj_id": "bk_switch", "condition": "bk_inst_id"}, RAW),
    ("business_host_links", {"bk_biz_id": 1, "bk_obj_id": 5, "condition": {}}, RAW),
    ("business_host_links", {"bk_biz_id": 1, "bk_obj_id": "host", "condition": []}, RAW),
]


@pytest.mark.parametrize(
    ("spelling", "operation", "body", "answer"),
    [(spelling, *case) for case in CASES for spelling in SPELLINGS if spelling == "native" or BY_NAME[case[0]].esb],
)
async def test_a_member_of_another_type_answers_the_operations_decode_error(
    client: Client, spelling: str, operation: str, body: dict[str, Any], answer: tuple[int, str]
) -> None:
    got = await call(client, operation, body, spelling=spelling)

    assert (got.result, (got.code, got.message)) == (False, answer)


async def test_a_null_member_is_its_zero_value_not_a_decode_error(client: Client) -> None:
    related = await call(client, "find_related", {**RELATED, "page": None, "fields": ["id"]})
    search = await call(client, "search", {**SEARCH, "fields": None, "time_condition": None})

    assert related.code == 0, related
    assert search.code == 0, search


def test_decodes_as_reads_json_as_bk_cmdbs_decoder_does() -> None:
    struct: dict[str, Any] = {"id": ["int"], "page": {"start": "int", "sort": "string"}, "ok": "bool", "c": "object"}

    assert decodes_as({"id": [1, None, INT64_MAX], "page": None, "ok": False, "c": {}, "other": [1, "x"]}, struct)
    bad: dict[str, Any]
    for bad in ({"id": [INT64_MAX + 1]}, {"id": [1.0]}, {"id": [True]}, {"id": "1"}, {"page": []},
                {"page": {"start": "0"}}, {"ok": 1}, {"c": []}, {"page": {"sort": 5}}):  # fmt: skip
        assert not decodes_as(bad, struct), bad


def test_every_operation_whose_decode_answers_as_bk_cmdb_wraps_it_names_its_go_struct() -> None:
    # Create one keeps its documented deviation (1199006 naming the field); the routes that never read the body,
    # and those decoded field by field, need none.
    decoded_by_their_loaders = {"links_with_instances", "watch", "model_associations", "definitions_by_ids",
                                "import"}  # fmt: skip
    described = {op.name for op in OPERATIONS if op.go_body is not None}
    needing = {op.name for op in OPERATIONS if op.reads_body and op.body_error != "body"} - decoded_by_their_loaders
    needing.add("business_host_links")  # reads its body itself, after the business

    assert needing <= described
