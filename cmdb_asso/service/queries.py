"""Read operations: find, find related, search and count (CONTRACT section 8), and the graph of many hops, each
behind view permission."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from cmdb_asso.domain import ModelInfo, StoredLink
from cmdb_asso.errors import (
    BodyInvalid,
    ModelNotFound,
    PageLimitExceeded,
    ParamEmpty,
    ParamMissing,
    PermissionDenied,
    QueryRefused,
    SourceInstanceMissing,
)
from cmdb_asso.inputs import is_int64
from cmdb_asso.service.admission import Gate
from cmdb_asso.service.context import Caller
from cmdb_asso.service.filters import (
    ASSOCIATION_FIELDS,
    ASST_FILTER,
    DEFINITION_FIELD_TYPES,
    CombinedRule,
    check_condition,
    check_rule_tree,
    parse_rule_tree,
    query_builder_filter,
    rule_tree_filter,
)
from cmdb_asso.service.permission import (
    VIEW_UNCHECKED,
    Authorizer,
    business_access_payload,
    denied_instances,
    view_instances_payload,
    view_model_payload,
    view_models_payload,
    view_permission_payload,
)
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.tables import instance_table, visible_suppliers

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


def _bk_page_limit(limit: int) -> int:
    """A page limit as bk-cmdb's BasePage reads it: 0 is 20, over 1,000 answers 1199059 unless it is its "no
    limit" (999999999)."""
    limit = limit or BASE_INFO_DEFAULT_LIMIT
    if limit > BASE_INFO_PAGE_LIMIT and limit != UNBOUNDED_LIMIT:
        raise PageLimitExceeded()
    return limit


def check_search_page(page: Page) -> None:
    """Search's page (CONTRACT-ui Correction d): a limit of 1 to 500 and a start that is not negative, else 1199006
    naming it."""
    if not 1 <= page.limit <= PAGE_LIMIT:
        raise BodyInvalid("page.limit")
    if page.start < 0:
        raise BodyInvalid("page.start")


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
# Fields the Association tab reads besides an instance's id and name (CONTRACT-ui 19, read c).
_TAB_EXTRA_FIELDS = {"host": ("bk_host_innerip_v6",), "biz": ("default",), "set": ("default",), "module": ("default",)}
# Models exempt from `view_sys_model` whatever the data says; the mainline models (read from the `bk_mainline`
# definitions on every check, as bk-cmdb does: biz, set, module and host in a standard database) are too.
_VIEW_MODEL_EXEMPT = frozenset({"process", "plat", "bk_biz_set_obj", "bk_project"})


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


DETAIL_PAGE_LIMIT = 200
# bk-cmdb's InstAsst struct (MD/association.go): a link item's keys, in order; empty values are left out.
LINK_KEYS = ("id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_supplier_account",
             "bk_obj_asst_id", "bk_asst_id", "bk_biz_id")  # fmt: skip
# Host fields stored as lists of strings that bk-cmdb's host reader hands out joined with commas.
HOST_LIST_FIELDS = frozenset(
    {"bk_host_innerip", "bk_host_outerip", "operator", "bk_bak_operator", "bk_host_innerip_v6", "bk_host_outerip_v6"}
)
# Filled in from the older field when an instance lacks them (bk-cmdb's instance reader).
_TIME_FILL_INS = (("bk_created_at", "create_time"), ("bk_updated_at", "last_time"))


@dataclass(frozen=True, slots=True)
class DetailRequest:
    """A links-with-details request as decoded (CONTRACT-reads 12); the service checks the rest, in order."""

    obj_id: str
    asst_filter: Any
    asst_fields: tuple[str, ...] = ()
    src_fields: tuple[str, ...] = ()
    dst_fields: tuple[str, ...] = ()
    src_detail: bool = False
    dst_detail: bool = False
    start: int = 0
    limit: int = 0
    sort: str = ""


class QueryService:
    """Finds and counts links; every query needs view permission on its model."""

    def __init__(
        self,
        store: AssociationStore,
        authorizer: Authorizer,
        *,
        find_max_results: int = 10000,
        graph_max_nodes: int = 1000,
        graph_max_links: int = 10000,
        topo_max_links: int = 5000,
        max_unbounded: int = 10000,
        heavy_reads: Gate | None = None,
    ) -> None:
        self.store = store
        self.authorizer = authorizer
        self.find_max_results = find_max_results
        self.graph_max_nodes = graph_max_nodes
        self.graph_max_links = graph_max_links
        # Graphs and links-with-details reads running at once in this process.
        self.heavy_reads = heavy_reads or Gate("heavy reads", 0)
        self.topo_max_links = topo_max_links
        self.max_unbounded = max_unbounded

    async def authorize_view(self, caller: Caller, obj_id: str, *others: str) -> None:
        """View permission on the instances of `obj_id` (and `others`: one decision for all), or 9900403 with the
        payload naming the first model denied; never denied for set, module, process and the custom mainline levels
        (bk-cmdb skips them, CONTRACT-ui Correction a)."""
        checked = [model for model in dict.fromkeys([obj_id, *others]) if model not in VIEW_UNCHECKED]
        denied = await self.authorizer.denied_views(caller, checked) if checked else []
        mainline = await self.store.mainline_models(caller.supplier_account) - {"biz", "host"} if denied else set()
        denied = [model for model in denied if model not in mainline]
        if not denied:
            return
        obj_id = denied[0]
        model = (await self.store.find_models([obj_id], caller.supplier_account)).get(obj_id)
        row_id, name = (model.row_id, model.name) if model else (None, obj_id)
        raise PermissionDenied(permission=view_permission_payload(obj_id, row_id, name or obj_id))

    async def find(self, caller: Caller, obj_id: str, condition: Any) -> list[dict[str, Any]]:
        """Links of `obj_id`'s table matching an allow-listed condition, sorted by id.

        Find has no page, so it is bounded by a setting: a condition matching more answers 1199059 rather
        than an answer that silently leaves links out (or one that no memory could hold).
        """
        query = check_condition(condition)
        await self.authorize_view(caller, obj_id)
        return await self._find(caller, obj_id, query)

    async def authorize_business(self, caller: Caller, biz_id: int) -> None:
        """Access to a business (bk-cmdb's `find_business_resource`), which the static policy grants as view
        permission on model `biz`; the resource-pool business and an id with no business are not checked."""
        if await self.authorizer.can_access_business(caller, biz_id):
            return
        found = await self.store.find_instances("biz", caller.supplier_account, [biz_id], ["bk_biz_name", "default"])
        business = found.get(biz_id)
        if business is None or business.get("default") == 1:
            return
        name = str(business.get("bk_biz_name") or biz_id)
        raise PermissionDenied(permission=business_access_payload(biz_id, name))

    async def business_host_links(self, caller: Caller, obj_id: str, condition: Any) -> list[dict[str, Any]]:
        """Host links matching a Find condition, once the caller's access to a business was checked
        (CONTRACT-ui 20): the business does not filter the links."""
        if not obj_id:
            raise ParamMissing("bk_obj_id")
        if obj_id != "host":
            raise BodyInvalid("bk_obj_id")
        return await self._find(caller, obj_id, check_condition(condition))

    async def model_associations(self, caller: Caller, condition: Any) -> dict[str, Any]:
        """The association definitions (`cc_ObjAsst` rows) matching an allow-listed condition, in id order, with
        their count, once the caller may view every source model among them (CONTRACT-ui 21)."""
        rows = await self.store.definition_rows(
            check_condition(condition, types=DEFINITION_FIELD_TYPES), caller.supplier_account
        )
        await self._authorize_models_view(caller, sorted({str(row.get("bk_obj_id", "")) for row in rows}))
        return {"count": len(rows), "info": [_definition_row(row) for row in rows]}

    async def definitions_by_ids(self, caller: Caller, obj_id: str, obj_asst_ids: list[str]) -> list[dict[str, Any]]:
        """The definitions with these ids in which `obj_id` is the source or the target, in id order, once the
        caller may view the model (CONTRACT-ui 22)."""
        await self._authorize_models_view(caller, [obj_id])
        if not obj_asst_ids:
            return []
        query = {"$or": [{"bk_obj_id": obj_id}, {"bk_asst_obj_id": obj_id}],
                 "bk_obj_asst_id": {"$in": sorted(set(obj_asst_ids))}}  # fmt: skip
        return [_definition_row(row) for row in await self.store.definition_rows(query, caller.supplier_account)]

    async def _authorize_models_view(self, caller: Caller, obj_ids: list[str]) -> None:
        """`view_sys_model` on each of these models but the exempt ones and those without a `cc_ObjDes` row; one
        denial names every model denied."""
        exempt = await self._view_model_exempt(caller)
        checked = [obj_id for obj_id in obj_ids if obj_id not in exempt]
        if not checked:
            return
        models = await self.store.find_models(checked, caller.supplier_account)
        denied = [
            (models[obj_id].row_id, models[obj_id].name or obj_id, obj_id)
            for obj_id in checked
            if obj_id in models and not await self.authorizer.can_view_model(caller, obj_id, models[obj_id].row_id)
        ]
        if denied:
            raise PermissionDenied(permission=view_models_payload(denied))

    async def _find(self, caller: Caller, obj_id: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        if not await self.store.has_model(obj_id, caller.supplier_account):
            return []
        links = await self.store.find_links(
            obj_id, caller.supplier_account, query, sort=[("id", 1)], limit=self.find_max_results + 1
        )
        if len(links) > self.find_max_results:
            raise PageLimitExceeded()
        return [_link_item(link, ()) for link in links]

    async def find_related(
        self, caller: Caller, obj_id: str, inst_id: int, fields: list[str] | None, *, start: int, limit: int
    ) -> list[dict[str, Any]]:
        """The links where the instance is the source or the target, sorted by id, cut to `fields` (required);
        without a limit every link, up to `query.max_unbounded` (1199059 beyond)."""
        if not obj_id or not inst_id:
            raise ParamMissing("'bk_inst_id' & 'bk_obj_id'")
        if not fields:
            raise ParamMissing("fields")
        check_page_limit(limit)
        await self.authorize_view(caller, obj_id)
        if not await self.store.has_model(obj_id, caller.supplier_account):
            return []
        shown = visible_fields(fields)
        links = await self.store.links_of_instance(
            obj_id, caller.supplier_account, inst_id, fields=shown, start=start, limit=limit or self.max_unbounded + 1
        )
        if not limit and len(links) > self.max_unbounded:
            raise PageLimitExceeded()
        return [_link_item(link, tuple(shown or ())) for link in links]

    async def search(
        self, caller: Caller, obj_id: str, conditions: Any, fields: list[str] | None, page: Page
    ) -> list[dict[str, Any]]:
        """Links of `obj_id`'s table matching query-builder conditions, one page of them."""
        tree = parse_rule_tree(conditions)  # a body that does not decode answers before the page
        check_search_page(page)
        query = query_builder_filter(tree)
        await self.authorize_view(caller, obj_id)
        if not await self.store.has_model(obj_id, caller.supplier_account):
            return []
        shown = visible_fields(fields)
        links = await self.store.find_links(
            obj_id,
            caller.supplier_account,
            query,
            fields=shown,
            sort=list(page.sort),
            skip=page.start,
            limit=page.limit,
        )
        return [_link_item(link, tuple(shown or ())) for link in links]

    async def count(self, caller: Caller, obj_id: str, conditions: Any) -> int:
        """How many links search would find without paging (view permission checked, unlike bk-cmdb)."""
        query = query_builder_filter(parse_rule_tree(conditions))
        await self.authorize_view(caller, obj_id)
        if not await self.store.has_model(obj_id, caller.supplier_account):
            return 0
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
        instance and link once); models the caller may not view are neither shown nor walked through. At most
        `graph_max_links` links are read over all hops: past it the walk stops, `truncated`."""
        async with self.heavy_reads.admit():
            return await self._graph(caller, root, direction, depth, obj_asst_ids, max_nodes)

    async def _graph(
        self,
        caller: Caller,
        root: NodeKey,
        direction: Direction,
        depth: int,
        obj_asst_ids: list[str] | None,
        max_nodes: int | None,
    ) -> Graph:
        await self.authorize_view(caller, root[0])
        supplier = caller.supplier_account
        if not await self.store.has_model(root[0], supplier):
            raise SourceInstanceMissing()
        if root[1] not in await self.store.find_instance_names(root[0], supplier, [root[1]]):
            raise SourceInstanceMissing()
        bound = min(max_nodes or self.graph_max_nodes, self.graph_max_nodes)
        graph = Graph(hop={root: 0})
        viewable: dict[str, bool] = {root[0]: True}
        hidden: set[NodeKey] = set()
        frontier = {root[0]: [root[1]]}
        links_left = self.graph_max_links
        for hop in range(1, depth + 1):
            if not frontier:
                break
            reached: dict[str, list[int]] = {}
            touching = await self.store.links_touching(frontier, supplier, direction, obj_asst_ids, limit=links_left)
            links_left -= len(touching)
            if links_left <= 0:
                graph.truncated = True
                touching = touching[: len(touching) + links_left]
            # The models this hop meets for the first time: one decision for all of them.
            new_models = list(dict.fromkeys(model for link in touching for model in (link.obj_id, link.asst_obj_id)
                                            if model not in viewable))  # fmt: skip
            denied = set(await self.authorizer.denied_views(caller, new_models)) if new_models else set()
            viewable |= {model: model not in denied for model in new_models}
            for link in touching:
                if link.id in graph.edges:
                    continue
                ends = [(link.obj_id, link.inst_id), (link.asst_obj_id, link.asst_inst_id)]
                for node in ends:
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
            frontier = {} if links_left <= 0 else reached
        graph.edges = dict(sorted(graph.edges.items()))  # a stable order: by link id
        graph.hidden = len(hidden)
        graph.names = await self.store.find_names(supplier, list(graph.hop))
        return graph

    async def topo(self, caller: Caller, obj_id: str, inst_id: int) -> list[dict[str, Any]]:
        """The instances one instance points to (links where it is the source), grouped by target model
        (CONTRACT 11): groups by `bk_obj_id`, children by link id; a link whose target is gone is skipped."""
        supplier = caller.supplier_account
        models = await self.store.find_models([obj_id], supplier)
        if obj_id not in models:
            raise ParamEmpty("bk_obj_id")
        id_field = instance_table(obj_id, supplier).id_field
        if inst_id == 0 or inst_id not in await self.store.find_instance_names(obj_id, supplier, [inst_id]):
            raise ParamEmpty(id_field)
        exempt = await self._view_model_exempt(caller)
        await self._authorize_model_view(caller, obj_id, models[obj_id], exempt)
        side = await self._topo_side(supplier, obj_id, inst_id, as_target=False, limit=self.topo_max_links)
        for target in side.models:
            await self._authorize_model_view(caller, target, side.models[target], exempt)
        return await self._topo_groups(supplier, side)

    async def full_topo(self, caller: Caller, obj_id: str, inst_id: int) -> list[dict[str, Any]]:
        """One instance (`curr`), the instances that point to it (`prev`, by source model) and those it points to
        (`next`, by target model), once the caller may view every model among them (CONTRACT-ui 18)."""
        supplier = caller.supplier_account
        models = await self.store.find_models([obj_id], supplier)
        if obj_id not in models:
            raise ModelNotFound()
        id_field = instance_table(obj_id, supplier).id_field
        if inst_id == 0:
            raise ParamEmpty(id_field)
        name_field = _DETAIL_NAME_FIELDS.get(obj_id)
        names = await self.store.find_instance_names(obj_id, supplier, [inst_id], name_field=name_field)
        if inst_id not in names:
            raise ParamEmpty(id_field)
        after = await self._topo_side(supplier, obj_id, inst_id, as_target=False, limit=self.topo_max_links)
        before = await self._topo_side(
            supplier, obj_id, inst_id, as_target=True, limit=self.topo_max_links - len(after.links)
        )
        await self._authorize_models_view(caller, list(dict.fromkeys([obj_id, *before.models, *after.models])))
        curr = _topo_entry(obj_id, models[obj_id], str(inst_id), inst_id, names[inst_id], 0)
        prev, next_ = await self._topo_groups(supplier, before), await self._topo_groups(supplier, after)
        return [{"prev": prev, "next": next_, "curr": curr}]

    async def _topo_side(self, supplier: str, obj_id: str, inst_id: int, *, as_target: bool, limit: int) -> _TopoSide:
        """The links of one instance in one direction (as source: its targets; `as_target`: its sources) of
        definitions still stored and models that exist, in id order, bounded by `limit` (1199059 beyond)."""
        definitions = await self.store.find_definitions_from(obj_id, visible_suppliers(supplier), as_target=as_target)
        ends = {d.obj_id if as_target else d.asst_obj_id for d in definitions}
        others = await self.store.find_models(sorted(ends), supplier) if ends else {}
        names = sorted({d.obj_asst_id for d in definitions if (d.obj_id if as_target else d.asst_obj_id) in others})
        other_model, other_id = ("bk_obj_id", "bk_inst_id") if as_target else ("bk_asst_obj_id", "bk_asst_inst_id")
        if not names:
            return _TopoSide(other_model, other_id, [], {})
        this_model, this_id = ("bk_asst_obj_id", "bk_asst_inst_id") if as_target else ("bk_obj_id", "bk_inst_id")
        query = {this_model: obj_id, this_id: inst_id, other_model: {"$in": sorted(others)},
                 "bk_obj_asst_id": {"$in": names}}  # fmt: skip
        links = await self.store.find_links(obj_id, supplier, query, sort=[("id", 1)], limit=limit + 1)
        if len(links) > limit:
            raise PageLimitExceeded()
        linked = sorted({str(link[other_model]) for link in links})
        return _TopoSide(other_model, other_id, links, {model: others[model] for model in linked})

    async def _topo_groups(self, supplier: str, side: _TopoSide) -> list[dict[str, Any]]:
        """One direction's groups, by model id, each with its instances in link order; a link whose instance is
        gone is skipped and logged."""
        ends = [(str(link[side.model_key]), int(link[side.id_key])) for link in side.links]
        found = await self.store.find_names(supplier, ends, name_fields=_DETAIL_NAME_FIELDS)
        groups = []
        for model_id, model in side.models.items():
            children = []
            for link in side.links:
                end = (str(link[side.model_key]), int(link[side.id_key]))
                if end[0] != model_id:
                    continue
                if end not in found:
                    log.warning("topo_link_dangling", link_id=link["id"], bk_obj_id=end[0], bk_inst_id=end[1])
                    continue
                children.append(_topo_entry(model_id, model, str(end[1]), end[1], found[end], int(link["id"])))
            if children:
                entry = _topo_entry(model_id, model, "", 0, "", 0)
                groups.append({**entry, "count": len(children), "children": children})
        return groups

    async def association_tab(
        self, caller: Caller, obj_id: str, inst_id: int, *, start: int, limit: int
    ) -> dict[str, Any]:
        """A page of one instance's links in `obj_id`'s table, both directions, in id order: those whose source
        model is `obj_id` under `src`, the others under `dst`, with the id and name of every instance at their
        ends by model, and the count of all its links (CONTRACT-ui 19)."""
        supplier = caller.supplier_account
        if obj_id not in await self.store.find_models([obj_id], supplier):
            raise ParamEmpty("bk_obj_id")
        await self.authorize_view(caller, obj_id)
        limit = _bk_page_limit(limit)
        query = {"$or": [{"bk_obj_id": obj_id, "bk_inst_id": inst_id},
                         {"bk_asst_obj_id": obj_id, "bk_asst_inst_id": inst_id}]}  # fmt: skip
        count, links = await self._counted_page(obj_id, supplier, query, sort=[("id", 1)], start=start, limit=limit)
        ends: dict[str, dict[int, None]] = {}
        for link in links:
            for side_obj, side_id in ((link["bk_obj_id"], link["bk_inst_id"]),
                                      (link["bk_asst_obj_id"], link["bk_asst_inst_id"])):  # fmt: skip
                if is_int64(side_id):
                    ends.setdefault(str(side_obj), {})[side_id] = None
        instances = await asyncio.gather(
            *(self._tab_instances(supplier, model, list(ids)) for model, ids in ends.items())
        )
        return {
            "association_count": count,
            "data": {
                "association": {
                    "src": [_link_item(link, ()) for link in links if link["bk_obj_id"] == obj_id],
                    "dst": [_link_item(link, ()) for link in links if link["bk_obj_id"] != obj_id],
                },
                "instance": dict(sorted(zip(ends, instances, strict=True))),
            },
            "page": {"limit": limit, "start": start},
        }

    async def _counted_page(
        self, obj_id: str, supplier: str, query: dict[str, Any], *, sort: list[tuple[str, int]], start: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """How many links of `obj_id`'s table match `query`, and the page of them at `start`: bk-cmdb's "no limit"
        (999999999) returns all of them up to `query.max_unbounded` (1199059 beyond)."""
        count = await self.store.count_links(obj_id, supplier, query)
        unbounded = limit == UNBOUNDED_LIMIT
        if unbounded and count - start > self.max_unbounded:
            raise PageLimitExceeded()
        links = await self.store.find_links(
            obj_id, supplier, query, sort=sort, skip=start, limit=self.max_unbounded if unbounded else limit
        )
        return count, links

    async def _tab_instances(self, supplier: str, obj_id: str, ids: list[int]) -> list[dict[str, Any]]:
        """The instances of `obj_id` with these ids that exist, in this order: their id and name fields only."""
        table = instance_table(obj_id, supplier)
        name_field = _DETAIL_NAME_FIELDS.get(obj_id, table.name_field)
        fields = [table.id_field, name_field, *_TAB_EXTRA_FIELDS.get(obj_id, ())]
        docs = await self.store.find_instances(obj_id, supplier, ids, fields)
        return [_instance_detail(obj_id, docs[inst_id], fields) for inst_id in ids if inst_id in docs]

    async def base_info(self, caller: Caller, request: BaseInfoRequest) -> dict[str, Any]:
        """A page of the links between one instance and another model's instances, in one direction, as the
        other side's (id, name) in link order (CONTRACT 13), with the true count of links."""
        limit = _bk_page_limit(request.limit)
        models = await self.store.find_models([request.obj_id, request.other_obj_id], caller.supplier_account)
        if request.obj_id not in models:
            raise ParamEmpty("bk_obj_id")
        if request.other_obj_id not in models:
            raise ParamEmpty("association_obj_id")
        await self.authorize_view(caller, request.obj_id, request.other_obj_id)
        if request.is_target:
            query = {"bk_asst_obj_id": request.obj_id, "bk_asst_inst_id": request.inst_id,
                     "bk_obj_id": request.other_obj_id}  # fmt: skip
            other_side = "bk_inst_id"
        else:
            query = {"bk_obj_id": request.obj_id, "bk_inst_id": request.inst_id,
                     "bk_asst_obj_id": request.other_obj_id}  # fmt: skip
            other_side = "bk_asst_inst_id"
        supplier = caller.supplier_account
        count, links = await self._counted_page(
            request.other_obj_id, supplier, query, sort=list(request.sort), start=request.start, limit=limit
        )
        others = list(dict.fromkeys((request.other_obj_id, int(link[other_side])) for link in links))
        names = await self.store.find_names(supplier, others, name_fields=_DETAIL_NAME_FIELDS)
        info = [{"bk_inst_id": other[1], "bk_inst_name": names[other]} for other in others if other in names]
        return {"count": count, "info": info}

    async def links_with_instances(self, caller: Caller, request: DetailRequest) -> dict[str, Any]:
        """A page of the links in a model's table chosen by a query-builder filter, with their source and target
        instances when asked (CONTRACT-reads 12): instances once each, by model and then link order."""
        async with self.heavy_reads.admit():
            return await self._links_with_instances(caller, request)

    async def _links_with_instances(self, caller: Caller, request: DetailRequest) -> dict[str, Any]:
        query = rule_tree_filter(self._checked_detail_request(request))
        sort = parse_contract_sort(request.sort)
        models = await self.store.find_models([request.obj_id], caller.supplier_account)
        if request.obj_id not in models:
            raise ParamEmpty("bk_obj_id")
        await self.authorize_view(caller, request.obj_id)
        supplier = caller.supplier_account
        try:
            links = await self.store.find_links(
                request.obj_id, supplier, query, sort=list(sort), skip=request.start, limit=request.limit
            )
        except QueryRefused:
            raise ParamEmpty(ASST_FILTER) from None
        answer: dict[str, Any] = {"association": [_link_item(link, request.asst_fields) for link in links]}
        sources = _ends(links, "bk_obj_id", "bk_inst_id")
        targets = _ends(links, "bk_asst_obj_id", "bk_asst_inst_id")
        if request.src_detail or request.dst_detail:
            await self._authorize_instances_view(caller, list(dict.fromkeys([*sources, *targets])))
        for key, wanted, ends, fields in (("src", request.src_detail, sources, request.src_fields),
                                          ("dst", request.dst_detail, targets, request.dst_fields)):  # fmt: skip
            answer[key] = (await self._instance_details(supplier, ends, fields) or None) if wanted else None
        return answer

    @staticmethod
    def _checked_detail_request(request: DetailRequest) -> CombinedRule:
        """Steps 2 to 5 of CONTRACT-reads 12, in order: the filter's rules, then the page."""
        rule = check_rule_tree(parse_rule_tree(request.asst_filter))
        if request.limit > DETAIL_PAGE_LIMIT:
            raise PageLimitExceeded()
        if request.limit == 0:
            raise ParamMissing("page.limit")
        for name, value in (("page.start", request.start), ("page.limit", request.limit)):
            if value < 0:
                raise ParamEmpty(name)
        return rule

    async def _authorize_instances_view(self, caller: Caller, instances: list[NodeKey]) -> None:
        """View permission on the models of these instances; a denial names each instance of a denied model."""
        models = [obj_id for obj_id in dict.fromkeys(obj_id for obj_id, _ in instances) if obj_id not in VIEW_UNCHECKED]
        denied = await self.authorizer.denied_views(caller, models) if models else []
        if not denied:
            return
        named = [instance for instance in instances if instance[0] in denied]
        items = await denied_instances(self.store, caller.supplier_account, named, name_fields=_DETAIL_NAME_FIELDS)
        raise PermissionDenied(permission=view_instances_payload(items))

    async def _instance_details(
        self, supplier: str, instances: list[NodeKey], fields: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        by_model: dict[str, list[int]] = {}
        for obj_id, inst_id in instances:
            by_model.setdefault(obj_id, []).append(inst_id)
        wanted = list(dict.fromkeys(fields))
        read = wanted + [old for new, old in _TIME_FILL_INS if new in wanted]
        found = await asyncio.gather(
            *(self.store.find_instances(obj_id, supplier, ids, read or None) for obj_id, ids in by_model.items())
        )
        return [
            _instance_detail(obj_id, docs[inst_id], wanted)
            for (obj_id, ids), docs in zip(by_model.items(), found, strict=True)
            for inst_id in ids
            if inst_id in docs
        ]

    async def _view_model_exempt(self, caller: Caller) -> frozenset[str]:
        """The models exempt from `view_sys_model` (CONTRACT-ui Correction b); no mainline row, no mainline model."""
        return _VIEW_MODEL_EXEMPT | await self.store.mainline_models(caller.supplier_account)

    async def _authorize_model_view(
        self, caller: Caller, obj_id: str, model: ModelInfo, exempt: frozenset[str]
    ) -> None:
        if obj_id in exempt or await self.authorizer.can_view_model(caller, obj_id, model.row_id):
            return
        raise PermissionDenied(permission=view_model_payload(model.row_id, model.name or obj_id, obj_id))


# bk-cmdb's Association struct: a definition's keys in order, none left out.
DEFINITION_KEYS = ("id", "bk_supplier_account", "bk_obj_asst_id", "bk_obj_asst_name", "bk_obj_id", "bk_asst_obj_id",
                   "bk_asst_id", "mapping", "on_delete", "ispre")  # fmt: skip


def _definition_row(row: dict[str, Any]) -> dict[str, Any]:
    """A `cc_ObjAsst` row as bk-cmdb's Association struct renders it: every key, in order; `ispre` null when not
    stored, the others their Go zero values."""
    zero: dict[str, Any] = {"id": 0, "ispre": None}
    return {key: row.get(key, zero.get(key, "")) for key in DEFINITION_KEYS}


@dataclass(frozen=True, slots=True)
class _TopoSide:
    """One direction of an instance's topology: where the other end is in a link, the links, and the other ends'
    models (by id, sorted) that have links."""

    model_key: str
    id_key: str
    links: list[dict[str, Any]]
    models: dict[str, ModelInfo]


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


def _ends(links: list[dict[str, Any]], model_key: str, id_key: str) -> list[NodeKey]:
    """One side's instances of these links, each once, in order of first appearance (malformed ends skipped)."""
    ends: dict[NodeKey, None] = {}
    for link in links:
        obj_id, inst_id = link.get(model_key), link.get(id_key)
        if isinstance(obj_id, str) and is_int64(inst_id):
            ends[(obj_id, int(inst_id))] = None
    return list(ends)


def _link_item(link: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A link as bk-cmdb's InstAsst struct renders it: its keys in order, empty ones left out, cut to `fields`."""
    keys = [key for key in LINK_KEYS if key in fields] if fields else LINK_KEYS
    return {key: link[key] for key in keys if link.get(key) not in (None, 0, "")}


def _instance_detail(obj_id: str, doc: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """An instance as bk-cmdb's instance reader hands it out: time fields filled in, host IP lists joined,
    cut to `fields` when given, keys sorted, times as Go writes them."""
    detail = dict(doc)
    for new, old in _TIME_FILL_INS:
        if (not fields or new in fields) and new not in detail:
            detail[new] = detail.get(old)
    if fields:
        detail = {key: value for key, value in detail.items() if key in fields}
    if obj_id == "host":
        for key in HOST_LIST_FIELDS & detail.keys():
            value = detail[key]
            detail[key] = ",".join(str(item) for item in value) if isinstance(value, list) else value or ""
    rendered: dict[str, Any] = _go_json(detail)
    return rendered


def _go_json(value: Any) -> Any:
    """Maps with keys sorted (bk-cmdb's encoder sorts them) and datetimes in RFC 3339 as Go writes UTC times."""
    if isinstance(value, dict):
        return {key: _go_json(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_go_json(item) for item in value]
    if isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
        return f"{text}Z"
    return value
