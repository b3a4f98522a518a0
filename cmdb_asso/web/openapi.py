"""The OpenAPI 3 document, generated from the marshmallow request schemas and the route list."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from cmdb_asso.errors import error_codes
from cmdb_asso.inputs import INT64_MAX, MODEL_ID, SUPPLIER_ACCOUNT
from cmdb_asso.operations import OPERATIONS, Operation
from cmdb_asso.service.idempotency import MAX_KEY_LENGTH
from cmdb_asso.web import schemas
from cmdb_asso.web.handlers import DRY_RUN_WORDS
from cmdb_asso.web.identity import LANGUAGE_HEADERS
from cmdb_asso.web.routes import ESB_PREFIXES

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
    "search_inst_association_topo": schemas.TopoSchema,
    "find_instassociation_with_inst": schemas.LinksWithInstancesSchema,
    "search_inst_asst_object_inst_base_info": schemas.BaseInfoSchema,
    "search_inst_association_graph": schemas.GraphSchema,
    "resource_watch": schemas.WatchSchema,
    "find_instance_associations_web": schemas.AssociationTabSchema,
    "search_inst_full_association_topo": schemas.TopoSchema,
    "find_instance_association_with_biz": schemas.BusinessHostLinksSchema,
    "find_model_associations_by_condition": schemas.ModelAssociationsSchema,
    "find_association_by_object_association_id": schemas.DefinitionsByIdsSchema,
    "import_instance_associations": schemas.ImportSchema,
    "get_permission_apply_url": schemas.PermissionSchema,
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
    "search_inst_full_association_topo": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "prev": {"type": "array", "items": {"type": "object"}},
                "next": {"type": "array", "items": {"type": "object"}},
                "curr": {"type": "object"},
            },
        },
    },
    "find_model_associations_by_condition": {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "info": {"type": "array", "items": {"type": "object"}}},
    },
    "find_association_by_object_association_id": {"type": "array", "items": {"type": "object"}},
    "get_permission_apply_url": {"type": "string", "description": "the apply URL"},
    "import_instance_associations": {
        "type": "object",
        "properties": {
            "err_msg": {
                "type": "array",
                "nullable": True,
                "items": {
                    "type": "object",
                    "properties": {"row": {"type": "integer", "format": "int64"}, "message": {"type": "string"}},
                },
            }
        },
    },
    "find_instance_association_with_biz": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
    "find_instance_associations_web": {
        "type": "object",
        "properties": {
            "association_count": {"type": "integer", "format": "int64"},
            "data": {
                "type": "object",
                "properties": {
                    "association": {
                        "type": "object",
                        "properties": {
                            side: {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
                            for side in ("src", "dst")
                        },
                    },
                    "instance": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "page": {"type": "object", "properties": {"limit": {"type": "integer"}, "start": {"type": "integer"}}},
        },
    },
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
    "search_inst_association_topo": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                **{
                    name: {"type": "string"}
                    for name in ("id", "bk_obj_id", "bk_obj_icon", "bk_obj_name", "bk_inst_name")
                },
                "bk_inst_id": {"type": "integer", "format": "int64"},
                "asso_id": {"type": "integer", "format": "int64"},
                "count": {"type": "integer"},
                "children": {"type": "array", "items": {"type": "object"}},
            },
        },
    },
    "find_instassociation_with_inst": {
        "type": "object",
        "properties": {
            "association": _LINKS,
            **{
                side: {
                    "type": "array",
                    "nullable": True,
                    "items": {"type": "object"},
                    "description": f"{side} instances, each once (null when not asked for or none found)",
                }
                for side in ("src", "dst")
            },
        },
    },
    "resource_watch": {
        "type": "object",
        "properties": {
            "bk_watched": {"type": "boolean"},
            "bk_events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "bk_cursor": {"type": "string"},
                        "bk_resource": {"type": "string"},
                        "bk_event_type": {"type": "string"},
                        "bk_detail": {"type": "object", "nullable": True},
                    },
                },
            },
        },
    },
    "search_inst_asst_object_inst_base_info": {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "info": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "bk_inst_id": {"type": "integer", "format": "int64"},
                        "bk_inst_name": {"type": "string"},
                    },
                },
            },
        },
    },
    "search_inst_association_graph": {
        "type": "object",
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "bk_obj_id": {"type": "string"},
                        "bk_inst_id": {"type": "integer", "format": "int64"},
                        "bk_inst_name": {"type": "string"},
                        "hop": {"type": "integer"},
                    },
                },
            },
            "edges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "format": "int64"},
                        "bk_obj_asst_id": {"type": "string"},
                        "bk_asst_id": {"type": "string"},
                        "from": {"$ref": "#/components/schemas/GraphEnd"},
                        "to": {"$ref": "#/components/schemas/GraphEnd"},
                    },
                },
            },
            "truncated": {"type": "boolean"},
            "hidden": {"type": "integer"},
        },
    },
}
_GRAPH_END: dict[str, Any] = {
    "type": "object",
    "properties": {"bk_obj_id": {"type": "string"}, "bk_inst_id": {"type": "integer", "format": "int64"}},
}
_USER: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"^[^\x00-\x1f\x7f]+$"}
_SUPPLIER: dict[str, Any] = {"type": "string", "pattern": f"^{SUPPLIER_ACCOUNT.pattern}$"}
_MODEL_ID: dict[str, Any] = {"type": "string", "pattern": f"^{MODEL_ID.pattern}$"}
_ESB_CREDENTIALS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "bk_app_code": {"type": "string", "maxLength": 128},
        "bk_app_secret": {"type": "string"},
        "bk_username": _USER,
        "bk_token": {"type": "string"},
        "bk_supplier_account": _SUPPLIER,
    },
}
_INT64 = {"type": "integer", "format": "int64", "maximum": INT64_MAX}


def _field_bounds(converter: Any, field: fields.Field[Any], **kwargs: Any) -> dict[str, Any]:
    """What each of the project's own fields enforces, so that a client generated from the document sends
    only what the service accepts."""
    if isinstance(field, schemas.PositiveInt64):
        return {**_INT64, "minimum": 1}
    if isinstance(field, schemas.IntegerId | schemas.PageNumber):
        return {**_INT64, "minimum": 0}
    if isinstance(field, schemas.IdList):
        return {"items": {**_INT64, "minimum": 0}, "minItems": 1, "maxItems": schemas.MAX_IDS}
    if isinstance(field, schemas.Identifier):
        if field.pattern is not None:
            return {"pattern": f"^{field.pattern.pattern}$"}
        return {"minLength": 1, "maxLength": 256, "pattern": r"\S"}
    if isinstance(field, schemas.StringList):
        return {"items": {"type": "string"}}
    return {}


_RESPONSE_HEADERS: dict[str, Any] = {
    "X-Request-Id": {"description": "the request id (the caller's, or a new one)", "schema": {"type": "string"}},
    "X-Bkapi-Request-Id": {"description": "the same request id, as BlueKing's gateway names it",
                           "schema": {"type": "string"}},
}  # fmt: skip
_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
_ALLOW = {"description": "the methods this path answers", "schema": {"type": "string"}}


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


def _error_body(envelope: str) -> dict[str, Any]:
    """A failure's answer: the envelope's error schema and the request-id headers."""
    return {
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{envelope}Error"}}},
        "headers": _RESPONSE_HEADERS,
    }


def _watch_errors(route: Operation, envelope: str) -> dict[str, Any]:
    """The long poll's own failure: no change streams on the database, or the watch switched off."""
    if not route.long_poll:
        return {}
    error = _error_body(envelope)
    return {"501": {"description": "event watch is unavailable: the database does not support change streams "
                    "(1199998)", **error}}  # fmt: skip


def _errors(envelope: str) -> dict[str, Any]:
    """Every failure status the service answers, each in the envelope and with the request-id headers."""
    error = _error_body(envelope)
    return {
        "400": {"description": "a request the HTTP parser refuses, or a body that cannot be decoded as its "
                "headers say (1199003, 1199006)", **error},
        "401": {"description": "the caller was not identified or authenticated (1199027, 1199046; 1100004: the "
                "gateway's X-Bkapi-JWT did not verify, or none came where one is required)", **error},
        "404": {"description": "no such route (1199003)", **error},
        "405": {"description": "the path does not answer this method (1199003)", **error,
                "headers": {**_RESPONSE_HEADERS, "Allow": _ALLOW}},
        "408": {"description": "the body did not arrive in time (1199003)", **error},
        "413": {"description": "the body is over the limit (1199035)", **error},
        "500": {"description": "an unexpected failure (1199999)", **error},
        "503": {"description": "MongoDB is unreachable or too slow; retry (1199017, 1199998)", **error,
                "headers": {**_RESPONSE_HEADERS, "Retry-After": _RETRY_AFTER}},
    }  # fmt: skip


def _identity_headers() -> list[dict[str, Any]]:
    language = {"type": "string", "enum": ["en", "zh", "zh-cn", "en-us"]}
    return [
        {"name": "X-Bkcmdb-User", "in": "header", "required": True, "schema": _USER},
        {
            "name": "X-Bkcmdb-Supplier-Account",
            "in": "header",
            "required": False,
            "description": 'The supplier account (tenant); absent or empty: the configured default ("0")',
            "schema": {"type": "string", "pattern": f"^({SUPPLIER_ACCOUNT.pattern})?$"},
        },
        {"name": LANGUAGE_HEADERS[0], "in": "header", "required": False, "schema": language},
        {
            "name": "X-Bkapi-JWT",
            "in": "header",
            "required": False,
            "description": "BlueKing API gateway's token (RS512); where a gateway key is configured it names the "
            "caller, and the answer is spelled code/message (README: Deploying inside BlueKing)",
            "schema": {"type": "string"},
        },
    ]


def _links(spelling: str, esb_name: str) -> dict[str, Any]:
    """What a created link's id leads to: reading it back and deleting it (clients and stateful fuzzers
    follow these from a create's answer)."""
    if esb_name != "add_instance_association":
        return {}
    created = "$response.body#/data/id"
    if spelling == "native":
        return {
            "FindCreated": {"operationId": "native_find_instance_association",
                            "requestBody": {"bk_obj_id": "host", "condition": {"id": created}}},
            "DeleteCreated": {"operationId": "native_delete_instance_association",
                              "parameters": {"bk_obj_id": "host", "id": created}},
        }  # fmt: skip
    return {
        "FindCreated": {"operationId": "esb_find_instance_association",
                        "requestBody": {"bk_obj_id": "host", "condition": {"id": created}}},
        "DeleteCreated": {"operationId": "esb_delete_instance_association",
                          "requestBody": {"bk_obj_id": "host", "id": created}},
    }  # fmt: skip


def _native_operation(route: Operation, schema_name: str) -> dict[str, Any]:
    path_names = [part[1:-1] for part in route.native_path.split("/") if part.startswith("{")]
    path_schemas = {"bk_obj_id": _MODEL_ID, "id": {**_INT64, "minimum": 0}, "bk_inst_id": _INT64,
                    "start": {**_INT64, "minimum": 0}, "limit": {**_INT64, "minimum": 0},
                    "bk_biz_id": {**_INT64, "minimum": 1},
                    "bk_resource": {"type": "string", "enum": ["inst_asst"]}}  # fmt: skip
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_schemas[name]} for name in path_names
    ]
    parameters += _identity_headers()
    if route.idempotent:
        parameters += _write_option_headers()
    operation: dict[str, Any] = {
        "operationId": f"native_{route.esb_name}",
        "summary": route.summary,
        "description": _description(route, "native"),
        "tags": ["native"],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "the envelope: result true with data, or result false with a bk-cmdb code",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/Native_{route.esb_name}"}}},
                "headers": _RESPONSE_HEADERS,
                "links": _links("native", route.esb_name),
            },
            **_errors("Native"),
            **_watch_errors(route, "Native"),
        },
    }
    schema_fields = {field.data_key or name for name, field in REQUEST_SCHEMAS[route.esb_name]().fields.items()}
    # A body is asked for unless the path carries everything (delete one; the topology, whose body is ignored).
    if not schema_fields <= set(path_names):
        body: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
        if route.example is not None:
            body["example"] = {key: value for key, value in route.example.items() if key not in path_names}
        operation["requestBody"] = {"required": True, "content": {"application/json": body}}
    return operation


# Codes any operation may answer, whatever it does.
_EVERY_OPERATION = (1199000, 1199006, 1199010, 1199027, 1199017, 1199998, 1199999, 9900403)


def _description(route: Operation, spelling: str) -> str:
    """What the operation does, how it is reached in the other spelling, and the codes it may answer."""
    meanings = error_codes()
    if not route.esb:
        other = "bk-cmdb serves it to its own frontend only: no ESB spelling."
    elif spelling == "native":
        other = f"The ESB spelling: `POST {route.esb_path}`, the same body plus the ESB credentials."
    else:
        other = f"The native spelling: `{route.method} {route.native_path}`."
    codes = [*route.codes, *(code for code in _EVERY_OPERATION if code not in route.codes)]
    if route.writes:
        codes.append(1199035)
    rows = [f"| {code} | {'; '.join(meanings.get(code, []))} |" for code in dict.fromkeys(codes)]
    extra = ""
    if route.idempotent:
        extra = (
            "\n\nTakes an `Idempotency-Key` (a retry with the same key and body gets the first answer, marked "
            '`Idempotent-Replayed: true`) and a dry run (`"dry_run": true` or `X-Dry-Run: 1`: every check, '
            "nothing written)."
        )
    return (
        f"{route.summary}.{extra}\n\n{other} Every answer is HTTP 200 with `result`, `bk_error_code` and "
        "`bk_error_msg` unless said otherwise below.\n\n| code | meaning |\n|---|---|\n" + "\n".join(rows)
    )


def _write_option_headers() -> list[dict[str, Any]]:
    key = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": r"^[\x20-\x7e]+$"}
    return [
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": key},
        {"name": "X-Dry-Run", "in": "header", "required": False,
         "schema": {"type": "string", "enum": sorted(word for word in DRY_RUN_WORDS if word)}},
    ]  # fmt: skip


def _esb_operation(route: Operation, schema_name: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "X-Bkapi-Authorization", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    if route.idempotent:
        parameters += _write_option_headers()
    body: dict[str, Any] = {
        "schema": {
            "allOf": [{"$ref": f"#/components/schemas/{schema_name}"}, {"$ref": "#/components/schemas/EsbCredentials"}]
        }
    }
    if route.example is not None:
        body["example"] = {"bk_app_code": "my-app", "bk_app_secret": "...", "bk_username": "admin", **route.example}
    return {
        "operationId": f"esb_{route.esb_name}",
        "summary": route.summary,
        "description": _description(route, "esb"),
        "tags": ["esb"],
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": {
            "200": {
                "description": "the ESB envelope (the seed's shape)",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/Esb_{route.esb_name}"}}},
                "headers": _RESPONSE_HEADERS,
                "links": _links("esb", route.esb_name),
            },
            **_errors("Esb"),
            **_watch_errors(route, "Esb"),
        },
    }


def build_spec() -> dict[str, Any]:
    """The whole document: both spellings of every operation, the envelopes, and the operational routes."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title=TITLE, version=VERSION, openapi_version="3.0.3", plugins=[plugin])
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_field_bounds)  # type: ignore[no-untyped-call]
    for field_class, openapi_type, openapi_format in (
        (schemas.PositiveInt64, "integer", "int64"),
        (schemas.IntegerId, "integer", "int64"),
        (schemas.SignedIntegerId, "integer", "int64"),
        (schemas.PageNumber, "integer", "int64"),
        (schemas.StrictBoolean, "boolean", None),
        (schemas.Identifier, "string", None),
        (schemas.IdList, "array", None),
        (schemas.RawList, "array", None),
        (schemas.StringList, "array", None),
    ):
        plugin.map_to_openapi_type(field_class, openapi_type, openapi_format)  # type: ignore[no-untyped-call]
    spec.components.schema("Link", _LINK)
    spec.components.schema("GraphEnd", _GRAPH_END)
    spec.components.schema("EsbCredentials", _ESB_CREDENTIALS)
    spec.components.schema("NativeError", _native_envelope({"nullable": True}))
    spec.components.schema("EsbError", _esb_envelope({"nullable": True}))
    registered: set[str] = set()
    for route in OPERATIONS:
        schema_class = REQUEST_SCHEMAS[route.esb_name]
        schema_name = schema_class.__name__.removesuffix("Schema")
        if schema_name not in registered:
            spec.components.schema(schema_name, schema=schema_class)
            registered.add(schema_name)
        spec.components.schema(f"Native_{route.esb_name}", _native_envelope(RESPONSE_DATA[route.esb_name]))
        spec.path(path=route.native_path, operations={route.method.lower(): _native_operation(route, schema_name)})
        if route.esb:
            spec.components.schema(f"Esb_{route.esb_name}", _esb_envelope(RESPONSE_DATA[route.esb_name]))
            path = f"{ESB_PREFIXES[0]}{route.esb_name}/"
            spec.path(path=path, operations={"post": _esb_operation(route, schema_name)})
    for path, description in (
        ("/healthz", "the process is alive"),
        ("/readyz", "MongoDB answers a ping"),
        ("/metrics", "Prometheus text format"),
        ("/openapi.json", "this document"),
        ("/graph", "the page that draws the graph of many hops around an instance (HTML)"),
    ):
        responses: dict[str, Any] = {"200": {"description": description}}
        if path == "/readyz":
            responses["503"] = {"description": "not ready: MongoDB does not answer, or the service is shutting down"}
        spec.path(
            path=path,
            operations={
                "get": {
                    "operationId": path.strip("/").replace(".", "_"),
                    "tags": ["operations"],
                    "responses": responses,
                }
            },
        )
    document: dict[str, Any] = spec.to_dict()
    described = {f"{cls.__name__.removesuffix('Schema')}": cls.__doc__ for cls in REQUEST_SCHEMAS.values()}
    for name, component in document["components"]["schemas"].items():
        if not component.get("description"):
            component["description"] = _schema_description(name, described.get(name))
    return document


def _schema_description(name: str, docstring: str | None) -> str:
    """A component's description: its request schema's docstring, or what the envelope names say."""
    if docstring:
        return " ".join(docstring.split())
    for prefix, envelope in (("Native_", "native"), ("Esb_", "ESB")):
        if name.startswith(prefix):
            return f"The {envelope} envelope of {name.removeprefix(prefix)}'s answer, with its `data`"
    return {"Link": "An instance association as stored (bk-cmdb's InstAsst)",
            "GraphEnd": "One instance of a graph: its model, id, name and hop from the start",
            "EsbCredentials": "What a caller through BlueKing's ESB adds to the body",
            "NativeError": "The native envelope of a refused request (data null)",
            "EsbError": "The ESB envelope of a refused request (data null)"}.get(name, name)  # fmt: skip
