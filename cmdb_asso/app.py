"""The application factory: middlewares, cleanup contexts and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from cmdb_asso.config import Settings
from cmdb_asso.errors import CmdbError
from cmdb_asso.keys import APP_AUTHENTICATOR, MONGO, QUERIES, SERVICE, SETTINGS
from cmdb_asso.service.associations import AssociationService
from cmdb_asso.service.permission import AllowAll, Authorizer
from cmdb_asso.service.queries import QueryService
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import EMBEDDED, EmbeddedMongo, Mongo, connect
from cmdb_asso.storage.schema import ensure_indexes
from cmdb_asso.web.identity import AppAuthenticator
from cmdb_asso.web.middlewares import error_envelope, request_context
from cmdb_asso.web.routes import setup_routes

log = structlog.get_logger(__name__)


async def open_mongo(settings: Settings) -> tuple[Mongo, EmbeddedMongo | None]:
    """Connect to the configured MongoDB, first starting the embedded server when the URI is `embedded`."""
    embedded = None
    uri = settings.mongodb.uri
    if uri == EMBEDDED:
        embedded = EmbeddedMongo(settings.data_dir)
        uri = await embedded.start()
    try:
        return await connect(settings.mongodb, uri, embedded=embedded is not None), embedded
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise


def create_app(
    settings: Settings, *, mongo: Mongo | None = None, authorizer: Authorizer | None = None
) -> web.Application:
    """Build the application; `mongo` replaces the configured connection (tests pass their own)."""
    app = web.Application(middlewares=[request_context, error_envelope], client_max_size=settings.http.max_body_bytes)
    app[SETTINGS] = settings
    app[APP_AUTHENTICATOR] = AppAuthenticator({})

    async def mongo_context(app: web.Application) -> AsyncIterator[None]:
        connection, embedded = (mongo, None) if mongo is not None else await open_mongo(settings)
        try:
            store = AssociationStore(
                connection,
                id_block_size=settings.mongodb.id_block_size,
                definition_cache_seconds=settings.mongodb.definition_cache_seconds,
            )
            app[MONGO] = connection
            chosen = authorizer or AllowAll()
            app[SERVICE] = AssociationService(store, chosen)
            app[QUERIES] = QueryService(store, chosen)
            try:
                await ensure_indexes(connection, settings.supplier_account)
            except CmdbError as exc:
                # The service still starts; tables get their indexes before their first write anyway.
                log.warning("startup_indexes_skipped", code=exc.code)
            yield
        finally:
            if mongo is None:
                await connection.close()
            if embedded is not None:
                await embedded.stop()

    app.cleanup_ctx.append(mongo_context)
    if app[APP_AUTHENTICATOR].open:
        log.warning("esb_app_authentication_open", detail="no apps configured: every ESB app is accepted")
    setup_routes(app)
    return app
