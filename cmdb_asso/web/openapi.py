"""The OpenAPI 3 document, generated from the marshmallow request schemas and the route list."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from cmdb_asso.web import schemas
from cmdb_asso.web.routes import ESB_PREFIXES, ROUTES, Route

TITLE = "cmdb-asso"
VERSION = "0.1.0"

# The request schema of each operation, by ESB name.
REQUEST_SCHEMAS: dict[str, type[Schema]] = {
    "add_instance_association": schemas.CreateAssociationSchema,
    "batch_create_instance_association": schemas.CreateManySchema,
    "delete_instance_association": schemas.DeleteOneSchema,
    "delete_related_inst_asso": schemas.DeleteManySchema,
    "find_instance_association": schemas.FindSchema,
    "search_related_inst_asso": schemas.FindRelatedSchema,
    "search_instance_associations": schemas.SearchSchema,
    "count_instance_associations": schemas.SearchSchema,
}

_LINK: dict[str, Any] = {
    "type": "object",
    "properties": {
        name: {"type": "integer", "format": "int64"} for name in ("id", "bk_inst_id", "bk_asst_inst_id", "bk_biz_id")
    }
    | {
        name: {"type": "string"}
        for name in ("bk_obj_id", "bk_asst_obj_id", "bk_obj_asst_id", "bk_asst_id", "bk_supplier_account")
    }
    | {"create_time": {"type": "string"}, "last_time": {"type": "string"}},
}
_LINKS = {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
# The `data` of a successful answer, by ESB name.
RESPONSE_DATA: dict[str, dict[str, Any]] = {
    "add_instance_association": {
        "type": "object",
        "properties": {"id": {"type": "integer", "format": "int64", "nullable": True}, "dry_run": {"type": "boolean"}},
    },
    "batch_create_instance_association": {
        "type": "object",
        "properties": {
            "success_created": {"type": "object", "additionalProperties": {"type": "integer", "nullable": True}},
            "error_msg": {"type": "object", "additionalProperties": {"type": "string"}},
            "error_code": {"type": "object", "additionalProperties": {"type": "integer"}},
            "dry_run": {"type": "boolean"},
        },
    },
    "delete_instance_association": {"nullable": True},
    "delete_related_inst_asso": {"type": "integer"},
    "find_instance_association": _LINKS,
    "search_related_inst_asso": _LINKS,
    "search_instance_associations": {"type": "object", "properties": {"info": _LINKS}},
    "count_instance_associations": {"type": "object", "properties": {"count": {"type": "integer"}}},
}
_ESB_CREDENTIALS: dict[str, Any] = {
    "type": "object",
    "properties": {
        name: {"type": "string"}
        for name in ("bk_app_code", "bk_app_secret", "bk_username", "bk_token", "bk_supplier_account")
    },
}


def _native_envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["result", "bk_error_code", "bk_error_msg", "permission", "data"],
        "properties": {
            "result": {"type": "boolean"},
            "bk_error_code": {"type": "integer"},
            "bk_error_msg": {"type": "string"},
            "permission": {"type": "object", "nullable": True},
            "data": {**data, "nullable": True}
            if "$ref" not in data and "items" not in data
            else {"nullable": True, "oneOf": [data]},
        },
    }


def _esb_envelope(data: dict[str, Any]) -> dict[str, Any]:
    native = _native_envelope(data)["properties"]
    return {
        "type": "object",
        "required": ["result", "code", "message", "data", "permission", "request_id"],
        "properties": {
            "result": native["result"],
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "data": native["data"],
            "permission": native["permission"],
            "request_id": {"type": "string"},
        },
    }


def _errors(envelope: str) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{envelope}Error"}}}}
    return {
        "401": {"description": "the caller was not identified or authenticated (1199027, 1199046)", **error},
        "413": {"description": "the body is over the limit (1199035)", **error},
        "500": {"description": "an unexpected failure (1199999)", **error},
        "503": {"description": "MongoDB is unreachable or too slow; retry (1199017, 1199998)", **error},
    }


def _native_operation(route: Route, schema_name: str) -> dict[str, Any]:
    path_names = [part[1:-1] for part in route.native_path.split("/") if part.startswith("{")]
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_names
    ]
    parameters += [
        {"name": "X-Bkcmdb-User", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "X-Bkcmdb-Supplier-Account", "in": "header", "required": False, "schema": {"type": "string"}},
        {
            "name": "X-Bkcmdb-Language",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["en", "zh"]},
        },
    ]
    if route.idempotent:
        parameters += [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            },
            {"name": "X-Dry-Run", "in": "header", "required": False, "schema": {"type": "string", "enum": ["0", "1"]}},
        ]
    operation: dict[str, Any] = {
        "operationId": f"native_{route.esb_name}",
        "summary": f"{route.esb_name} (native spelling)",
        "tags": ["native"],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "the envelope: result true with data, or result false with a bk-cmdb code",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/Native_{route.esb_name}"}}},
            },
            **_errors("Native"),
        },
    }
    if route.method != "DELETE" or not path_names:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
        }
    return operation


def _esb_operation(route: Route, schema_name: str) -> dict[str, Any]:
    parameters = [
        {"name": "X-Bkapi-Authorization", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    return {
        "operationId": f"esb_{route.esb_name}",
        "summary": f"{route.esb_name} (ESB spelling)",
        "tags": ["esb"],
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [
                            {"$ref": f"#/components/schemas/{schema_name}"},
                            {"$ref": "#/components/schemas/EsbCredentials"},
                        ]
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "the ESB envelope (the seed's shape)",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/Esb_{route.esb_name}"}}},
            },
            **_errors("Esb"),
        },
    }


def build_spec() -> dict[str, Any]:
    """The whole document: both spellings of every operation, the envelopes, and the operational routes."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title=TITLE, version=VERSION, openapi_version="3.0.3", plugins=[plugin])
    for field_class, openapi_type, openapi_format in (
        (schemas.PositiveInt64, "integer", "int64"),
        (schemas.IntegerId, "integer", "int64"),
        (schemas.Identifier, "string", None),
        (schemas.IdList, "array", None),
        (schemas.RawList, "array", None),
        (schemas.StringList, "array", None),
    ):
        plugin.map_to_openapi_type(field_class, openapi_type, openapi_format)  # type: ignore[no-untyped-call]
    spec.components.schema("Link", _LINK)
    spec.components.schema("EsbCredentials", _ESB_CREDENTIALS)
    spec.components.schema("NativeError", _native_envelope({"nullable": True}))
    spec.components.schema("EsbError", _esb_envelope({"nullable": True}))
    registered: set[str] = set()
    for route in ROUTES:
        schema_class = REQUEST_SCHEMAS[route.esb_name]
        schema_name = schema_class.__name__.removesuffix("Schema")
        if schema_name not in registered:
            spec.components.schema(schema_name, schema=schema_class)
            registered.add(schema_name)
        spec.components.schema(f"Native_{route.esb_name}", _native_envelope(RESPONSE_DATA[route.esb_name]))
        spec.components.schema(f"Esb_{route.esb_name}", _esb_envelope(RESPONSE_DATA[route.esb_name]))
        spec.path(path=route.native_path, operations={route.method.lower(): _native_operation(route, schema_name)})
        spec.path(path=f"{ESB_PREFIXES[0]}{route.esb_name}/", operations={"post": _esb_operation(route, schema_name)})
    for path, description in (
        ("/healthz", "the process is alive"),
        ("/readyz", "MongoDB answers a ping (503 with the reason otherwise)"),
        ("/metrics", "Prometheus text format"),
        ("/openapi.json", "this document"),
    ):
        spec.path(
            path=path,
            operations={
                "get": {
                    "operationId": path.strip("/").replace(".", "_"),
                    "tags": ["operations"],
                    "responses": {"200": {"description": description}},
                }
            },
        )
    document: dict[str, Any] = spec.to_dict()
    return document
