"""Read operations: find, find related, search and count (CONTRACT section 8), and the graph of many hops, each
behind view permission."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from cmdb_asso.domain import ModelInfo, StoredLink
from cmdb_asso.errors import PageLimitExceeded, ParamEmpty, PermissionDenied, SourceInstanceMissing
from cmdb_asso.service.associations import DEFAULT_SUPPLIER
from cmdb_asso.service.context import Caller
from cmdb_asso.service.filters import ASSOCIATION_FIELDS, check_condition, translate_query
from cmdb_asso.service.permission import Authorizer, view_model_payload, view_permission_payload
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.tables import instance_table

log = structlog.get_logger(__name__)
PAGE_LIMIT = 500
# Fields a caller may sort by or project; anything else in `fields` is ignored.
VISIBLE_FIELDS = ASSOCIATION_FIELDS | {"create_time", "last_time"}


@dataclass(frozen=True, slots=True)
class Page:
    """A validated page: where to start, how many, and the sort order."""

    start: int = 0
    limit: int = PAGE_LIMIT
    sort: tuple[tuple[str, int], ...] = (("id", 1),)


def parse_sort(sort: str) -> tuple[tuple[str, int], ...]:
    """bk-cmdb's sort string (`"id"`, `"-id"`, `"bk_inst_id,-id"`) as MongoDB sort keys; unknown fields dropped."""
    keys: list[tuple[str, int]] = []
    for part in sort.split(","):
        name = part.strip()
        direction = -1 if name.startswith("-") else 1
        name = name.lstrip("-+")
        if name in VISIBLE_FIELDS and name not in {key for key, _ in keys}:
            keys.append((name, direction))
    if "id" not in {key for key, _ in keys}:
        keys.append(("id", 1))  # a total order, so that pages neither repeat nor skip links
    return tuple(keys)


def check_page_limit(limit: int) -> None:
    """A page may hold at most 500 items (1199059)."""
    if limit > PAGE_LIMIT:
        raise PageLimitExceeded()


def visible_fields(fields: list[str] | None) -> list[str] | None:
    """The projection: the requested fields that exist, or everything when none is asked for."""
    if not fields:
        return None
    chosen = [name for name in dict.fromkeys(fields) if name in VISIBLE_FIELDS]
    return chosen or None


Direction = Literal["out", "in", "both"]
# An instance in a graph: its model and id.
NodeKey = tuple[str, int]


@dataclass
class Graph:
    """The instances reached from a root and the links between them.

    `hop` says at which hop each instance was first reached (the root at 0); `hidden` counts the instances of
    models the caller may not view, left out with their links; `truncated` says the node bound cut the walk.
    """

    hop: dict[NodeKey, int] = field(default_factory=dict)
    names: dict[NodeKey, str] = field(default_factory=dict)
    edges: dict[int, StoredLink] = field(default_factory=dict)
    hidden: int = 0
    truncated: bool = False


# Models whose instances bk-cmdb's topology and base info name by another field (GetInstNameFieldName).
_DETAIL_NAME_FIELDS = {"host": "bk_host_innerip"}
# Models bk-cmdb's topology never asks view permission for: mainline levels and these (CONTRACT 11).
_TOPO_EXEMPT = frozenset({"biz", "set", "module", "process", "plat", "bk_biz_set_obj", "bk_project"})


# bk-cmdb's "no limit" page size for base info (CONTRACT 13), and its largest page otherwise.
UNBOUNDED_LIMIT = 999999999
BASE_INFO_PAGE_LIMIT = 1000
BASE_INFO_DEFAULT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class BaseInfoRequest:
    """A checked base-info request: the instance, the other model, the direction, and a page of links."""

    obj_id: str
    inst_id: int
    other_obj_id: str
    is_target: bool
    start: int
    limit: int  # 0: bk-cmdb's default page
    sort: tuple[tuple[str, int], ...]


def parse_contract_sort(sort: str) -> tuple[tuple[str, int], ...]:
    """bk-cmdb's sort string as sections 12 and 13 read it (`key`, `-key`, `key:-1`); every key must be an
    association field (else 1199011 `page.sort`); `id` ascending when none is given."""
    keys: list[tuple[str, int]] = []
    for item in (part.strip() for part in sort.split(",")):
        if not item:
            continue
        name, colon, direction = item.partition(":")
        key = name.lstrip("+-")
        if key not in ASSOCIATION_FIELDS:
            raise ParamEmpty("page.sort")
        descending = direction.strip() == "-1" if colon else name.startswith("-")
        keys.append((key, -1 if descending else 1))
    return tuple(keys) or (("id", 1),)


class QueryService:
    """Finds and counts links; every query needs view permission on its model."""

    def __init__(
        self,
        store: AssociationStore,
        authorizer: Authorizer,
        *,
        find_max_results: int = 10000,
        graph_max_nodes: int = 1000,
        topo_max_links: int = 5000,
        max_unbounded: int = 10000,
    ) -> None:
        self.store = store
        self.authorizer = authorizer
        self.find_max_results = find_max_results
        self.graph_max_nodes = graph_max_nodes
        self.topo_max_links = topo_max_links
        self.max_unbounded = max_unbounded

    async def authorize_view(self, caller: Caller, obj_id: str) -> None:
        """View permission on `obj_id`, or 9900403 with the payload naming the model."""
        if await self.authorizer.can_view(caller, obj_id):
            return
        model = (await self.store.find_models([obj_id])).get(obj_id)
        row_id, name = (model.row_id, model.name) if model else (None, obj_id)
        raise PermissionDenied(permission=view_permission_payload(obj_id, row_id, name or obj_id))

    async def find(self, caller: Caller, obj_id: str, condition: Any) -> list[dict[str, Any]]:
        """Links of `obj_id`'s table matching an allow-listed condition, sorted by id.

        Find has no page, so it is bounded by a setting: a condition matching more answers 1199059 rather
        than an answer that silently leaves links out (or one that no memory could hold).
        """
        query = check_condition(condition)
        await self.authorize_view(caller, obj_id)
        links = await self.store.find_links(
            obj_id, caller.supplier_account, query, sort=[("id", 1)], limit=self.find_max_results + 1
        )
        if len(links) > self.find_max_results:
            raise PageLimitExceeded()
        return links

    async def find_related(
        self, caller: Caller, obj_id: str, inst_id: int, fields: list[str] | None, page: Page
    ) -> list[dict[str, Any]]:
        """The links where the instance is the source or the target, sorted by id."""
        check_page_limit(page.limit)
        await self.authorize_view(caller, obj_id)
        query = {
            "$or": [
                {"bk_obj_id": obj_id, "bk_inst_id": inst_id},
                {"bk_asst_obj_id": obj_id, "bk_asst_inst_id": inst_id},
            ]
        }
        return await self.store.find_links(
            obj_id,
            caller.supplier_account,
            query,
            fields=visible_fields(fields),
            sort=[("id", 1)],
            skip=page.start,
            limit=page.limit,
        )

    async def search(
        self, caller: Caller, obj_id: str, conditions: Any, fields: list[str] | None, page: Page
    ) -> list[dict[str, Any]]:
        """Links of `obj_id`'s table matching query-builder conditions, one page of them."""
        check_page_limit(page.limit)
        query = translate_query(conditions)
        await self.authorize_view(caller, obj_id)
        return await self.store.find_links(
            obj_id,
            caller.supplier_account,
            query,
            fields=visible_fields(fields),
            sort=list(page.sort),
            skip=page.start,
            limit=page.limit,
        )

    async def count(self, caller: Caller, obj_id: str, conditions: Any) -> int:
        """How many links search would find without paging (view permission checked, unlike bk-cmdb)."""
        query = translate_query(conditions)
        await self.authorize_view(caller, obj_id)
        return await self.store.count_links(obj_id, caller.supplier_account, query)

    async def graph(
        self,
        caller: Caller,
        root: NodeKey,
        *,
        direction: Direction = "both",
        depth: int = 2,
        obj_asst_ids: list[str] | None = None,
        max_nodes: int | None = None,
    ) -> Graph:
        """The instances `depth` hops around `root` and the links between them: one read per model table per
        hop, with the hop's whole frontier in one `$in`, then one read of names per model. Cycle-safe (each
        instance and link once); models the caller may not view are neither shown nor walked through."""
        await self.authorize_view(caller, root[0])
        supplier = caller.supplier_account
        if root[1] not in await self.store.find_instance_names(root[0], supplier, [root[1]]):
            raise SourceInstanceMissing()
        bound = min(max_nodes or self.graph_max_nodes, self.graph_max_nodes)
        graph = Graph(hop={root: 0})
        viewable: dict[str, bool] = {root[0]: True}
        hidden: set[NodeKey] = set()
        frontier = {root[0]: [root[1]]}
        for hop in range(1, depth + 1):
            if not frontier:
                break
            reached: dict[str, list[int]] = {}
            for link in await self.store.links_touching(frontier, supplier, direction, obj_asst_ids):
                if link.id in graph.edges:
                    continue
                ends = [(link.obj_id, link.inst_id), (link.asst_obj_id, link.asst_inst_id)]
                for node in ends:
                    if node[0] not in viewable:
                        viewable[node[0]] = await self.authorizer.can_view(caller, node[0])
                    if not viewable[node[0]]:
                        hidden.add(node)
                    elif node not in graph.hop:
                        if len(graph.hop) >= bound:
                            graph.truncated = True
                            continue
                        graph.hop[node] = hop
                        reached.setdefault(node[0], []).append(node[1])
                if all(node in graph.hop for node in ends):
                    graph.edges[link.id] = link
            frontier = reached
        graph.edges = dict(sorted(graph.edges.items()))  # a stable order: by link id
        graph.hidden = len(hidden)
        graph.names = await self.store.find_names(supplier, list(graph.hop))
        return graph

    async def topo(self, caller: Caller, obj_id: str, inst_id: int) -> list[dict[str, Any]]:
        """The instances one instance points to (links where it is the source), grouped by target model
        (CONTRACT 11): groups by `bk_obj_id`, children by link id; a link whose target is gone is skipped."""
        supplier = caller.supplier_account
        models = await self.store.find_models([obj_id])
        if obj_id not in models:
            raise ParamEmpty("bk_obj_id")
        id_field = instance_table(obj_id, supplier).id_field
        if inst_id == 0 or inst_id not in await self.store.find_instance_names(obj_id, supplier, [inst_id]):
            raise ParamEmpty(id_field)
        await self._authorize_model_view(caller, obj_id, models[obj_id])
        suppliers = tuple(sorted({DEFAULT_SUPPLIER, supplier}))
        definitions = await self.store.find_definitions_from(obj_id, suppliers)
        targets = await self.store.find_models(sorted({d.asst_obj_id for d in definitions}))
        names = sorted({d.obj_asst_id for d in definitions if d.asst_obj_id in targets})
        if not names:
            return []
        query = {"bk_obj_id": obj_id, "bk_inst_id": inst_id, "bk_asst_obj_id": {"$in": sorted(targets)},
                 "bk_obj_asst_id": {"$in": names}}  # fmt: skip
        links = await self.store.find_links(obj_id, supplier, query, sort=[("id", 1)], limit=self.topo_max_links + 1)
        if len(links) > self.topo_max_links:
            raise PageLimitExceeded()
        by_target: dict[str, list[dict[str, Any]]] = {}
        for link in links:
            by_target.setdefault(str(link["bk_asst_obj_id"]), []).append(link)
        for target in sorted(by_target):
            await self._authorize_model_view(caller, target, targets[target])
        found = await self.store.find_names(
            supplier, [(str(link["bk_asst_obj_id"]), int(link["bk_asst_inst_id"])) for link in links],
            name_fields=_DETAIL_NAME_FIELDS,
        )  # fmt: skip
        groups = []
        for target in sorted(by_target):
            model = targets[target]
            children = []
            for link in by_target[target]:
                child = (target, int(link["bk_asst_inst_id"]))
                if child not in found:
                    log.warning("topo_link_dangling", link_id=link["id"], bk_obj_id=target, bk_inst_id=child[1])
                    continue
                children.append(_topo_entry(target, model, str(child[1]), child[1], found[child], int(link["id"])))
            if children:
                entry = _topo_entry(target, model, "", 0, "", 0)
                groups.append({**entry, "count": len(children), "children": children})
        return groups

    async def base_info(self, caller: Caller, request: BaseInfoRequest) -> dict[str, Any]:
        """A page of the links between one instance and another model's instances, in one direction, as the
        other side's (id, name) in link order (CONTRACT 13), with the true count of links."""
        limit = request.limit or BASE_INFO_DEFAULT_LIMIT
        if limit > BASE_INFO_PAGE_LIMIT and limit != UNBOUNDED_LIMIT:
            raise PageLimitExceeded()
        models = await self.store.find_models([request.obj_id, request.other_obj_id])
        if request.obj_id not in models:
            raise ParamEmpty("bk_obj_id")
        if request.other_obj_id not in models:
            raise ParamEmpty("association_obj_id")
        await self.authorize_view(caller, request.obj_id)
        await self.authorize_view(caller, request.other_obj_id)
        if request.is_target:
            query = {"bk_asst_obj_id": request.obj_id, "bk_asst_inst_id": request.inst_id,
                     "bk_obj_id": request.other_obj_id}  # fmt: skip
            other_side = "bk_inst_id"
        else:
            query = {"bk_obj_id": request.obj_id, "bk_inst_id": request.inst_id,
                     "bk_asst_obj_id": request.other_obj_id}  # fmt: skip
            other_side = "bk_asst_inst_id"
        supplier = caller.supplier_account
        count = await self.store.count_links(request.other_obj_id, supplier, query)
        unbounded = limit == UNBOUNDED_LIMIT
        if unbounded and count - request.start > self.max_unbounded:
            raise PageLimitExceeded()
        links = await self.store.find_links(
            request.other_obj_id, supplier, query, sort=list(request.sort), skip=request.start,
            limit=self.max_unbounded if unbounded else limit,
        )  # fmt: skip
        others = list(dict.fromkeys((request.other_obj_id, int(link[other_side])) for link in links))
        names = await self.store.find_names(supplier, others, name_fields=_DETAIL_NAME_FIELDS)
        info = [{"bk_inst_id": other[1], "bk_inst_name": names[other]} for other in others if other in names]
        return {"count": count, "info": info}

    async def _authorize_model_view(self, caller: Caller, obj_id: str, model: ModelInfo) -> None:
        if obj_id in _TOPO_EXEMPT or await self.authorizer.can_view(caller, obj_id):
            return
        raise PermissionDenied(permission=view_model_payload(model.row_id, model.name or obj_id, obj_id))


def _topo_entry(obj_id: str, model: ModelInfo, entry_id: str, inst_id: int, name: str, asso_id: int) -> dict[str, Any]:
    """One group or child of the topology, in bk-cmdb's key order."""
    return {
        "id": entry_id,
        "bk_obj_id": obj_id,
        "bk_obj_icon": model.icon,
        "bk_inst_id": inst_id,
        "bk_obj_name": model.name,
        "bk_inst_name": name,
        "asso_id": asso_id,
    }
