"""Suppliers on the real driver and server: a request that ends in an error, or only reads, leaves no table."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.keys import SERVICE
from cmdb_asso.storage.client import MongoConnection
from tests.helpers import call, create, link_body, tables

pytestmark = pytest.mark.wire
ANY_LINK = {"condition": "AND", "rules": [{"field": "id", "operator": "greater", "value": 0}]}


async def test_refused_creates_and_reads_under_new_suppliers_create_no_table(
    wire_client: TestClient[Any, Any], wire_mongo: MongoConnection
) -> None:
    before = await tables(wire_mongo)
    for n in range(100):
        supplier = {"X-Bkcmdb-Supplier-Account": f"new{n}"}
        refused = await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21), headers=supplier)
        assert refused.code == 1101073, refused
        counted = await call(wire_client, "count", {"bk_obj_id": "host", "conditions": ANY_LINK}, headers=supplier)
        assert (counted.code, counted.data) == (0, {"count": 0})
        found = await call(wire_client, "find", {"bk_obj_id": "bk_switch", "condition": {}}, headers=supplier)
        assert (found.code, found.data) == (0, [])
        unknown = await call(wire_client, "find", {"bk_obj_id": f"nomodel{n}", "condition": {}}, headers=supplier)
        assert (unknown.code, unknown.data) == (0, [])
    assert wire_client.app is not None
    await wire_client.app[SERVICE].store.indexes.wait_idle()

    assert await tables(wire_mongo) - before == set()
