"""The application factory: middlewares, cleanup contexts and routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp_cors
import orjson
import structlog
from aiohttp import web

from cmdb_asso.config import AuthSettings, Settings
from cmdb_asso.errors import CmdbError
from cmdb_asso.keys import (
    APP_AUTHENTICATOR,
    DRAINING,
    EMBEDDED_RESTARTING,
    GATEWAY,
    IAM,
    IDEMPOTENCY,
    IMPORTER,
    METRICS,
    MONGO,
    OPENAPI,
    QUERIES,
    READINESS,
    SERVICE,
    SETTINGS,
    WATCH,
)
from cmdb_asso.service.admission import Gate
from cmdb_asso.service.apps import AppAuthenticator
from cmdb_asso.service.associations import AssociationService
from cmdb_asso.service.gateway import GatewayVerifier
from cmdb_asso.service.iam import IamAuthorizer, IamClient
from cmdb_asso.service.idempotency import Idempotency
from cmdb_asso.service.importing import AssociationImporter
from cmdb_asso.service.permission import AllowAll, Authorizer, StaticPolicy, UserGrants
from cmdb_asso.service.queries import QueryService
from cmdb_asso.service.readiness import Readiness
from cmdb_asso.service.watch import EventFeed, WatchService
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EMBEDDED, EmbeddedMongo
from cmdb_asso.storage.idempotency import IdempotencyStore
from cmdb_asso.storage.schema import ShardedTables, ensure_indexes, refuse_sharded_tables
from cmdb_asso.storage.watch import WatchStore
from cmdb_asso.web.metrics import Metrics
from cmdb_asso.web.middlewares import error_envelope, request_context, request_deadline
from cmdb_asso.web.openapi import build_spec
from cmdb_asso.web.routes import setup_routes

log = structlog.get_logger(__name__)
EMBEDDED_WATCH_SECONDS = 0.5
WATCH_PROBE_RETRY_SECONDS = 2.0
METRICS_SHARE_SECONDS = 1.0
# Beyond two recovery intervals, how long a recoverer may be silent before another process takes its lease.
RECOVERY_LEASE_SLACK_SECONDS = 5.0
TASK_STOP_ATTEMPTS = 3
TASK_STOP_SECONDS = 2.0


async def open_mongo(
    settings: Settings, *, use_running_server: bool = False
) -> tuple[MongoConnection, EmbeddedMongo | None]:
    """Connect to the configured MongoDB, first starting the embedded server when the URI is `embedded`.

    With `use_running_server` (one-off commands), an embedded server already serving the data directory (the
    service's) is used, not owned; otherwise the server started (or adopted) here is returned to be stopped.
    """
    embedded = None
    uri = settings.mongodb.uri
    if uri == EMBEDDED:
        embedded = EmbeddedMongo(settings.data_dir)
        running = embedded.running() if use_running_server else None
        if running is not None:
            return await connect(settings.mongodb, running, embedded=True), None
        uri = await embedded.start()
    try:
        return await connect(settings.mongodb, uri, embedded=embedded is not None), embedded
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise


def handler_args(settings: Settings) -> dict[str, Any]:
    """The HTTP parser's limits on request line and header sizes (longer ones answer 400), and how long an
    answered connection keeps reading a body nobody will read (a stalled or refused one) before it closes."""
    return {
        "max_line_size": settings.http.max_header_bytes,
        "max_field_size": settings.http.max_header_bytes,
        # aiohttp's default is 10 s: a stalled client would hold its 408 connection that long.
        "lingering_time": 1.0,
    }


def authorizer_from(auth: AuthSettings) -> Authorizer | None:
    """The authorizer the settings name: allow-all, or the static policy; None for IAM's, which is built over the
    store, for the application's lifetime."""
    if auth.authorizer == "iam":
        return None
    if auth.authorizer == "static":
        return StaticPolicy(
            {
                user: UserGrants(
                    frozenset(grant.edit), frozenset(grant.view), frozenset(grant.watch), grant.all_suppliers
                )
                for user, grant in auth.policy.items()
            }
        )
    return AllowAll()


async def _watch_embedded(embedded: EmbeddedMongo, restarting: asyncio.Event) -> None:
    """Forever: if the embedded server dies, start it again on its port (/readyz says so meanwhile); the
    driver reconnects by itself."""
    while True:
        await asyncio.sleep(EMBEDDED_WATCH_SECONDS)
        if embedded.alive():
            continue
        restarting.set()
        log.error("embedded_mongodb_died", port=embedded.port, restarts=embedded.restarts)
        try:
            await embedded.restart()
        except RuntimeError:
            log.error("embedded_mongodb_restart_failed", port=embedded.port)
            continue
        restarting.clear()


async def _serve_watch(watch: WatchService, mongo: MongoConnection) -> None:
    """In the background: learn whether the database serves change streams (asking again while it does not
    answer), then feed events from them, whenever this process holds the feeder's lease."""
    while watch.available is None:
        try:
            await mongo.supports_transactions()  # what the server is decides one stream or one per table
            await watch.probe()
        except CmdbError as exc:
            log.info("watch_probe_postponed", code=exc.code)
            await asyncio.sleep(WATCH_PROBE_RETRY_SECONDS)
    while watch.available and watch.feed is not None:
        try:
            await watch.feed.run()
        except Exception:  # a surprise must not end the feed for the life of the process
            log.exception("watch_feeder_failed")
            await asyncio.sleep(WATCH_PROBE_RETRY_SECONDS)


async def _recover_periodically(store: AssociationStore, settings: Settings) -> None:
    """Forever: settle the writes that a process (this one before a restart, or another) left unfinished,
    once they are older than any in-flight request could be, while this process holds the database's recovery
    lease (one recoverer at a time; each entry is also claimed, so a second one would only cost)."""
    interval = settings.mongodb.recovery_interval_seconds
    lease = store.journal.recovery_lease(2 * interval + RECOVERY_LEASE_SLACK_SECONDS)
    try:
        while True:
            try:
                if await lease.hold():
                    await store.journal.recover(
                        settings.supplier_account, grace_seconds=settings.mongodb.recovery_grace_seconds
                    )
            except CmdbError as exc:
                log.info("recovery_postponed", code=exc.code)
            except Exception:  # a surprise must not end recovery for the life of the process
                log.exception("recovery_failed")
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(CmdbError):
            await lease.release()


async def _sharing_metrics(app: web.Application) -> AsyncIterator[None]:
    """For the application's lifetime: write this worker's metrics for its siblings' scrapes every second,
    and once more when it stops."""

    async def share() -> None:
        while True:
            app[METRICS].share()
            await asyncio.sleep(METRICS_SHARE_SECONDS)

    task = asyncio.create_task(share())
    yield
    await _stop_tasks([task])
    app[METRICS].share()


async def _check_sharding_later(mongo: MongoConnection, settings: Settings, readiness: Readiness) -> None:
    """The start-up check of sharded association tables, tried again until MongoDB answers it; sharded tables
    found then make the service not ready (it cannot stop itself once serving)."""
    while True:
        try:
            await refuse_sharded_tables(mongo, settings.supplier_account)
        except CmdbError as exc:
            log.info("sharding_check_postponed", code=exc.code)
            await asyncio.sleep(WATCH_PROBE_RETRY_SECONDS)
            continue
        except ShardedTables as exc:
            log.error("association_tables_sharded", tables=exc.tables, detail=str(exc))
            readiness.fault = f"association tables are sharded: {', '.join(exc.tables)}"
            return
        log.info("sharding_checked", sharded=False)
        return


async def _prepare_tables(mongo: MongoConnection, store: AssociationStore, settings: Settings) -> None:
    """In the background at start-up: read every model table's indexes and build the missing ones, a few
    tables at a time and within a bounded time; the service serves meanwhile."""
    try:
        async with asyncio.timeout(settings.mongodb.index_preparation_seconds):
            await store.ids.apply_initial_ids()
            states = await ensure_indexes(mongo, settings.supplier_account, store.indexes)
    except (CmdbError, TimeoutError) as exc:
        # Tables are prepared again when a request first writes to them.
        log.warning("startup_index_preparation_incomplete", error=type(exc).__name__)
        return
    log.info("tables_prepared", tables=len(states), incomplete=sum(not state.complete for state in states))


def _setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=True, expose_headers=("X-Request-Id", "X-Bkapi-Request-Id"), allow_headers="*"
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        cors.add(route)


async def _services_context(
    settings: Settings, mongo: MongoConnection | None, authorizer: Authorizer | None, app: web.Application
) -> AsyncIterator[None]:
    """For the application's lifetime: the MongoDB connection (and embedded server), the services over it,
    and the background tasks (table preparation, recovery, the embedded server's watch)."""
    connection, embedded = (mongo, None) if mongo is not None else await open_mongo(settings)
    tasks: list[asyncio.Task[None]] = []
    store: AssociationStore | None = None
    iam: IamClient | None = None
    try:
        store = _store(connection, settings)
        if authorizer is None:
            iam_settings = settings.auth.iam
            iam = IamClient(
                iam_settings.url, iam_settings.app_code, iam_settings.app_secret,
                timeout_seconds=iam_settings.timeout_seconds, cache_seconds=iam_settings.policy_cache_seconds,
                cache_entries=iam_settings.policy_cache_entries,
            )  # fmt: skip
            app[METRICS].watch_iam(iam)
            app[IAM] = iam
            authorizer = IamAuthorizer(iam, store)
        _install_services(app, connection, store, authorizer, settings)
        try:
            await refuse_sharded_tables(connection, settings.supplier_account)
        except CmdbError:  # MongoDB down at start-up: the service starts, and the check runs once it answers
            tasks.append(asyncio.create_task(_check_sharding_later(connection, settings, app[READINESS])))
        tasks.append(asyncio.create_task(_prepare_tables(connection, store, settings)))
        tasks.append(asyncio.create_task(_recover_periodically(store, settings)))
        if settings.watch.enabled == "on":
            await app[WATCH].probe()  # refuses to start without change streams
        if settings.watch.enabled != "off":
            tasks.append(asyncio.create_task(_serve_watch(app[WATCH], connection)))
        if embedded is not None:
            tasks.append(asyncio.create_task(_watch_embedded(embedded, app[EMBEDDED_RESTARTING])))
        yield
    finally:
        await _stop_tasks(tasks)
        if SERVICE in app:
            await app[SERVICE].close()
        if WATCH in app:
            await app[WATCH].newest.close()
        if store is not None:
            await store.indexes.close()
        if iam is not None:
            await iam.close()
        if mongo is None:
            await connection.close()
        if embedded is not None:
            await embedded.stop()


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait for them, cancelling again one that swallowed its cancellation (a
    driver call cut at the wrong moment can), so that a shutdown never hangs on one."""
    for _attempt in range(TASK_STOP_ATTEMPTS):
        running = [task for task in tasks if not task.done()]
        if not running:
            break
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=TASK_STOP_SECONDS)
    stuck = [task.get_name() for task in tasks if not task.done()]
    if stuck:
        log.error("background_tasks_not_stopped", tasks=stuck)
    await asyncio.gather(*(task for task in tasks if task.done()), return_exceptions=True)


def _store(connection: MongoConnection, settings: Settings) -> AssociationStore:
    return AssociationStore(
        connection,
        id_block_size=settings.mongodb.id_block_size,
        definition_cache_seconds=settings.mongodb.definition_cache_seconds,
        fold_reads=settings.mongodb.fold_reads,
        definition_cache_entries=settings.limits.definition_cache_entries,
        track_changes=settings.watch.enabled != "off",
    )


def _install_services(
    app: web.Application,
    connection: MongoConnection,
    store: AssociationStore,
    authorizer: Authorizer,
    settings: Settings,
) -> None:
    app[MONGO] = connection
    app[READINESS] = Readiness(connection)
    app[SERVICE] = AssociationService(
        store,
        authorizer,
        group_limit=settings.limits.create_many_max,
        groups_in_flight=settings.limits.create_groups_in_flight,
    )
    app[IMPORTER] = AssociationImporter(store, app[SERVICE], authorizer)
    app[QUERIES] = QueryService(
        store,
        authorizer,
        find_max_results=settings.limits.find_max_results,
        graph_max_nodes=settings.limits.graph_max_nodes,
        graph_max_links=settings.limits.graph_max_links,
        heavy_reads=Gate("heavy reads", settings.limits.heavy_reads_in_flight),
        topo_max_links=settings.topo.max_links,
        max_unbounded=settings.query.max_unbounded,
    )
    deadline = settings.mongodb.request_deadline_seconds
    app[IDEMPOTENCY] = Idempotency(
        IdempotencyStore(connection, settings.limits.idempotency_retention_hours * 3600),
        # A retry waits for a running holder's answer for half its own deadline, then answers 409.
        wait_seconds=deadline / 2,
        stale_seconds=2 * deadline,
    )
    watching = settings.watch
    events = WatchStore(connection, watching.retention_seconds, watching.database)
    feed = EventFeed(
        events,
        lease_seconds=watching.lease_seconds,
        rescan_seconds=watching.rescan_seconds,
        stall_seconds=watching.stall_seconds,
    )
    app[WATCH] = WatchService(
        events, store, authorizer, enabled=watching.enabled, long_poll_seconds=watching.long_poll_seconds,
        read_seconds=settings.mongodb.request_deadline_seconds, feed=feed, stopping=app[DRAINING],
        long_polls=Gate("long polls", settings.limits.long_polls_in_flight),
    )  # fmt: skip
    app[METRICS].watch_gates([app[QUERIES].heavy_reads, app[WATCH].long_polls])
    app[METRICS].watch_storage(store, connection.commands)
    app[METRICS].watch_feed(feed)
    app[METRICS].watch_groups(app[SERVICE])


def gateway_verifier(settings: Settings) -> GatewayVerifier | None:
    """The gateway's token check from the settings; None when no gateway key is configured."""
    gateway = settings.auth.gateway
    if not gateway.public_key:
        return None
    return GatewayVerifier(
        gateway.public_key, algorithms=gateway.algorithms, issuer=gateway.issuer, leeway_seconds=gateway.leeway_seconds,
        require_exp=gateway.require_exp, require_verified_user=gateway.require_verified_user,
        cache_entries=gateway.token_cache_entries, jwt_required=gateway.jwt_required,
        trusted_networks=gateway.trusted_networks,
    )  # fmt: skip


def create_app(
    settings: Settings,
    *,
    mongo: MongoConnection | None = None,
    authorizer: Authorizer | None = None,
    metrics_dir: Path | None = None,
) -> web.Application:
    """Build the application; `mongo` replaces the configured connection (tests pass their own);
    `metrics_dir` is where the workers of one service share their metrics."""
    app = web.Application(
        middlewares=[request_context, error_envelope, request_deadline],
        client_max_size=settings.http.max_body_bytes,
        handler_args=handler_args(settings),
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics(metrics_dir)
    app[DRAINING] = asyncio.Event()
    app[EMBEDDED_RESTARTING] = asyncio.Event()
    app[OPENAPI] = orjson.dumps(build_spec())
    app[APP_AUTHENTICATOR] = AppAuthenticator({app.code: app.secret_hash for app in settings.auth.apps})
    app[GATEWAY] = gateway_verifier(settings)
    chosen_authorizer = authorizer or authorizer_from(settings.auth)

    app.cleanup_ctx.append(functools.partial(_services_context, settings, mongo, chosen_authorizer))
    if metrics_dir is not None:
        app.cleanup_ctx.append(_sharing_metrics)
    if app[APP_AUTHENTICATOR].open:
        log.warning("esb_app_authentication_open", detail="no apps configured: every ESB app is accepted")
    setup_routes(app)
    if settings.http.cors_origins:
        _setup_cors(app, settings.http.cors_origins)
    return app
