"""Every operation of the API, once: its name, native method and path, ESB name, and what it does to data.

The routes, the client library, the API document and the tests all read this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

    @property
    def path_parameters(self) -> tuple[str, ...]:
        """The names in the native path's `{...}` segments."""
        return tuple(re.findall(r"{(\w+)}", self.native_path))

    @property
    def esb_path(self) -> str:
        """The canonical ESB path."""
        return ESB_PATH.format(esb_name=self.esb_name)


OPERATIONS: tuple[Operation, ...] = (
    Operation("create", "POST", "/api/v3/create/instassociation", "add_instance_association", True, True),
    Operation("create_many", "POST", "/api/v3/createmany/instassociation", "batch_create_instance_association",
              True, True),
    Operation("delete", "DELETE", "/api/v3/delete/instassociation/{bk_obj_id}/{id}", "delete_instance_association",
              True),
    Operation("delete_many", "DELETE", "/api/v3/delete/instassociation/batch", "delete_related_inst_asso", True),
    Operation("find", "POST", "/api/v3/find/instassociation", "find_instance_association", False),
    Operation("find_related", "POST", "/api/v3/find/instassociation/related", "search_related_inst_asso", False),
    Operation("search", "POST", "/api/v3/search/instance_associations/object/{bk_obj_id}",
              "search_instance_associations", False),
    Operation("count", "POST", "/api/v3/count/instance_associations/object/{bk_obj_id}",
              "count_instance_associations", False),
    Operation("topo", "POST", "/api/v3/find/insttopo/object/{bk_obj_id}/inst/{bk_inst_id}",
              "search_inst_association_topo", False),
    Operation("links_with_instances", "POST", "/api/v3/find/instassociation/object/{bk_obj_id}/inst/detail",
              "find_instassociation_with_inst", False),
    Operation("base_info", "POST", "/api/v3/findmany/inst/association/association_object/inst_base_info",
              "search_inst_asst_object_inst_base_info", False),
    Operation("graph", "POST", "/api/v3/find/instassociation/graph", "search_inst_association_graph", False),
    Operation("watch", "POST", "/api/v3/event/watch/resource/{bk_resource}", "resource_watch", False,
              long_poll=True),
)  # fmt: skip
BY_NAME = {operation.name: operation for operation in OPERATIONS}
