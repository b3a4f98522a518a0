"""The two response envelopes: bk-cmdb's native one and the ESB one (the seed's shape)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from cmdb_asso.errors import CmdbError, Language
from cmdb_asso.keys import GATEWAY_SPELLING, LANGUAGE, REQUEST_ID, RESPONSE_CODE

ESB_PREFIX = "/api/c/compapi/"


def is_esb(request: web.BaseRequest) -> bool:
    """Whether the request came by the ESB spelling."""
    return request.path.startswith(ESB_PREFIX)


def request_language(request: web.BaseRequest) -> Language:
    """The language chosen for this request's messages."""
    return "zh" if request.get(LANGUAGE) == "zh" else "en"


def _render(
    request: web.BaseRequest,
    *,
    code: int,
    message: str,
    data: Any,
    permission: dict[str, Any] | None,
    status: int,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if is_esb(request):
        body: dict[str, Any] = {
            "result": code == 0,
            "code": code,
            "message": message,
            "data": data,
            "permission": permission,
            "request_id": request.get(REQUEST_ID, ""),
        }
    elif request.get(GATEWAY_SPELLING):  # set on the way in; a request the HTTP parser refused has none
        body = {"result": code == 0, "code": code, "message": message, "permission": permission, "data": data}
    else:
        body = {
            "result": code == 0,
            "bk_error_code": code,
            "bk_error_msg": message,
            "permission": permission,
            "data": data,
        }
    response = web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)
    response[RESPONSE_CODE] = code
    return response


def success(request: web.BaseRequest, data: Any) -> web.Response:
    """A successful answer carrying `data`."""
    return _render(request, code=0, message="success", data=data, permission=None, status=200)


def failure(request: web.BaseRequest, error: CmdbError, headers: dict[str, str] | None = None) -> web.Response:
    """A failed answer for `error`, in the request's language, with the error's HTTP status."""
    if error.http_status in (409, 503):
        # The statuses a client may retry as they are; tell it when.
        headers = {"Retry-After": "1", **(headers or {})}
    return _render(
        request,
        code=error.code,
        message=error.message(request_language(request)),
        data=None,
        permission=error.permission,
        status=error.http_status,
        headers=headers,
    )
