"""The OpenAPI document: valid, every route documented and every documented route served; the docs page."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

Client = TestClient[Any, Any]


def _served(client: Client) -> set[tuple[str, str]]:
    assert client.app is not None
    served = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method not in ("HEAD", "*", "OPTIONS"):
            served.add((route.method.lower(), path))
    return served


async def test_the_document_is_valid_openapi_3(client: Client) -> None:
    response = await client.get("/openapi.json")

    assert response.status == 200
    document = await response.json()
    validate(document)
    assert document["openapi"].startswith("3.")


async def test_every_route_is_documented_and_every_documented_route_exists(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    served = _served(client)

    # ESB names are served with and without the trailing slash and the version; the document names the
    # canonical /api/c/compapi/v2/cc/<name>/ form, and the static files of the docs page are not API routes.
    canonical = {
        (method, path)
        for method, path in served
        if not path.startswith(("/api/c/compapi/cc/", "/docs"))
        and not (path.startswith("/api/c/compapi/v2/cc/") and not path.endswith("/"))
    }
    assert documented == canonical


async def test_each_operation_has_request_and_response_schemas(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert "200" in operation["responses"], (method, path)
                assert "503" in operation["responses"], (method, path)
                if method != "delete" or "{" not in path:
                    assert "requestBody" in operation, (method, path)
    create = document["components"]["schemas"]["CreateAssociation"]
    assert set(create["required"]) == {"bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id"}
    assert create["properties"]["bk_inst_id"] == {"type": "integer", "format": "int64"}


async def test_the_docs_page_is_served_from_local_files(client: Client) -> None:
    page = await client.get("/docs")
    bundle = await client.get("/docs/static/swagger-ui-bundle.js")

    assert page.status == 200
    html = await page.text()
    assert "/openapi.json" in html
    assert "http" not in html.replace("/openapi.json", "")  # no CDN
    assert bundle.status == 200
    assert len(await bundle.read()) > 100_000
