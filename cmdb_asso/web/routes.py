"""Every URL of the service in one list: each operation with its native path and its ESB name."""

from __future__ import annotations

from dataclasses import dataclass

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


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v3/create/instassociation",
        "add_instance_association",
        handlers.create_instance_association,
    ),
)


def setup_routes(app: web.Application) -> None:
    """Register both spellings of every operation, and the operational routes."""
    for route in ROUTES:
        app.router.add_route(route.method, route.native_path, handlers.native_view(route.operation))
        esb = handlers.esb_view(route.operation)
        for prefix in ESB_PREFIXES:
            app.router.add_post(f"{prefix}{route.esb_name}/", esb)
            app.router.add_post(f"{prefix}{route.esb_name}", esb)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
