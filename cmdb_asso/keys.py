"""Typed keys of the application, request and response mappings."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the keys need only the types: no import runs back up the layers
    from cmdb_asso.config import Settings
    from cmdb_asso.service.apps import AppAuthenticator
    from cmdb_asso.service.associations import AssociationService
    from cmdb_asso.service.gateway import GatewayVerifier
    from cmdb_asso.service.iam import IamClient
    from cmdb_asso.service.idempotency import Idempotency
    from cmdb_asso.service.importing import AssociationImporter
    from cmdb_asso.service.queries import QueryService
    from cmdb_asso.service.readiness import Readiness
    from cmdb_asso.service.watch import WatchService
    from cmdb_asso.storage.client import MongoConnection
    from cmdb_asso.web.metrics import Metrics

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
# The database connection, for the composition root (app.py) and commands; handlers never see it.
MONGO: web.AppKey[MongoConnection] = web.AppKey("mongo")
SERVICE: web.AppKey[AssociationService] = web.AppKey("service")
QUERIES: web.AppKey[QueryService] = web.AppKey("queries")
IMPORTER: web.AppKey[AssociationImporter] = web.AppKey("importer")
# The gateway's token check; None when no gateway key is configured (the X-Bkapi-JWT header is then ignored).
GATEWAY: web.AppKey[GatewayVerifier | None] = web.AppKey("gateway")
# The IAM client, where IAM decides permissions (for /readyz).
IAM: web.AppKey[IamClient] = web.AppKey("iam")
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
IDEMPOTENCY: web.AppKey[Idempotency] = web.AppKey("idempotency")
WATCH: web.AppKey[WatchService] = web.AppKey("watch")
APP_AUTHENTICATOR: web.AppKey[AppAuthenticator] = web.AppKey("app_authenticator")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# Set once SIGTERM came: /readyz answers 503 and every answer closes its connection.
DRAINING = web.AppKey("draining", asyncio.Event)
# Set while the embedded MongoDB server is being started again after it died (/readyz answers 503).
EMBEDDED_RESTARTING = web.AppKey("embedded_restarting", asyncio.Event)
# The OpenAPI document, rendered once at start-up.
OPENAPI = web.AppKey("openapi", bytes)

REQUEST_ID = web.RequestKey("request_id", str)
LANGUAGE = web.RequestKey("language", str)
# Whether the request came through the API gateway: its answers are spelled code/message (CONTRACT-blueking 2.6).
GATEWAY_SPELLING = web.RequestKey("gateway_spelling", bool)

# Whether the request's operation writes (a deadline then answers 1199998 rather than 1199017).
OPERATION_WRITES = web.RequestKey("writes", bool)

# The bk-cmdb code a response carries, for the request log line.
RESPONSE_CODE = web.ResponseKey("response_code", int)

__all__ = [
    "APP_AUTHENTICATOR",
    "DRAINING",
    "EMBEDDED_RESTARTING",
    "GATEWAY",
    "GATEWAY_SPELLING",
    "IAM",
    "IDEMPOTENCY",
    "IMPORTER",
    "LANGUAGE",
    "METRICS",
    "MONGO",
    "OPENAPI",
    "OPERATION_WRITES",
    "QUERIES",
    "READINESS",
    "REQUEST_ID",
    "RESPONSE_CODE",
    "SERVICE",
    "SETTINGS",
    "WATCH",
]
