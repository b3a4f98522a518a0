"""Thin handlers: validate the body, call one service method, return the data for the envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from cmdb_asso.keys import APP_AUTHENTICATOR, MONGO, REQUEST_ID, SERVICE, SETTINGS
from cmdb_asso.service.associations import CreateRequest
from cmdb_asso.service.context import Caller
from cmdb_asso.web.envelope import success
from cmdb_asso.web.identity import esb_caller, native_caller
from cmdb_asso.web.schemas import CreateAssociationSchema, load_body


@dataclass(frozen=True, slots=True)
class Call:
    """One operation call: who calls, and its parameters (body fields and path parameters together)."""

    caller: Caller
    params: Any


Operation = Callable[[web.Request, Call], Awaitable[Any]]

_CREATE_SCHEMA = CreateAssociationSchema()


async def _read_json(request: web.Request) -> Any:
    """The parsed body, or None when it is empty or not JSON (the operation's schema then refuses it)."""
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def native_view(operation: Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the native spelling: identity from headers, path parameters over the body."""

    async def view(request: web.Request) -> web.Response:
        settings = request.app[SETTINGS]
        caller = native_caller(request, request[REQUEST_ID], settings.supplier_account)
        body = await _read_json(request)
        params = {**body, **request.match_info} if isinstance(body, dict) else body
        return success(request, await operation(request, Call(caller, params)))

    return view


def esb_view(operation: Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the ESB spelling: everything, credentials included, in the JSON body."""

    async def view(request: web.Request) -> web.Response:
        settings = request.app[SETTINGS]
        body = await _read_json(request)
        credentials_source = body if isinstance(body, dict) else {}
        caller = esb_caller(
            request,
            credentials_source,
            request[REQUEST_ID],
            settings.supplier_account,
            request.app[APP_AUTHENTICATOR],
        )
        return success(request, await operation(request, Call(caller, body)))

    return view


async def create_instance_association(request: web.Request, call: Call) -> dict[str, int]:
    """Create one instance association (the seed operation); answers its id."""
    body = load_body(_CREATE_SCHEMA, call.params)
    new_id = await request.app[SERVICE].create_one(
        call.caller, CreateRequest(body["bk_obj_asst_id"], body["bk_inst_id"], body["bk_asst_inst_id"])
    )
    return {"id": new_id}


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """MongoDB answers a ping: 200 when ready, 503 with the reason otherwise."""
    try:
        await request.app[MONGO].ping()
    except Exception as exc:
        return web.json_response({"status": "not ready", "reason": f"mongodb: {type(exc).__name__}"}, status=503)
    return web.json_response({"status": "ready"})
