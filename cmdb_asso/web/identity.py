"""Who is calling: request id, language, user, supplier account and (ESB) application, from the request."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from cmdb_asso.credentials import verify_secret
from cmdb_asso.errors import AppAuthFailed, BodyInvalid, Language, UserUnknown
from cmdb_asso.service.context import Caller

log = structlog.get_logger(__name__)

REQUEST_ID_HEADERS = ("X-Request-Id", "X-Bkapi-Request-Id", "Cc_Request_Id")
LANGUAGE_HEADERS = ("X-Bkcmdb-Language", "Blueking-Language", "HTTP_BLUEKING_LANGUAGE")
USER_HEADERS = ("X-Bkcmdb-User", "BK_User")
SUPPLIER_HEADERS = (
    "X-Bkcmdb-Supplier-Account",
    "X-Bkapi-Supplier-Account",
    "HTTP_BK_SUPPLIER_ACCOUNT",
    "HTTP_BLUEKING_SUPPLIER_ID",
)
ESB_AUTH_HEADER = "X-Bkapi-Authorization"
ESB_AUTH_KEYS = (
    "bk_app_code",
    "bk_app_secret",
    "bk_username",
    "bk_token",
    "bk_supplier_account",
    "access_token",
)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The supplier account becomes part of table names, so only a plain token is accepted.
_SUPPLIER_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _checked_supplier(value: str) -> str:
    if not _SUPPLIER_ACCOUNT.match(value):
        raise BodyInvalid("bk_supplier_account")
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
    return given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


def language_of(request: web.Request, default: Language) -> Language:
    """The message language from the language headers, else `default`."""
    value = _first_header(request, LANGUAGE_HEADERS).lower()
    if value.startswith("zh"):
        return "zh"
    if value.startswith("en"):
        return "en"
    return default


def native_caller(request: web.Request, request_id: str, default_supplier: str) -> Caller:
    """The caller of a native request, from bk-cmdb's headers; a missing user is 1199027 (401)."""
    user = _first_header(request, USER_HEADERS)
    if not user:
        raise UserUnknown("user")
    supplier = _checked_supplier(_first_header(request, SUPPLIER_HEADERS) or default_supplier)
    return Caller(user=user, supplier_account=supplier, request_id=request_id)


def esb_credentials(request: web.Request, body: Mapping[str, Any]) -> dict[str, str]:
    """The ESB common arguments, from `X-Bkapi-Authorization` when present (it wins), else from the body."""
    credentials = {key: body[key] for key in ESB_AUTH_KEYS if isinstance(body.get(key), str)}
    header = request.headers.get(ESB_AUTH_HEADER)
    if header is None:
        return credentials
    try:
        parsed = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise AppAuthFailed() from None
    if not isinstance(parsed, dict):
        raise AppAuthFailed()
    credentials.update({key: value for key in ESB_AUTH_KEYS if isinstance(value := parsed.get(key), str)})
    return credentials


class AppAuthenticator:
    """Checks ESB applications against the configured app codes and secret hashes."""

    def __init__(self, apps: Mapping[str, str]) -> None:
        self._apps = dict(apps)
        # A secret that passed once is remembered by its SHA-256 digest, so that the deliberately slow hash
        # runs once per app and process, not once per request. Failures are never remembered.
        self._verified: dict[str, bytes] = {}

    @property
    def open(self) -> bool:
        """Whether no apps are configured, so that every app is accepted."""
        return not self._apps

    def authenticate(self, app_code: str, secret: str) -> None:
        """Raise 1199046 unless the app is listed and its secret matches (or no apps are configured)."""
        if self.open:
            return
        stored = self._apps.get(app_code)
        if stored is None:
            raise AppAuthFailed()
        digest = hashlib.sha256(secret.encode()).digest()
        remembered = self._verified.get(app_code)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return
        if not verify_secret(secret, stored):
            log.info("esb_app_rejected", bk_app_code=app_code)
            raise AppAuthFailed()
        self._verified[app_code] = digest


def esb_caller(
    request: web.Request,
    body: Mapping[str, Any],
    request_id: str,
    default_supplier: str,
    authenticator: AppAuthenticator,
) -> Caller:
    """The caller of an ESB request: its app is authenticated, then its user is required."""
    credentials = esb_credentials(request, body)
    app_code = credentials.get("bk_app_code", "")
    authenticator.authenticate(app_code, credentials.get("bk_app_secret", ""))
    user = credentials.get("bk_username", "").strip()
    if not user:
        raise UserUnknown("user")
    supplier = _checked_supplier(credentials.get("bk_supplier_account", "").strip() or default_supplier)
    return Caller(user=user, supplier_account=supplier, app_code=app_code, request_id=request_id)
