"""Every operation of the API, once: its name, native method and path, ESB name, and what it does to data.

The routes, the client library, the API document and the tests all read this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cmdb_asso.inputs import GoType

ESB_PATH = "/api/c/compapi/v2/cc/{esb_name}/"
# The attribute that marks a long-poll operation's aiohttp handlers (the deadline middleware reads it).
LONG_POLL_MARK = "cmdb_asso_long_poll"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation, reachable by its native method and path and by its ESB name."""

    name: str
    method: str
    native_path: str
    esb_name: str
    writes: bool
    # Takes an `Idempotency-Key` (and a dry run).
    idempotent: bool = False
    # Holds the request open while it waits for something new (the watch's long poll).
    long_poll: bool = False
    # Reachable by its ESB name too (bk-cmdb's frontend-only routes are not: they are served natively only).
    esb: bool = True
    # Whether the body is read at all (bk-cmdb ignores the body of some routes: any body, even malformed, is fine).
    reads_body: bool = True
    # What a body that does not decode answers (CONTRACT-ui Correction g): "body" 1199006 'body' (create one, and
    # our own operations), "raw" 1199006 with 1199000's text, "undecodable" 1199000, "named" 1199006 naming
    # 1199000's text. Where it is not "body", a zero-length body and a top-level null are `{}`.
    body_error: str = "body"
    # The Go struct bk-cmdb decodes the body into (CONTRACT-ui Correction g), as `GoType`s by member: a member of
    # another JSON type anywhere fails the decode and answers as `body_error` says. None: not checked so.
    go_body: dict[str, GoType] | None = None
    # For the API document: what it does, a body that works on the demo data, and the business codes it may
    # answer beyond those every operation may (invalid input, permission, the store unavailable).
    summary: str = ""
    example: dict[str, Any] | None = None
    codes: tuple[int, ...] = field(default=())

    @property
    def path_parameters(self) -> tuple[str, ...]:
        """The names in the native path's `{...}` segments."""
        return tuple(re.findall(r"{(\w+)}", self.native_path))

    @property
    def esb_path(self) -> str:
        """The canonical ESB path."""
        return ESB_PATH.format(esb_name=self.esb_name)


_PAGE: dict[str, GoType] = {"sort": "string", "limit": "int", "start": "int", "enable_count": "bool"}
# bk-cmdb's InstAsst struct, a create-many detail (common/metadata/association.go).
_INST_ASST: dict[str, GoType] = {
    "id": "int", "bk_inst_id": "int", "bk_obj_id": "string", "bk_asst_inst_id": "int", "bk_asst_obj_id": "string",
    "bk_supplier_account": "string", "bk_obj_asst_id": "string", "bk_asst_id": "string", "bk_biz_id": "int",
}  # fmt: skip
_SEARCH: dict[str, GoType] = {"bk_obj_id": "string", "conditions": "any", "time_condition": "object",
                              "fields": ["string"], "page": _PAGE}  # fmt: skip

_NODE: dict[str, GoType] = {"type": "string", "type_name": "string", "id": "string", "name": "string"}
# bk-cmdb's IamPermission: what a 9900403 answer carries, and what its UI posts to auth/skip_url.
_PERMISSION: dict[str, GoType] = {"system_id": "string", "system_name": "string", "actions": [{
    "id": "string", "name": "string", "related_resource_types": [{
        "system_id": "string", "system_name": "string", "type": "string", "type_name": "string",
        "instances": [[_NODE]]}]}]}  # fmt: skip

_RULE = {"condition": "AND", "rules": [{"field": "bk_asst_id", "operator": "equal", "value": "belong"}]}

OPERATIONS: tuple[Operation, ...] = (
    Operation("create", "POST", "/api/v3/create/instassociation", "add_instance_association", True, True,
              summary="Link two instances by an association definition; answers the new link's id",
              example={"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 11, "bk_asst_inst_id": 21},
              codes=(1101046, 1101062, 1101073, 1101074, 1101052, 1101061, 1199014, 1199011)),
    Operation("create_many", "POST", "/api/v3/createmany/instassociation", "batch_create_instance_association",
              True, True,
              summary="Link many pairs of one definition; answers per detail the new id or why it was refused",
              example={"bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
                       "details": [{"bk_inst_id": 12, "bk_asst_inst_id": 22},
                                   {"bk_inst_id": 12, "bk_asst_inst_id": 23}]},
              codes=(1101046, 1101062, 1101038, 1101073, 1101074, 1101052, 1101061, 1199038, 1199035),
              body_error="undecodable", go_body={"bk_obj_id": "string", "bk_asst_obj_id": "string",
                                                 "bk_obj_asst_id": "string", "details": [_INST_ASST]}),
    Operation("delete", "DELETE", "/api/v3/delete/instassociation/{bk_obj_id}/{id}", "delete_instance_association",
              True, summary="Delete one link by its model and id (a missing id is no error)",
              example={"bk_obj_id": "bk_switch", "id": 999999}),
    Operation("delete_many", "DELETE", "/api/v3/delete/instassociation/batch", "delete_related_inst_asso", True,
              summary="Delete links by their ids in one model's table; answers how many were removed",
              example={"bk_obj_id": "bk_switch", "id": [999998, 999999]}, codes=(1199038, 1199035), body_error="raw",
              go_body={"bk_obj_id": "string", "id": ["int"]}),
    Operation("find", "POST", "/api/v3/find/instassociation", "find_instance_association", False,
              summary="The links of a model matching a MongoDB-style condition (a checked subset of operators)",
              example={"bk_obj_id": "bk_switch", "condition": {"bk_obj_asst_id": "bk_switch_belong_bk_host"}},
              codes=(1199059,), body_error="raw", go_body={"condition": "object", "bk_obj_id": "string"}),
    Operation("find_related", "POST", "/api/v3/find/instassociation/related", "search_related_inst_asso", False,
              summary="The links where one instance is the source or the target, a page at a time",
              example={"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, "fields": ["id", "bk_asst_inst_id"],
                       "page": {"start": 0, "limit": 50}}, codes=(1199059,), body_error="named",
              go_body={"fields": ["string"], "page": _PAGE, "condition": {"bk_obj_id": "string", "bk_inst_id": "int"}}),
    Operation("search", "POST", "/api/v3/search/instance_associations/object/{bk_obj_id}",
              "search_instance_associations", False,
              summary="A page of a model's links matching query-builder rules, sorted as asked",
              example={"bk_obj_id": "bk_switch", "conditions": _RULE, "page": {"start": 0, "limit": 10, "sort": "id"}},
              codes=(1199059,), body_error="undecodable", go_body=_SEARCH),
    Operation("count", "POST", "/api/v3/count/instance_associations/object/{bk_obj_id}",
              "count_instance_associations", False, summary="How many of a model's links match query-builder rules",
              example={"bk_obj_id": "bk_switch", "conditions": _RULE}, body_error="undecodable", go_body=_SEARCH),
    Operation("topo", "POST", "/api/v3/find/insttopo/object/{bk_obj_id}/inst/{bk_inst_id}",
              "search_inst_association_topo", False,
              summary="The instances one instance is linked to, grouped by model and direction (bk-cmdb's topology)",
              example={"bk_obj_id": "bk_switch", "bk_inst_id": 11}, codes=(1199059,)),
    Operation("links_with_instances", "POST", "/api/v3/find/instassociation/object/{bk_obj_id}/inst/detail",
              "find_instassociation_with_inst", False,
              summary="A page of links with the instances at either end (what the Association tab lists)",
              example={"bk_obj_id": "bk_switch", "condition": {"asst_filter": _RULE, "src_detail": True,
                       "dst_detail": True}, "page": {"start": 0, "limit": 20}}, codes=(1199059,),
              body_error="undecodable"),
    Operation("base_info", "POST", "/api/v3/findmany/inst/association/association_object/inst_base_info",
              "search_inst_asst_object_inst_base_info", False,
              summary="The id and name of the instances of one model linked to an instance",
              example={"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "association_obj_id": "host"},
                       "page": {"start": 0, "limit": 20}}, codes=(1199059,), body_error="undecodable",
              go_body={"condition": {"bk_obj_id": "string", "bk_inst_id": "int", "is_target_object": "bool",
                                     "association_obj_id": "string"}, "page": _PAGE}),
    Operation("graph", "POST", "/api/v3/find/instassociation/graph", "search_inst_association_graph", False,
              summary="The instances and links within a few hops of an instance, for drawing",
              example={"bk_obj_id": "bk_switch", "bk_inst_id": 11, "direction": "both", "depth": 2},
              codes=(1199035, 1199059)),
    Operation("watch", "POST", "/api/v3/event/watch/resource/{bk_resource}", "resource_watch", False,
              long_poll=True,
              summary="Link create and delete events after a cursor or a time, waiting a while for new ones",
              example={"bk_resource": "inst_asst", "bk_event_types": ["create", "delete"], "bk_start_from": 0},
              codes=(1103007,), body_error="undecodable"),
    Operation("full_topo", "POST", "/api/v3/find/instassttopo/object/{bk_obj_id}/inst/{bk_inst_id}",
              "search_inst_full_association_topo", False, esb=False, reads_body=False,
              summary="An instance with the instances that point to it and those it points to, grouped by model "
                      "(bk-cmdb's full instance topology); native only, the body is not read",
              example={"bk_obj_id": "bk_switch", "bk_inst_id": 11}, codes=(1101016, 1199059)),
    Operation("association_tab", "POST",
              "/api/v3/findmany/inst/association/object/{bk_obj_id}/inst_id/{id}/offset/{start}/limit/{limit}/web",
              "find_instance_associations_web", False, esb=False, reads_body=False,
              summary="A page of one instance's links, both directions, with the instances at their ends (what the "
                      "Association tab's graph draws); native only, the body is not read",
              example={"bk_obj_id": "bk_switch", "id": 11, "start": 0, "limit": 200}, codes=(1199059,)),
    Operation("business_host_links", "POST", "/api/v3/find/instassociation/biz/{bk_biz_id}",
              "find_instance_association_with_biz", False, esb=False, reads_body=False,
              summary="Host links matching a Find condition, for a caller with access to the business (the host "
                      "details' Association list inside a business); native only",
              example={"bk_biz_id": 2, "bk_obj_id": "host", "condition": {"bk_asst_obj_id": "host",
                       "bk_asst_inst_id": 21}}, codes=(1199059,),
              # Read by the handler after the business is checked (the route reads no body before it).
              go_body={"bk_obj_id": "string", "condition": "object"}),
    Operation("model_associations", "POST", "/api/v3/find/instassociation/model",
              "find_model_associations_by_condition", False, esb=False, body_error="undecodable",
              summary="Association definitions (cc_ObjAsst rows) matching a condition, with their count (what "
                      "bk-cmdb's web server asks for the mainline levels); native only",
              example={"condition": {"bk_asst_id": "bk_mainline"}}),
    Operation("definitions_by_ids", "POST", "/api/v3/topo/find/object/{bk_obj_id}/association/by/bk_obj_asst_id",
              "find_association_by_object_association_id", False, esb=False, body_error="raw",
              summary="The definitions with these ids in which a model is the source or the target (what bk-cmdb's "
                      "web server asks for an Excel import); native only",
              example={"bk_obj_id": "bk_switch", "bk_obj_asst_ids": ["bk_switch_belong_bk_host"]}),
    Operation("apply_url", "POST", "/api/v3/auth/skip_url", "get_permission_apply_url", False, esb=False,
              body_error="undecodable", go_body=_PERMISSION,
              summary="The BlueKing IAM URL where the caller applies for a denial's permission (the object a 9900403 "
                      "answer carries); native only, with the IAM authorizer and auth.iam.apply_url",
              example={"system_id": "bk_cmdb", "system_name": "配置平台", "actions": [
                  {"id": "edit_comobj_2", "name": "交换机实例编辑", "related_resource_types": []}]},
              codes=(1199072,)),
    Operation("import", "POST", "/api/v3/import/instassociation/{bk_obj_id}", "import_instance_associations", True,
              esb=False, body_error="raw",
              summary="Add and delete links named by their instances' unique keys, rows keyed by their Excel row "
                      "number (what bk-cmdb's web server calls for an Excel import); answers the rows that failed; "
                      "native only",
              example={"bk_obj_id": "bk_switch", "association_info": {"3": {
                  "bk_obj_asst_id": "bk_switch_belong_bk_host", "operate": 2,
                  "src_primary_key": "Instance Name=switch-11", "dst_primary_key": "Hostname=host-21"}},
                  "object_unique_id": 2, "asst_object_unique_id_info": {"host": 1}}, codes=(1199035,)),
)  # fmt: skip
BY_NAME = {operation.name: operation for operation in OPERATIONS}
