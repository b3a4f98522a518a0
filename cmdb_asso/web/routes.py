"""Every URL of the service: each operation of the table (cmdb_asso.operations) with its handler, by both
spellings, and the operational routes."""

from __future__ import annotations

import swagger_ui_bundle
from aiohttp import web

from cmdb_asso.operations import LONG_POLL_MARK, OPERATIONS
from cmdb_asso.web import handlers
from cmdb_asso.web.graph_page import VIS_NETWORK_DIR

ESB_PREFIXES = ("/api/c/compapi/v2/cc/", "/api/c/compapi/cc/")


# Each operation's handler, by the operation's name in the one table of operations.
HANDLERS: dict[str, handlers.OperationHandler] = {
    "create": handlers.create_instance_association,
    "create_many": handlers.create_many_instance_associations,
    "delete": handlers.delete_instance_association,
    "delete_many": handlers.delete_instance_associations,
    "find": handlers.find_instance_associations,
    "find_related": handlers.find_related_instance_associations,
    "search": handlers.search_instance_associations,
    "count": handlers.count_instance_associations,
    "topo": handlers.instance_topology,
    "links_with_instances": handlers.links_with_instance_details,
    "base_info": handlers.instance_base_info,
    "graph": handlers.graph_of_instance_associations,
    "watch": handlers.watch_link_events,
    "association_tab": handlers.association_tab,
    "full_topo": handlers.full_instance_topology,
    "business_host_links": handlers.business_host_links,
    "model_associations": handlers.model_associations,
    "definitions_by_ids": handlers.definitions_by_ids,
    "import": handlers.import_associations,
    "apply_url": handlers.permission_apply_url,
}


def setup_routes(app: web.Application) -> None:
    """Register both spellings of every operation, and the operational routes."""
    for operation in OPERATIONS:
        run = HANDLERS[operation.name]
        writes, name, idempotent = operation.writes, operation.esb_name, operation.idempotent
        decode = operation.body_error
        go_body = operation.go_body
        native = handlers.native_view(run, writes=writes, name=name, idempotent=idempotent,
                                      reads_body=operation.reads_body, body_error=decode, go_body=go_body)  # fmt: skip
        esb = handlers.esb_view(
            run, writes=writes, name=name, idempotent=idempotent, body_error=decode, go_body=go_body
        )
        for view in (native, esb):
            setattr(view, LONG_POLL_MARK, operation.long_poll)
        app.router.add_route(operation.method, operation.native_path, native)
        for prefix in ESB_PREFIXES if operation.esb else ():
            app.router.add_post(f"{prefix}{operation.esb_name}/", esb)
            app.router.add_post(f"{prefix}{operation.esb_name}", esb)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/openapi.json", handlers.openapi)
    app.router.add_get("/docs", handlers.docs)
    app.router.add_static("/docs/static", swagger_ui_bundle.swagger_ui_path)
    app.router.add_get("/graph", handlers.graph_page)
    app.router.add_static("/graph/static", VIS_NETWORK_DIR)
