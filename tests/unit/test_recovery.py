"""Recovery: what it costs where it has nothing to do, and what it leaves alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bson import ObjectId

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.indexes import CLAIM_INDEX, inst_asst_indexes
from cmdb_asso.storage.journal import Journal


async def test_with_transactions_no_table_is_scanned_for_claims(
    mock_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(replace(mock_mongo, transactions=True))

    async def scan(*_: object, **__: object) -> list[object]:
        raise AssertionError("a scan of every link table")

    monkeypatch.setattr(journal, "stale_claims", scan)

    report = await journal.recover("0", grace_seconds=0)

    assert not report.anything


async def test_without_transactions_the_claims_are_looked_up_by_a_sparse_index() -> None:
    (claim,) = [model.document for model in inst_asst_indexes() if model.document["name"] == CLAIM_INDEX]

    assert claim["key"] == {"cmdb_asso_deleting": 1}
    assert claim["sparse"] is True


async def test_a_delete_that_died_before_its_claim_is_dropped_and_its_link_left_to_live_deletes(
    mock_mongo: MongoConnection,
) -> None:
    """Nothing of such a delete happened, and a live delete may claim the link meanwhile: recovering it must not
    write a second audit record for that link, so it writes nothing."""
    tables = ["cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"]
    link = {"id": 7, "bk_obj_id": "bk_switch", "bk_inst_id": 11, "bk_asst_obj_id": "host", "bk_asst_inst_id": 21,
            "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_supplier_account": "0"}  # fmt: skip
    for table in tables:
        await mock_mongo.db[table].insert_one(dict(link))
    journal = Journal(mock_mongo)
    await journal.open("died-before-claim", "delete", {"items": [
        {"link_id": 7, "tables": tables, "audit": {"_id": ObjectId()}, "archives": []}]})  # fmt: skip

    report = await journal.recover("0", grace_seconds=0)

    assert (report.entries, report.rolled_forward) == (1, 0)
    assert [await mock_mongo.db[table].count_documents({"id": 7}) for table in tables] == [1, 1]
    assert await mock_mongo.db["cc_AuditLog"].count_documents({}) == 0
    assert await mock_mongo.db["cmdb_asso_journal"].count_documents({}) == 0
