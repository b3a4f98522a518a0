"""Who is calling: request id, language, user, supplier account and (ESB) application, read from the request
(the application's secret is checked by the service's AppAuthenticator)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from cmdb_asso.errors import AppAuthFailed, BodyInvalid, GatewayAuthFailed, Language, UserUnknown
from cmdb_asso.inputs import SUPPLIER_ACCOUNT, is_plain_text
from cmdb_asso.keys import GATEWAY
from cmdb_asso.service.apps import AppAuthenticator
from cmdb_asso.service.context import Caller
from cmdb_asso.service.gateway import GatewayVerifier

log = structlog.get_logger(__name__)

REQUEST_ID_HEADERS = ("X-Request-Id", "X-Bkapi-Request-Id", "Cc_Request_Id")
LANGUAGE_HEADERS = ("X-Bkcmdb-Language", "Blueking-Language", "HTTP_BLUEKING_LANGUAGE")
USER_HEADERS = ("X-Bkcmdb-User", "BK_User")
# The app a request comes from, as bk-cmdb reads it on native routes (the legacy ESB sets Bk-App-Code).
APP_CODE_HEADERS = ("X-Bkcmdb-App-Code", "Bk-App-Code")
SUPPLIER_HEADERS = (
    "X-Bkcmdb-Supplier-Account",
    "X-Bkapi-Supplier-Account",
    "HTTP_BK_SUPPLIER_ACCOUNT",
    "HTTP_BLUEKING_SUPPLIER_ID",
)
ESB_AUTH_HEADER = "X-Bkapi-Authorization"
GATEWAY_TOKEN_HEADER = "X-Bkapi-JWT"
# Set by bk-cmdb's web server on the calls it makes for the UI: their answers keep the native spelling.
FROM_WEB_HEADER = "X-Bkcmdb-Request-From-Web"
ESB_AUTH_KEYS = (
    "bk_app_code",
    "bk_app_secret",
    "bk_username",
    "bk_token",
    "bk_supplier_account",
    "access_token",
)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def _checked_supplier(value: str) -> str:
    # The supplier account becomes part of table names, so only a plain token is accepted.
    if not SUPPLIER_ACCOUNT.fullmatch(value):
        raise BodyInvalid("bk_supplier_account")
    return value


def _checked_user(value: str, field: str) -> str:
    if not value:
        raise UserUnknown("user")
    if not is_plain_text(value):
        raise BodyInvalid(field)
    return value


def _first_header(request: web.Request, names: tuple[str, ...]) -> str:
    for name in names:
        value = request.headers.get(name, "").strip()
        if value:
            return value
    return ""


def request_id_of(request: web.Request) -> str:
    """The caller's request id when it is safe to echo, otherwise a fresh one."""
    given = _first_header(request, REQUEST_ID_HEADERS)
    return given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def language_of(request: web.Request, default: Language) -> Language | None:
    """The message language from the language headers (`en`, `zh`, `zh-cn`, ...), `default` when none is
    given, or None when the header names a language the service does not speak."""
    value = _first_header(request, LANGUAGE_HEADERS).lower()
    if not value:
        return default
    if value == "zh" or value.startswith(("zh-", "zh_")):
        return "zh"
    if value == "en" or value.startswith(("en-", "en_")):
        return "en"
    return None


def _refuse_unknown_language(request: web.Request) -> None:
    # A language the service does not speak is refused, as any other bad field is, rather than ignored.
    if language_of(request, "en") is None:
        raise BodyInvalid(LANGUAGE_HEADERS[0])


def native_caller(request: web.Request, request_id: str, default_supplier: str) -> Caller:
    """The caller of a native request, from bk-cmdb's headers; a missing user is 1199027 (401)."""
    _refuse_unknown_language(request)
    user = _checked_user(_first_header(request, USER_HEADERS), USER_HEADERS[0])
    supplier = _checked_supplier(_first_header(request, SUPPLIER_HEADERS) or default_supplier)
    app_code = _first_header(request, APP_CODE_HEADERS)
    if app_code and not is_plain_text(app_code, max_length=128):
        raise BodyInvalid(APP_CODE_HEADERS[0])
    return Caller(user=user, supplier_account=supplier, app_code=app_code, request_id=request_id)


def gateway_token(request: web.BaseRequest) -> str:
    """The request's gateway token, or "" when it carries none."""
    return request.headers.get(GATEWAY_TOKEN_HEADER, "").strip()


def on_gateway_path(request: web.Request) -> bool:
    """Whether the request came through the API gateway (it carries a token, and a gateway key is configured) for a
    caller other than bk-cmdb's web server: its answers are spelled `code`/`message` (CONTRACT-blueking 2.6)."""
    if request.app.get(GATEWAY) is None or not gateway_token(request):
        return False
    return request.headers.get(FROM_WEB_HEADER, "").strip().lower() != "true"


def gateway_caller(
    request: web.Request, request_id: str, default_supplier: str, verifier: GatewayVerifier | None
) -> Caller | None:
    """The caller a request's gateway token names (user and app code from the verified claims only, whatever the
    headers and body say); None when the request carries no token or no gateway key is configured. A request
    without a token where one is required answers 401 (1100004)."""
    if verifier is None:
        return None  # as bk-cmdb with its JWT check off: the header is ignored
    token = gateway_token(request)
    if not token:
        if verifier.requires_token(request.remote):
            raise GatewayAuthFailed()
        return None
    identity = verifier.identity(token)
    _refuse_unknown_language(request)
    supplier = _checked_supplier(_first_header(request, SUPPLIER_HEADERS) or default_supplier)
    return Caller(user=identity.user, supplier_account=supplier, app_code=identity.app_code, request_id=request_id)


def esb_credentials(request: web.Request, body: Mapping[str, Any]) -> dict[str, str]:
    """The ESB common arguments, from `X-Bkapi-Authorization` when present (it wins), else from the body.

    An argument that is present but not a string is an authentication failure, as a malformed header is:
    ignoring it would authenticate a caller as someone it did not claim to be.
    """
    credentials = _string_arguments(body)
    header = request.headers.get(ESB_AUTH_HEADER)
    if header is None:
        return credentials
    try:
        parsed = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise AppAuthFailed() from None
    if not isinstance(parsed, dict):
        raise AppAuthFailed()
    credentials.update(_string_arguments(parsed))
    return credentials


def _string_arguments(source: Mapping[str, Any]) -> dict[str, str]:
    arguments: dict[str, str] = {}
    for key in ESB_AUTH_KEYS:
        value = source.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise AppAuthFailed()
        arguments[key] = value
    return arguments


async def esb_caller(
    request: web.Request,
    body: Mapping[str, Any],
    request_id: str,
    default_supplier: str,
    authenticator: AppAuthenticator,
) -> Caller:
    """The caller of an ESB request: its app is authenticated, then its user is required."""
    credentials = esb_credentials(request, body)
    app_code = credentials.get("bk_app_code", "")
    if app_code and not is_plain_text(app_code, max_length=128):
        raise AppAuthFailed()
    await authenticator.authenticate(app_code, credentials.get("bk_app_secret", ""))
    _refuse_unknown_language(request)
    user = _checked_user(credentials.get("bk_username", "").strip(), "bk_username")
    supplier = _checked_supplier(credentials.get("bk_supplier_account") or default_supplier)
    return Caller(user=user, supplier_account=supplier, app_code=app_code, request_id=request_id)
