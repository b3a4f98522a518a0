"""Every URL of the service in one list: each operation with its native path and its ESB name."""

from __future__ import annotations

from dataclasses import dataclass

import swagger_ui_bundle
from aiohttp import web

from cmdb_asso.web import handlers

ESB_PREFIXES = ("/api/c/compapi/v2/cc/", "/api/c/compapi/cc/")


@dataclass(frozen=True, slots=True)
class Route:
    """One operation, reachable by its native method and path and by its ESB name."""

    method: str
    native_path: str
    esb_name: str
    operation: handlers.Operation

    @property
    def writes(self) -> bool:
        """Whether the operation changes data."""
        return self.native_path.startswith(("/api/v3/create", "/api/v3/delete"))

    @property
    def idempotent(self) -> bool:
        """Whether the operation takes an `Idempotency-Key` (the creates)."""
        return self.native_path.startswith("/api/v3/create")


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v3/create/instassociation", "add_instance_association", handlers.create_instance_association),
    Route(
        "POST",
        "/api/v3/createmany/instassociation",
        "batch_create_instance_association",
        handlers.create_many_instance_associations,
    ),
    Route(
        "DELETE",
        "/api/v3/delete/instassociation/{bk_obj_id}/{id}",
        "delete_instance_association",
        handlers.delete_instance_association,
    ),
    Route(
        "DELETE",
        "/api/v3/delete/instassociation/batch",
        "delete_related_inst_asso",
        handlers.delete_instance_associations,
    ),
    Route("POST", "/api/v3/find/instassociation", "find_instance_association", handlers.find_instance_associations),
    Route(
        "POST",
        "/api/v3/find/instassociation/related",
        "search_related_inst_asso",
        handlers.find_related_instance_associations,
    ),
    Route(
        "POST",
        "/api/v3/search/instance_associations/object/{bk_obj_id}",
        "search_instance_associations",
        handlers.search_instance_associations,
    ),
    Route(
        "POST",
        "/api/v3/count/instance_associations/object/{bk_obj_id}",
        "count_instance_associations",
        handlers.count_instance_associations,
    ),
)


def setup_routes(app: web.Application) -> None:
    """Register both spellings of every operation, and the operational routes."""
    for route in ROUTES:
        native = handlers.native_view(
            route.operation, writes=route.writes, name=route.esb_name, idempotent=route.idempotent
        )
        app.router.add_route(route.method, route.native_path, native)
        esb = handlers.esb_view(route.operation, writes=route.writes, name=route.esb_name, idempotent=route.idempotent)
        for prefix in ESB_PREFIXES:
            app.router.add_post(f"{prefix}{route.esb_name}/", esb)
            app.router.add_post(f"{prefix}{route.esb_name}", esb)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/openapi.json", handlers.openapi)
    app.router.add_get("/docs", handlers.docs)
    app.router.add_static("/docs/static", swagger_ui_bundle.swagger_ui_path)
