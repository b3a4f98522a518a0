"""The client library against the real app: every operation, both spellings, retries that never double a link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Middleware

from cmdb_asso.app import create_app
from cmdb_asso.client import AssociationClient, CmdbApiError, PermissionDeniedError, ServiceUnavailableError
from cmdb_asso.config import Settings
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection
from tests.helpers import audit_records, links_in

AiohttpServer = Callable[..., Awaitable[TestServer]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start(aiohttp_server: AiohttpServer, app: web.Application) -> str:
    """Serve the app; its base URL."""
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("spelling", ["native", "esb"])
async def test_every_operation_has_a_typed_method(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection, spelling: Any
) -> None:
    url = await start(aiohttp_server, create_app(settings, mongo=mock_mongo))
    async with AssociationClient(url, spelling=spelling, app_code="esb_test") as client:
        first = await client.create("bk_switch_belong_bk_host", 11, 21)
        batch = await client.create_many("bk_switch", "host", "bk_switch_belong_bk_host", [(12, 22), (99, 21)])
        found = await client.find("bk_switch", {"bk_inst_id": {"$in": [11, 12]}})
        related = await client.find_related("host", 21)
        searched = await client.search(
            "host", {"condition": "AND", "rules": [{"field": "bk_asst_inst_id", "operator": "equal", "value": 22}]}
        )
        counted = await client.count("host")
        dry = await client.create("bk_switch_belong_bk_host", 13, 23, dry_run=True)
        with pytest.raises(CmdbApiError) as refused:
            await client.create("bk_switch_belong_bk_host", 11, 21)
        await client.delete("host", first or 0)
        deleted = await client.delete_many("bk_switch", list(batch.created.values()))  # type: ignore[arg-type]

    assert first is not None
    assert list(batch.created) == [0]
    assert batch.errors == {1: (1101073, "the association inst is not exist")}
    assert [link["bk_inst_id"] for link in found] == [11, 12]
    assert [link["id"] for link in related] == [first]
    assert [link["bk_inst_id"] for link in searched] == [12]
    assert counted == 2
    assert dry is None
    assert refused.value.code == 1199014
    assert deleted == 1
    assert await links_in(mock_mongo, "host") == []


async def test_create_links_cuts_any_number_of_pairs_into_batches(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    url = await start(aiohttp_server, create_app(settings, mongo=mock_mongo))
    pairs = [(switch, host) for switch in range(11, 16) for host in range(21, 26)] + [(99, 21)]
    async with AssociationClient(url, concurrency=3) as client:
        result = await client.create_links("bk_switch", "host", "bk_switch_belong_bk_host", pairs, batch_size=4)

    assert sorted(result.created) == list(range(25))
    assert result.errors == {25: (1101073, "the association inst is not exist")}
    assert len(await links_in(mock_mongo, "host")) == 25


def flaky(mode: str, failures: int, seen: list[str] | None = None) -> Middleware:
    """A middleware that makes the first `failures` creates fail: with a 503 before running them, or by
    dropping the connection after running them (the worst case for a retry). `seen` collects the keys sent."""
    left = [failures]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "create" in request.path and seen is not None:
            seen.append(request.headers.get("Idempotency-Key", ""))
        if "create" not in request.path or left[0] <= 0:
            return await handler(request)
        left[0] -= 1
        if mode == "503":
            return web.json_response({"result": False, "bk_error_code": 1199998, "bk_error_msg": "busy",
                                      "permission": None, "data": None}, status=503)  # fmt: skip
        response = await handler(request)
        assert request.transport is not None
        request.transport.close()
        return response

    return middleware


@pytest.mark.parametrize("mode", ["503", "drop"])
async def test_retries_through_failures_never_double_a_link(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection, mode: str
) -> None:
    app = create_app(settings, mongo=mock_mongo)
    seen: list[str] = []
    app.middlewares.insert(0, flaky(mode, 2, seen))
    url = await start(aiohttp_server, app)
    async with AssociationClient(url, retries=4, backoff=0.01) as client:
        link_id = await client.create("bk_switch_belong_bk_host", 11, 21)
        batch = await client.create_many("bk_switch", "host", "bk_switch_belong_bk_host", [(12, 22), (13, 23)])

    stored = await links_in(mock_mongo, "host")
    assert [doc["id"] for doc in stored] == sorted([link_id, *batch.created.values()])  # type: ignore[type-var]
    assert len(await audit_records(mock_mongo)) == 3
    # Each failed call was sent again with its key: the create (1 key, 2 sends) and the batch (1 key, 2 sends).
    assert len(seen) == 4
    assert len(set(seen)) == 2


async def test_a_service_that_stays_down_raises_after_the_retries(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    app = create_app(settings, mongo=mock_mongo)
    app.middlewares.insert(0, flaky("503", 100))
    url = await start(aiohttp_server, app)
    async with AssociationClient(url, retries=2, backoff=0.01) as client:
        with pytest.raises(ServiceUnavailableError) as raised:
            await client.create("bk_switch_belong_bk_host", 11, 21)

    assert raised.value.status == 503


async def test_a_denial_raises_the_permission_error_with_its_payload(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    app = create_app(settings, mongo=mock_mongo, authorizer=StaticPolicy({"bob": UserGrants(edit=frozenset({"host"}))}))
    url = await start(aiohttp_server, app)
    async with AssociationClient(url, user="bob") as client:
        with pytest.raises(PermissionDeniedError) as denied:
            await client.create("bk_switch_belong_bk_host", 11, 21)

    assert denied.value.code == 9900403
    assert denied.value.permission["actions"][0]["id"] == "edit_comobj_2"


async def test_links_with_instances_through_the_client(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    url = await start(aiohttp_server, create_app(settings, mongo=mock_mongo))
    async with AssociationClient(url) as client:
        link_id = await client.create("bk_switch_belong_bk_host", 11, 21)
        rule = {"condition": "AND", "rules": [{"field": "bk_asst_inst_id", "operator": "in", "value": [21]}]}
        answer = await client.links_with_instances(
            "bk_switch", rule, page={"limit": 10}, dst_detail=True, dst_fields=["bk_host_id"]
        )

    assert [item["id"] for item in answer["association"]] == [link_id]
    assert answer["src"] is None
    assert answer["dst"] == [{"bk_host_id": 21}]
