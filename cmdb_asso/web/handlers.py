"""Thin handlers: validate the body, call one service method, return the data for the envelope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from cmdb_asso.errors import (
    ApplyUrlNotConfigured,
    BodyInvalid,
    BodyNotDecoded,
    BodyNotDecodedNamed,
    BodyUndecodable,
    CmdbError,
    ParamEmpty,
)
from cmdb_asso.inputs import GoType, decodes_as, int64_or_none
from cmdb_asso.keys import (
    APP_AUTHENTICATOR,
    DRAINING,
    EMBEDDED_RESTARTING,
    GATEWAY,
    IAM,
    IDEMPOTENCY,
    IMPORTER,
    METRICS,
    OPENAPI,
    OPERATION_WRITES,
    QUERIES,
    READINESS,
    REQUEST_ID,
    SERVICE,
    SETTINGS,
    WATCH,
)
from cmdb_asso.operations import BY_NAME
from cmdb_asso.service.associations import BatchRequest, CreateRequest
from cmdb_asso.service.context import Caller
from cmdb_asso.service.queries import (
    PAGE_LIMIT,
    BaseInfoRequest,
    Page,
    parse_contract_sort,
    parse_sort,
)
from cmdb_asso.service.watch import RESOURCE
from cmdb_asso.web.envelope import request_language, success
from cmdb_asso.web.graph_page import GRAPH_PAGE
from cmdb_asso.web.identity import esb_caller, gateway_caller, native_caller
from cmdb_asso.web.schemas import (
    AssociationTabSchema,
    BusinessHostLinksSchema,
    BusinessPathSchema,
    CreateAssociationSchema,
    CreateManySchema,
    DeleteManySchema,
    DeleteOneSchema,
    FindRelatedSchema,
    FindSchema,
    GraphSchema,
    PageSchema,
    RelatedConditionSchema,
    RelatedPageSchema,
    SearchSchema,
    TopoSchema,
    check_batch_shape,
    load_base_info,
    load_body,
    load_definitions_by_ids,
    load_detail,
    load_detail_request,
    load_import_request,
    load_model_associations,
    load_watch_request,
)


@dataclass(frozen=True, slots=True)
class Call:
    """One operation call: who calls, and its parameters (body fields and path parameters together)."""

    caller: Caller
    params: Any


OperationHandler = Callable[[web.Request, Call], Awaitable[Any]]

_CREATE = CreateAssociationSchema()
_CREATE_MANY = CreateManySchema()
_DELETE_ONE = DeleteOneSchema()
_DELETE_MANY = DeleteManySchema()
_FIND = FindSchema()
_FIND_RELATED = FindRelatedSchema()
_RELATED_CONDITION = RelatedConditionSchema()
_RELATED_PAGE = RelatedPageSchema()
_SEARCH = SearchSchema()
_PAGE = PageSchema()
_GRAPH = GraphSchema()
_TOPO = TopoSchema()
_ASSOCIATION_TAB = AssociationTabSchema()
_BUSINESS_PATH = BusinessPathSchema()
_BUSINESS_HOST_LINKS = BusinessHostLinksSchema()


# How deeply a body may nest. No operation needs more than a few levels; the cap keeps every accepted body
# within what orjson can write again (255 levels, for idempotency fingerprints) and what BSON can encode.
MAX_BODY_DEPTH = 64


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` containers (iteratively: no recursion limit to hit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


async def _read_body(request: web.Request, invalid: Callable[[], CmdbError] | None = None) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is empty. Anything else (not JSON, not an object, bad UTF-8,
    nested deeper than any operation needs) answers `invalid()`, by default 1199006 'body'. With `invalid` given
    the body decodes as bk-cmdb decodes it (CONTRACT-ui Correction g): only a zero-length body is empty, and a
    top-level null is too."""
    raw = await request.read()
    if not (raw if invalid else raw.strip()):
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise (invalid or _invalid_body)() from None
    if body is None and invalid is not None:
        return None
    if not isinstance(body, dict) or _depth_exceeds(body, MAX_BODY_DEPTH):
        raise (invalid or _invalid_body)()
    return body


def _invalid_body() -> CmdbError:
    return BodyInvalid("body")


# What a body that does not decode answers, by the operation's `body_error` (cmdb_asso.operations).
BODY_ERRORS: dict[str, Callable[[], CmdbError] | None] = {
    "body": None,
    "raw": BodyNotDecoded,
    "undecodable": BodyUndecodable,
    "named": BodyNotDecodedNamed,
}


async def _answer(
    request: web.Request, operation: OperationHandler, call: Call, name: str, idempotent: bool
) -> web.Response:
    """Run the operation, at most once per `Idempotency-Key` where the operation takes one."""
    key = request.headers.get("Idempotency-Key")
    if not idempotent or key is None or _dry_run(request, call.params):
        return success(request, await operation(request, call))
    data, replayed = await request.app[IDEMPOTENCY].run(
        call.caller, key.strip(), name, call.params, lambda: operation(request, call)
    )
    response = success(request, data)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _check_go_body(body: Any, go_body: dict[str, GoType] | None, invalid: Callable[[], CmdbError] | None) -> None:
    """A body bk-cmdb's decoder would refuse (a member of another JSON type) answers the operation's decode error."""
    if go_body is not None and body is not None and not decodes_as(body, go_body):
        raise (invalid or _invalid_body)()


def native_view(
    operation: OperationHandler,
    *,
    writes: bool,
    name: str = "",
    idempotent: bool = False,
    reads_body: bool = True,
    body_error: str = "body",
    go_body: dict[str, GoType] | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the native spelling: identity from headers, path parameters over the body (which
    is not read at all unless `reads_body`; one that does not decode answers as `body_error` says)."""
    invalid = BODY_ERRORS[body_error]  # an unknown name fails at start-up, not in a request

    async def view(request: web.Request) -> web.Response:
        request[OPERATION_WRITES] = writes
        settings = request.app[SETTINGS]
        caller = gateway_caller(request, request[REQUEST_ID], settings.supplier_account, request.app[GATEWAY])
        caller = caller or native_caller(request, request[REQUEST_ID], settings.supplier_account)
        body = await _read_body(request, invalid) if reads_body else {}
        _check_go_body(body, go_body, invalid)
        if request.match_info:
            body = {**(body or {}), **request.match_info}
        return await _answer(request, operation, Call(caller, body), name, idempotent)

    return view


def esb_view(
    operation: OperationHandler,
    *,
    writes: bool,
    name: str = "",
    idempotent: bool = False,
    body_error: str = "body",
    go_body: dict[str, GoType] | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for the ESB spelling: everything, credentials included, in the JSON body."""

    invalid = BODY_ERRORS[body_error]  # an unknown name fails at start-up, not in a request

    async def view(request: web.Request) -> web.Response:
        request[OPERATION_WRITES] = writes
        settings = request.app[SETTINGS]
        authenticator = request.app[APP_AUTHENTICATOR]
        # A gateway token, where the gateway is configured, names the caller; its app was authenticated there.
        gateway = gateway_caller(request, request[REQUEST_ID], settings.supplier_account, request.app[GATEWAY])
        try:
            body = await _read_body(request, invalid)
        except CmdbError:
            # The application is authenticated first (its credentials may come in a header), then the body.
            if gateway is None:
                await esb_caller(request, {}, request[REQUEST_ID], settings.supplier_account, authenticator)
            raise
        caller = gateway or await esb_caller(
            request, body or {}, request[REQUEST_ID], settings.supplier_account, authenticator
        )
        _check_go_body(body, go_body, invalid)
        return await _answer(request, operation, Call(caller, body), name, idempotent)

    return view


def _page(raw: Any, *, limit_required: bool = False) -> Page:
    """The body's page; no limit is the largest page, or, where a limit is required (search), 0 for the service
    to refuse."""
    if raw is None:
        return Page(limit=0) if limit_required else Page()
    page = load_body(_PAGE, raw, prefix="page.")
    sort = parse_sort(page["sort"]) if page["sort"] else Page().sort
    limit = page["limit"] if limit_required else page["limit"] or PAGE_LIMIT
    return Page(start=page["start"], limit=limit, sort=sort)


DRY_RUN_WORDS = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


def _dry_run(request: web.Request, params: Any) -> bool:
    """A dry run is asked by `"dry_run": true` in the body or the header `X-Dry-Run: 1` (or true).

    The body's flag must be a JSON boolean and the header one of the listed words: a flag that could be
    misread (`"dry_run": "true"`) is refused with 1199006 rather than taken as "write it".
    """
    flag = params.get("dry_run") if isinstance(params, dict) else None
    if flag is not None and not isinstance(flag, bool):
        raise BodyInvalid("dry_run")
    header = DRY_RUN_WORDS.get(request.headers.get("X-Dry-Run", "").strip().lower())
    if header is None:
        raise BodyInvalid("X-Dry-Run")
    return flag is True or header


async def create_instance_association(request: web.Request, call: Call) -> dict[str, Any]:
    """Create one instance association (the seed operation); answers its id (a dry run answers none)."""
    body = load_body(_CREATE, call.params)
    dry_run = _dry_run(request, call.params)
    new_id = await request.app[SERVICE].create_one(
        call.caller, CreateRequest(body["bk_obj_asst_id"], body["bk_inst_id"], body["bk_asst_inst_id"]), dry_run=dry_run
    )
    return {"id": new_id, "dry_run": True} if dry_run else {"id": new_id}


async def create_many_instance_associations(request: web.Request, call: Call) -> dict[str, Any]:
    """Create a batch of links of one definition; answers per index an id or an error message."""
    body = load_body(_CREATE_MANY, call.params)
    check_batch_shape(body, request.app[SETTINGS].limits.create_many_max)
    details = {index: load_detail(detail) for index, detail in enumerate(body["details"])}
    batch = BatchRequest(body["bk_obj_id"], body["bk_asst_obj_id"], body["bk_obj_asst_id"], details, body["atomic"])
    dry_run = _dry_run(request, call.params)
    outcome = await request.app[SERVICE].create_many(call.caller, batch, dry_run=dry_run)
    language = request_language(request)
    answer: dict[str, Any] = {
        "success_created": {str(index): outcome.created[index] for index in sorted(outcome.created)},
        "error_msg": {str(index): outcome.failed[index].message(language) for index in sorted(outcome.failed)},
        # Ours, beside bk-cmdb's fields: the code of each refused detail, for programs.
        "error_code": {str(index): outcome.failed[index].code for index in sorted(outcome.failed)},
    }
    if dry_run:
        answer["dry_run"] = True
    return answer


async def delete_instance_association(request: web.Request, call: Call) -> None:
    """Delete one link by its model and id; a missing id is not an error."""
    body = load_body(_DELETE_ONE, call.params)
    await request.app[SERVICE].delete(call.caller, body["bk_obj_id"], [body["id"]])


async def delete_instance_associations(request: web.Request, call: Call) -> int:
    """Delete up to 500 links of a model by id; answers how many were deleted."""
    body = load_body(_DELETE_MANY, call.params)
    return await request.app[SERVICE].delete(call.caller, body["bk_obj_id"], body["id"])


async def find_instance_associations(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """Links of a model matching an allow-listed condition."""
    body = load_body(_FIND, call.params)
    return await request.app[QUERIES].find(call.caller, body["bk_obj_id"], body["condition"])


async def find_related_instance_associations(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """Links where one instance is the source or the target, one page of them (CONTRACT-ui Correction c)."""
    body = load_body(_FIND_RELATED, call.params)
    condition = load_body(_RELATED_CONDITION, body["condition"] or {}, prefix="condition.")
    page = load_body(_RELATED_PAGE, body["page"] or {}, prefix="page.")
    return await request.app[QUERIES].find_related(
        call.caller, condition["bk_obj_id"] or "", condition["bk_inst_id"] or 0, body["fields_"],
        start=page["start"] or 0, limit=page["limit"] or 0,
    )  # fmt: skip


async def search_instance_associations(request: web.Request, call: Call) -> dict[str, Any]:
    """Links of a model matching query-builder conditions, one page of them."""
    body = load_body(_SEARCH, call.params)
    info = await request.app[QUERIES].search(
        call.caller, body["bk_obj_id"], body["conditions"], body["fields_"], _page(body["page"], limit_required=True)
    )
    return {"info": info}


async def count_instance_associations(request: web.Request, call: Call) -> dict[str, int]:
    """How many links of a model match query-builder conditions."""
    body = load_body(_SEARCH, call.params)
    return {"count": await request.app[QUERIES].count(call.caller, body["bk_obj_id"], body["conditions"])}


async def instance_topology(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """The instances one instance points to, grouped by target model."""
    body = load_body(_TOPO, call.params)
    return await request.app[QUERIES].topo(call.caller, body["bk_obj_id"], body["bk_inst_id"])


async def instance_base_info(request: web.Request, call: Call) -> dict[str, Any]:
    """A page of the links between one instance and another model, as the other side's ids and names."""
    body = load_base_info(call.params)
    checked = BaseInfoRequest(
        body["obj_id"], body["inst_id"], body["other_obj_id"], body["is_target"], body["start"], body["limit"],
        parse_contract_sort(body["sort"]),
    )  # fmt: skip
    return await request.app[QUERIES].base_info(call.caller, checked)


async def full_instance_topology(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """An instance, the instances that point to it and those it points to (CONTRACT-ui 18); the body is not read."""
    inst_id = int64_or_none(call.params["bk_inst_id"], from_text=True)
    if inst_id is None:
        raise ParamEmpty("inst_id")  # bk-cmdb's name for it
    return await request.app[QUERIES].full_topo(call.caller, str(call.params["bk_obj_id"]), inst_id)


async def association_tab(request: web.Request, call: Call) -> dict[str, Any]:
    """A page of one instance's links, both directions, with the instances at their ends (CONTRACT-ui 19)."""
    path = load_body(_ASSOCIATION_TAB, call.params)
    return await request.app[QUERIES].association_tab(
        call.caller, path["bk_obj_id"], path["id"], start=path["start"], limit=path["limit"]
    )


async def business_host_links(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """Host links matching a Find condition, gated by access to a business (CONTRACT-ui 20): the business is
    checked before the body is read."""
    path = load_body(_BUSINESS_PATH, call.params)
    queries = request.app[QUERIES]
    await queries.authorize_business(call.caller, path["bk_biz_id"])
    raw = await _read_body(request, BodyNotDecoded)
    _check_go_body(raw, BY_NAME["business_host_links"].go_body, BodyNotDecoded)
    body = load_body(_BUSINESS_HOST_LINKS, raw or {})
    return await queries.business_host_links(call.caller, body["bk_obj_id"] or "", body["condition"])


async def model_associations(request: web.Request, call: Call) -> dict[str, Any]:
    """Association definitions matching a condition, with their count (CONTRACT-ui 21)."""
    condition = load_model_associations(call.params or {})  # a zero-length body is {}
    return await request.app[QUERIES].model_associations(call.caller, condition)


async def permission_apply_url(request: web.Request, call: Call) -> str:
    """Where the caller applies for a denial's permission in BlueKing IAM (bk-cmdb's `auth/skip_url`)."""
    permission = {key: value for key, value in (call.params or {}).items() if key in ("system_id", "actions")}
    if IAM not in request.app:
        raise ApplyUrlNotConfigured()  # no IAM decides here: there is nowhere to apply
    apply_base = request.app[SETTINGS].auth.iam.apply_url
    return await request.app[IAM].apply_url(apply_base, call.caller.user, permission, call.caller.request_id)


async def import_associations(request: web.Request, call: Call) -> dict[str, Any]:
    """Import an Excel sheet's association rows (CONTRACT-ui 23.2); answers each failed row with its message, in row
    order (null when none failed)."""
    rows = load_import_request(call.params, request.app[SETTINGS].limits.import_rows_max)
    language = request_language(request)
    failed = await request.app[IMPORTER].import_rows(call.caller, rows, language)
    return {
        "err_msg": [{"row": number, "message": error.message(language)} for number, error in failed.items()] or None
    }


async def definitions_by_ids(request: web.Request, call: Call) -> list[dict[str, Any]]:
    """The definitions with these ids in which a model is the source or the target (CONTRACT-ui 22)."""
    obj_asst_ids = load_definitions_by_ids(call.params)
    return await request.app[QUERIES].definitions_by_ids(call.caller, str(call.params["bk_obj_id"]), obj_asst_ids)


async def links_with_instance_details(request: web.Request, call: Call) -> dict[str, Any]:
    """A page of a model's links chosen by a query-builder filter, with their instances when asked."""
    return await request.app[QUERIES].links_with_instances(call.caller, load_detail_request(call.params))


# A watch answers its errors after a pause, as bk-cmdb does: a client looping on a bad request is slowed.
WATCH_ERROR_PAUSE_SECONDS = 0.5


async def watch_link_events(request: web.Request, call: Call) -> dict[str, Any]:
    """Link events after a cursor or a start time, or the cursor to follow from now."""
    try:
        resource, watch = load_watch_request(call.params)
        if resource != RESOURCE:
            raise ParamEmpty("bk_resource")
        return await request.app[WATCH].watch(call.caller, watch)
    except CmdbError:
        await asyncio.sleep(WATCH_ERROR_PAUSE_SECONDS)
        raise


async def graph_of_instance_associations(request: web.Request, call: Call) -> dict[str, Any]:
    """The instances some hops around one instance, and the links between them."""
    body = load_body(_GRAPH, call.params)
    graph = await request.app[QUERIES].graph(
        call.caller,
        (body["bk_obj_id"], body["bk_inst_id"]),
        direction=body["direction"],
        depth=body["depth"],
        obj_asst_ids=body["bk_obj_asst_ids"],
        max_nodes=body["max_nodes"],
    )
    nodes = sorted(graph.hop, key=lambda node: (graph.hop[node], node))
    return {
        "nodes": [
            {"bk_obj_id": obj_id, "bk_inst_id": inst_id, "bk_inst_name": graph.names.get((obj_id, inst_id), ""),
             "hop": graph.hop[(obj_id, inst_id)]}
            for obj_id, inst_id in nodes
        ],
        "edges": [
            {"id": link.id, "bk_obj_asst_id": link.obj_asst_id, "bk_asst_id": link.asst_id,
             "from": {"bk_obj_id": link.obj_id, "bk_inst_id": link.inst_id},
             "to": {"bk_obj_id": link.asst_obj_id, "bk_inst_id": link.asst_inst_id}}
            for link in graph.edges.values()
        ],
        "truncated": graph.truncated,
        "hidden": graph.hidden,
    }  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of every route."""
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cmdb-asso API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><p style="font-family: sans-serif; margin: 8px 16px"><a href="/graph">Draw the graph around an instance</a></p>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


async def docs(request: web.Request) -> web.Response:
    """Swagger UI over /openapi.json, from the swagger-ui-bundle package's files (no CDN)."""
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def graph_page(request: web.Request) -> web.Response:
    """The page that draws the graph of many hops (vis-network from the pyvis package)."""
    return web.Response(text=GRAPH_PAGE, content_type="text/html")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


async def readyz(request: web.Request) -> web.Response:
    """MongoDB answers a ping: 200 when ready, 503 with the reason otherwise (and from SIGTERM on)."""
    if request.app[DRAINING].is_set():
        return web.json_response({"status": "not ready", "reason": "shutting down"}, status=503)
    if request.app[EMBEDDED_RESTARTING].is_set():
        return web.json_response({"status": "not ready", "reason": "embedded mongodb restarting"}, status=503)
    problem = await request.app[READINESS].problem()
    watch = request.app[WATCH].available if WATCH in request.app else None
    described: dict[str, Any] = {"watch": {None: "unknown", True: "available", False: "unavailable"}[watch]}
    feed = request.app[WATCH].feed if WATCH in request.app else None
    if watch and feed is not None and feed.behind_seconds > 0:
        # The link events lag the tables (this process feeds them): said, but no reason to stop serving.
        described = {"watch": "behind", "watch_behind_seconds": round(feed.behind_seconds, 1)}
    if IAM in request.app:
        # Where IAM decides, nothing is allowed while it is away: say so, and ask it again while it is.
        iam = request.app[IAM]
        described["iam"] = await iam.probe() if iam.state in ("unavailable", "refused") else iam.state
        if problem is None and described["iam"] in ("unavailable", "refused"):
            problem = f"iam: {described['iam']}"
    if problem is not None:
        return web.json_response({"status": "not ready", "reason": problem, **described}, status=503)
    return web.json_response({"status": "ready", **described})
