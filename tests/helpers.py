"""Shared test helpers: calling the create operation by either spelling, and reading what the store holds."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.operations import BY_NAME
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.tables import OBJ_ASST, inst_asst_table

NATIVE_CREATE = "/api/v3/create/instassociation"
ESB_CREATE = "/api/c/compapi/v2/cc/add_instance_association/"
SPELLINGS = ("native", "esb")


@dataclass
class Answer:
    """One response, with the envelope's fields read the same way for both spellings."""

    status: int
    result: bool
    code: int
    message: str
    data: Any
    permission: Any
    body: dict[str, Any]
    headers: Mapping[str, str]


def read_envelope(status: int, body: dict[str, Any], headers: Mapping[str, str]) -> Answer:
    """Normalise a native or ESB envelope into an Answer."""
    if "bk_error_code" in body:
        assert list(body) == ["result", "bk_error_code", "bk_error_msg", "permission", "data"]
        code, message = body["bk_error_code"], body["bk_error_msg"]
    else:
        assert list(body) == ["result", "code", "message", "data", "permission", "request_id"]
        code, message = body["code"], body["message"]
    return Answer(status, body["result"], code, message, body["data"], body["permission"], body, headers)


async def post(
    client: TestClient[Any, Any],
    path: str,
    body: Any,
    *,
    spelling: str = "native",
    user: str | None = "admin",
    language: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Answer:
    """Send `body` by `spelling`; the identity goes where that spelling carries it."""
    sent_headers = dict(headers or {})
    if language:
        sent_headers["X-Bkcmdb-Language"] = language
    if spelling == "native":
        if user is not None:
            sent_headers["X-Bkcmdb-User"] = user
    elif isinstance(body, dict):
        body = {"bk_app_code": "esb_test", "bk_app_secret": "xxx", "bk_token": "xxx", **body}
        if user is not None:
            body["bk_username"] = user
    response = await client.request(method, path, json=body, headers=sent_headers)
    assert response.content_type == "application/json"
    return read_envelope(response.status, await response.json(), response.headers.copy())


async def call(
    client: TestClient[Any, Any], operation: str, params: dict[str, Any], *, spelling: str = "native", **kwargs: Any
) -> Answer:
    """Call `operation` by `spelling`: native path parameters come out of `params`, ESB keeps all in the body."""
    described = BY_NAME[operation]
    if spelling == "esb":
        return await post(client, described.esb_path, params, spelling="esb", **kwargs)
    names = described.path_parameters
    path = described.native_path.format(**{name: params[name] for name in names})
    body = {key: value for key, value in params.items() if key not in names}
    return await post(client, path, body or None, spelling="native", method=described.method, **kwargs)


async def create(client: TestClient[Any, Any], body: Any, *, spelling: str = "native", **kwargs: Any) -> Answer:
    """Call create-one by `spelling`."""
    path = NATIVE_CREATE if spelling == "native" else ESB_CREATE
    return await post(client, path, body, spelling=spelling, **kwargs)


def link_body(obj_asst_id: Any, inst_id: Any, asst_inst_id: Any) -> dict[str, Any]:
    """A create-one body."""
    return {"bk_obj_asst_id": obj_asst_id, "bk_inst_id": inst_id, "bk_asst_inst_id": asst_inst_id}


async def links_in(mongo: MongoConnection, obj_id: str, supplier: str = "0") -> list[dict[str, Any]]:
    """Every document of `obj_id`'s association table, without `_id`, sorted by id."""
    docs = await mongo.db[inst_asst_table(obj_id, supplier)].find({}, {"_id": 0}).to_list(None)
    return sorted(docs, key=lambda doc: doc["id"])


async def tables(mongo: MongoConnection) -> set[str]:
    """The database's tables, but for the service's own (`cmdb_asso_*`: leases, journal), which its background
    work makes whatever the requests are."""
    return {name for name in await mongo.db.list_collection_names() if not name.startswith("cmdb_asso_")}


async def audit_records(mongo: MongoConnection) -> list[dict[str, Any]]:
    """Every audit record, without `_id`, sorted by id."""
    docs = await mongo.db["cc_AuditLog"].find({}, {"_id": 0}).to_list(None)
    return sorted(docs, key=lambda doc: doc["id"])


async def add_definition(
    mongo: MongoConnection, obj_asst_id: str, src: str, kind: str, dest: str, mapping: str, supplier: str = "0"
) -> None:
    """Store one more association definition."""
    await mongo.db[OBJ_ASST].insert_one(
        {
            "id": Int64(1000 + zlib.crc32(obj_asst_id.encode()) % 100000),
            "bk_obj_asst_id": obj_asst_id,
            "bk_obj_id": src,
            "bk_asst_id": kind,
            "bk_asst_obj_id": dest,
            "mapping": mapping,
            "on_delete": "none",
            "ispre": False,
            "bk_supplier_account": supplier,
        }
    )


async def wait_ready(session: aiohttp.ClientSession, base: str, *, seconds: float = 15.0) -> None:
    """Poll a service process's /readyz until it answers 200; fail the test after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        try:
            async with session.get(f"{base}/readyz") as ready:
                if ready.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base} never became ready")
