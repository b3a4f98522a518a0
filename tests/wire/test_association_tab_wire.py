"""The Association tab's page (CONTRACT-ui 19) over the real driver: the `$or` of both directions, the count,
the page and the instances read back from the embedded server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.client import AssociationClient
from tests.helpers import call, create, link_body

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]


async def test_a_page_of_both_directions_with_its_instances(wire_client: Client) -> None:
    created = []
    for host in (21, 22, 23):
        answer = await create(wire_client, link_body("bk_switch_belong_bk_host", 11, host))
        assert answer.code == 0, answer
        created.append(answer.data["id"])
    incoming = await create(wire_client, link_body("bk_router_connect_bk_switch", 31, 11))
    assert incoming.code == 0, incoming

    page = await call(wire_client, "association_tab", {"bk_obj_id": "bk_switch", "id": 11, "start": 1, "limit": 2})
    client = AssociationClient(str(wire_client.make_url("")), user="admin")
    try:
        everything = await client.association_tab("bk_switch", 11)
    finally:
        await client.close()

    assert page.code == 0, page
    assert page.data["association_count"] == 4
    assert [item["id"] for item in page.data["data"]["association"]["src"]] == created[1:3]
    assert page.data["data"]["instance"] == {
        "bk_switch": [{"bk_inst_id": 11, "bk_inst_name": "switch-11"}],
        "host": [{"bk_host_id": 22}, {"bk_host_id": 23}],
    }
    assert [item["id"] for item in everything["data"]["association"]["dst"]] == [incoming.data["id"]]
    assert everything["data"]["instance"]["bk_router"] == [{"bk_inst_id": 31, "bk_inst_name": "router-31"}]
