"""The OpenAPI document: valid, every route documented and every documented route served; the docs page."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from cmdb_asso.operations import OPERATIONS
from cmdb_asso.web.openapi import build_spec
from tests.helpers import call

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
    # canonical /api/c/compapi/v2/cc/<name>/ form, and the static files of the docs and graph pages are not API
    # routes.
    canonical = {
        (method, path)
        for method, path in served
        if not path.startswith(("/api/c/compapi/cc/", "/docs", "/graph/static"))
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
                # Every operation takes a body but those whose path carries it all (delete one, the topology, the
                # Association tab's page).
                path_only = "{" in path and (
                    method == "delete" or "/insttopo/" in path or "/instassttopo/" in path or path.endswith("/web")
                )
                assert ("requestBody" in operation) is not path_only, (method, path)
    create = document["components"]["schemas"]["CreateAssociation"]
    assert set(create["required"]) == {"bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id"}
    assert create["properties"]["bk_inst_id"] == {
        "type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}  # fmt: skip
    assert create["properties"]["dry_run"]["type"] == "boolean"


async def test_the_document_states_what_the_service_enforces_and_answers(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    delete_one = document["paths"]["/api/v3/delete/instassociation/{bk_obj_id}/{id}"]["delete"]
    path_parameters = {parameter["name"]: parameter["schema"] for parameter in delete_one["parameters"]}
    assert path_parameters["id"]["type"] == "integer"
    assert path_parameters["id"]["minimum"] == 0
    assert path_parameters["bk_obj_id"]["pattern"] == "^[A-Za-z0-9_]{1,128}$"
    assert path_parameters["X-Bkcmdb-Supplier-Account"]["pattern"] == "^([A-Za-z0-9_]{1,64})?$"  # empty: "0"
    assert schemas["DeleteMany"]["properties"]["id"]["maxItems"] == 500
    assert schemas["Search"]["properties"]["bk_obj_id"]["pattern"] == "^[A-Za-z0-9_]{1,128}$"
    assert schemas["CreateMany"]["properties"]["atomic"]["type"] == "boolean"
    for path, operations in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            responses = operation["responses"]
            assert {"200", "400", "401", "404", "405", "408", "413", "500", "503"} <= set(responses), path
            assert "Allow" in responses["405"]["headers"]
            assert "Retry-After" in responses["503"]["headers"]
            for response in responses.values():
                assert {"X-Request-Id", "X-Bkapi-Request-Id"} <= set(response["headers"])


async def test_the_docs_page_is_served_from_local_files(client: Client) -> None:
    page = await client.get("/docs")
    bundle = await client.get("/docs/static/swagger-ui-bundle.js")

    assert page.status == 200
    html = await page.text()
    assert "/openapi.json" in html
    assert "http" not in html.replace("/openapi.json", "")  # no CDN
    assert bundle.status == 200
    assert len(await bundle.read()) > 100_000


async def test_each_operation_is_described_with_its_codes_and_an_example_that_works_on_the_demo_data(
    client: TestClient[Any, Any],
) -> None:
    spec = build_spec()
    answers = {}
    for route in OPERATIONS:
        assert route.example is not None, route.name
        answers[route.name] = await call(client, route.name, route.example)
    native = {route.name: spec["paths"][route.native_path][route.method.lower()] for route in OPERATIONS}

    for route in OPERATIONS:
        described = native[route.name]
        assert described["summary"] == route.summary != ""
        assert "| code | meaning |" in described["description"]
        assert "| 9900403 | The caller lacks permission" in described["description"]
        for code in route.codes:
            assert f"| {code} | " in described["description"], (route.name, code)
        # Every example is answered as it would be on the demo data: the watch needs change streams, which
        # the in-memory stand-in has not; an apply URL needs BlueKing IAM (its own tests have a fake one).
        expected = {"watch": 1199998, "apply_url": 1199072}.get(route.name, 0)
        assert answers[route.name].code == expected, (route.name, answers[route.name].body)
    assert [name for name, schema in spec["components"]["schemas"].items() if not schema.get("description")] == []
