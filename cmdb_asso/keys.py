"""Typed keys of the application, request and response mappings."""

from __future__ import annotations

import asyncio

from aiohttp import web

from cmdb_asso.config import Settings
from cmdb_asso.service.associations import AssociationService
from cmdb_asso.service.idempotency import Idempotency
from cmdb_asso.service.queries import QueryService
from cmdb_asso.storage.client import Mongo
from cmdb_asso.web.identity import AppAuthenticator
from cmdb_asso.web.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
MONGO = web.AppKey("mongo", Mongo)
SERVICE = web.AppKey("service", AssociationService)
QUERIES = web.AppKey("queries", QueryService)
IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
APP_AUTHENTICATOR = web.AppKey("app_authenticator", AppAuthenticator)
METRICS = web.AppKey("metrics", Metrics)
# Set once SIGTERM came: /readyz answers 503 and every answer closes its connection.
DRAINING = web.AppKey("draining", asyncio.Event)
# Set while the embedded MongoDB server is being started again after it died (/readyz answers 503).
EMBEDDED_RESTARTING = web.AppKey("embedded_restarting", asyncio.Event)
# The OpenAPI document, rendered once at start-up.
OPENAPI = web.AppKey("openapi", bytes)

REQUEST_ID = web.RequestKey("request_id", str)
LANGUAGE = web.RequestKey("language", str)

# Whether the request's operation writes (a deadline then answers 1199998 rather than 1199017).
WRITES = web.RequestKey("writes", bool)

# The bk-cmdb code a response carries, for the request log line.
RESPONSE_CODE = web.ResponseKey("response_code", int)

__all__ = [
    "APP_AUTHENTICATOR",
    "DRAINING",
    "EMBEDDED_RESTARTING",
    "IDEMPOTENCY",
    "LANGUAGE",
    "METRICS",
    "MONGO",
    "OPENAPI",
    "QUERIES",
    "REQUEST_ID",
    "RESPONSE_CODE",
    "SERVICE",
    "SETTINGS",
    "WRITES",
]
