"""Recovery's cost where it has nothing to do: no link table is scanned for delete claims under transactions."""

from __future__ import annotations

from dataclasses import replace

import pytest

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
