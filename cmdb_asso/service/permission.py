"""Pluggable authorizers and the permission payload bk-cmdb answers with a denial."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cmdb_asso.inputs import is_int64
from cmdb_asso.service.context import Caller
from cmdb_asso.storage.associations import AssociationStore

SYSTEM_ID = "bk_cmdb"
SYSTEM_NAME = "配置平台"


class Authorizer(Protocol):
    """Decides whether a caller may edit instances, or view a model's instances."""

    async def denied_edits(self, caller: Caller, ends: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Those of these (model, instance) ends that `caller` may not edit, in order (one decision per request)."""
        ...

    async def can_view_model(self, caller: Caller, obj_id: str, row_id: int | None) -> bool:
        """Whether `caller` may view the model itself (`view_sys_model` on its `cc_ObjDes` row)."""
        ...

    async def denied_views(self, caller: Caller, obj_ids: list[str]) -> list[str]:
        """Those of these models whose instances `caller` may not view, in order (one decision for all)."""
        ...

    async def can_access_business(self, caller: Caller, biz_id: int) -> bool:
        """Whether `caller` may access the business's resources (`find_business_resource`)."""
        ...

    async def can_watch(self, caller: Caller, obj_id: str | None) -> bool:
        """Whether `caller` may watch link events (of `obj_id`'s links, or of all when None)."""
        ...

    async def sees_all_suppliers(self, caller: Caller) -> bool:
        """Whether `caller` may read every supplier's link events (bk-cmdb's `superadmin`, as a grant)."""
        ...


class AllowAll:
    """Lets every caller do everything (the default for local runs)."""

    async def denied_edits(self, caller: Caller, ends: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """None."""
        return []

    async def can_view_model(self, caller: Caller, obj_id: str, row_id: int | None) -> bool:
        """Always yes."""
        return True

    async def denied_views(self, caller: Caller, obj_ids: list[str]) -> list[str]:
        """None."""
        return []

    async def can_access_business(self, caller: Caller, biz_id: int) -> bool:
        """Always yes."""
        return True

    async def can_watch(self, caller: Caller, obj_id: str | None) -> bool:
        """Always yes."""
        return True

    async def sees_all_suppliers(self, caller: Caller) -> bool:
        """No: reading across suppliers is granted by a policy, never by default."""
        return False


@dataclass(frozen=True)
class UserGrants:
    """The models one user may edit, view, and watch link events of (`*` means all)."""

    edit: frozenset[str] = frozenset()
    view: frozenset[str] = frozenset()
    watch: frozenset[str] = frozenset()
    all_suppliers: bool = False


class StaticPolicy:
    """Grants from the settings: per user, the models they may edit and view; editing implies viewing."""

    def __init__(self, grants: Mapping[str, UserGrants]) -> None:
        self._grants = dict(grants)

    def _grant(self, caller: Caller) -> UserGrants:
        return self._grants.get(caller.user) or self._grants.get("*") or UserGrants()

    async def denied_edits(self, caller: Caller, ends: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The ends of models the user's edit list does not name."""
        edit = self._grant(caller).edit
        return [] if "*" in edit else list(dict.fromkeys(end for end in ends if end[0] not in edit))

    def _may_view(self, caller: Caller, obj_id: str) -> bool:
        grant = self._grant(caller)  # editing implies viewing
        return bool({obj_id, "*"} & (grant.view | grant.edit))

    async def can_view_model(self, caller: Caller, obj_id: str, row_id: int | None) -> bool:
        """As viewing the model's instances (the policy has one grant per model)."""
        return self._may_view(caller, obj_id)

    async def denied_views(self, caller: Caller, obj_ids: list[str]) -> list[str]:
        """The models the user may neither view nor edit."""
        return [obj_id for obj_id in dict.fromkeys(obj_ids) if not self._may_view(caller, obj_id)]

    async def can_access_business(self, caller: Caller, biz_id: int) -> bool:
        """As viewing model `biz`."""
        return self._may_view(caller, "biz")

    async def can_watch(self, caller: Caller, obj_id: str | None) -> bool:
        """Whether the user's watch list names `*`, or the model when the watch is of one model's links."""
        watch = self._grant(caller).watch
        return "*" in watch or (obj_id is not None and obj_id in watch)

    async def sees_all_suppliers(self, caller: Caller) -> bool:
        """Whether the user's grant says `all_suppliers: true`."""
        return self._grant(caller).all_suppliers


@dataclass(frozen=True)
class DeniedInstance:
    """One instance the caller may not edit, with what the payload names it by."""

    obj_id: str
    model_row_id: int | None
    model_name: str
    inst_id: int
    inst_name: str


# The view actions of built-in models (CONTRACT-reads 10); set, module, process and custom mainline levels
# have none (bk-cmdb skips them).
_VIEW_ACTIONS: dict[str, tuple[str, str, str]] = {
    "host": ("view_resource_pool_host", "主机池主机查看", "host"),
    "biz": ("find_business", "业务查询", "biz"),
    "bk_biz_set_obj": ("view_business_set", "业务集查看", "business_set"),
    "bk_project": ("view_project", "项目查看", "project"),
    "plat": ("view_cloud_area", "管控区域查看", "sys_cloud_area"),
}
VIEW_UNCHECKED = frozenset({"set", "module", "process"})
# The built-in models whose type-level view denial names a resource type (bk-cmdb's gen_id.go), with its name.
_VIEW_RESOURCE_TYPES: dict[str, tuple[str, str]] = {
    "biz": ("biz", "业务"),
    "bk_biz_set_obj": ("business_set", "业务集"),
    "bk_project": ("project", "项目"),
}


async def denied_instances(
    store: AssociationStore,
    supplier_account: str,
    instances: list[tuple[str, int]],
    *,
    name_fields: Mapping[str, str] | None = None,
    named: bool = True,
) -> list[DeniedInstance]:
    """These instances as a denial's payload names them: their model's `cc_ObjDes` row and name (its id when
    the model has no row), and their own name ("" when gone, or not `named`: a decision needs no names)."""
    models = await store.find_models(sorted({obj_id for obj_id, _ in instances}), supplier_account)
    names = await store.find_names(supplier_account, instances, name_fields=name_fields) if named else {}
    denied = []
    for obj_id, inst_id in instances:
        model = models.get(obj_id)
        row_id, model_name = (model.row_id, model.name or obj_id) if model else (None, obj_id)
        denied.append(DeniedInstance(obj_id, row_id, model_name, inst_id, names.get((obj_id, inst_id), "")))
    return denied


# The edit actions of built-in models whose resource is the instance itself (CONTRACT-ui Correction a):
# action id, action name, resource type, its name.
_EDIT_ACTIONS: dict[str, tuple[str, str, str, str]] = {
    "biz": ("edit_business", "业务编辑", "biz", "业务"),
    "bk_biz_set_obj": ("edit_business_set", "业务集编辑", "business_set", "业务集"),
    "bk_project": ("edit_project", "项目编辑", "project", "项目"),
    "plat": ("edit_cloud_area", "管控区域编辑", "sys_cloud_area", "管控区域"),
}
# Models whose instances bk-cmdb authorizes through their business: set, module and custom mainline levels as the
# business topology, processes as service instances.
_BY_BUSINESS = {"process": ("edit_biz_service_instance", "服务实例编辑")}
_TOPOLOGY_EDIT = ("edit_biz_topology", "业务拓扑编辑")


@dataclass(frozen=True)
class EditTarget:
    """What editing one instance means to BlueKing IAM: the action (id, name, resource type and its name) and the
    resource's path of nodes (its IAM ancestors, then the resource itself; each with type, type name, id, name)."""

    end: tuple[str, int]
    action: tuple[str, str, str, str]
    path: list[dict[str, str]]

    def iam_object(self) -> dict[str, dict[str, Any]]:
        """The object set IAM's conditions are evaluated against: the resource's type with its id and, where it has
        ancestors, its `_bk_iam_path_` ("/biz,2/")."""
        resource = self.path[-1]
        attributes: dict[str, Any] = {"id": resource["id"]}
        if len(self.path) > 1:
            attributes["_bk_iam_path_"] = ["/" + "".join(f"{node['type']},{node['id']}/" for node in self.path[:-1])]
        return {resource["type"]: attributes}


async def edit_permission_payload(
    store: AssociationStore, supplier_account: str, ends: list[tuple[str, int]]
) -> dict[str, Any]:
    """The `permission` object of an edit denial of these instances, as bk-cmdb's GetPermissionToApply builds it
    (CONTRACT-ui Correction a): one action per action id, one inner list per instance (its IAM ancestors, then
    itself)."""
    actions: dict[str, dict[str, Any]] = {}
    for target in await edit_targets(store, supplier_account, ends):
        action = target.action
        entry = actions.setdefault(action[0], {"id": action[0], "name": action[1], "related_resource_types": [
            {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "type": action[2], "type_name": action[3],
             "instances": []}]})  # fmt: skip
        entry["related_resource_types"][0]["instances"].append(target.path)
    return {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "actions": list(actions.values())}


async def edit_targets(
    store: AssociationStore, supplier_account: str, ends: list[tuple[str, int]], *, named: bool = True
) -> list[EditTarget]:
    """What editing each of these instances means to IAM (CONTRACT-blueking 4.6): a host is edited in its business
    (`edit_biz_host`) or in the resource pool's directory (`edit_resource_pool_host`); set, module, process and
    custom mainline levels through their business; the other built-in models and custom models as themselves.
    A fixed number of reads, whatever the number of instances; none for custom models once their rows are cached,
    when the names are not wanted (a decision, not a payload)."""
    denied = await denied_instances(store, supplier_account, ends, name_fields={"host": "bk_host_innerip"}, named=named)
    mainline = await store.mainline_models(supplier_account) - {"biz", "host"}
    by_business = [d for d in denied if d.obj_id in {"set", "module", "process"} | mainline]
    placements = await store.host_placements(supplier_account, [d.inst_id for d in denied if d.obj_id == "host"])
    business_of: dict[tuple[str, int], int] = {("host", host): biz for host, (biz, _) in placements.items()}
    for obj_id in sorted({d.obj_id for d in by_business}):
        ids = [d.inst_id for d in by_business if d.obj_id == obj_id]
        for inst_id, doc in (await store.find_instances(obj_id, supplier_account, ids, ["bk_biz_id"])).items():
            if is_int64(doc.get("bk_biz_id")):
                business_of[(obj_id, inst_id)] = int(doc["bk_biz_id"])
    businesses = await store.find_instances(
        "biz", supplier_account, sorted(set(business_of.values())), ["bk_biz_name", "default"]
    )
    pool_modules = sorted({module for host, (biz, module) in placements.items()
                           if businesses.get(biz, {}).get("default") == 1})  # fmt: skip
    modules = await store.find_instances("module", supplier_account, pool_modules if named else [], ["bk_module_name"])
    targets: list[EditTarget] = []
    for item in denied:
        business = business_of.get((item.obj_id, item.inst_id))
        biz = {"type": "biz", "type_name": "业务", "id": str(business if business is not None else ""),
               "name": str(businesses.get(business or 0, {}).get("bk_biz_name", ""))}  # fmt: skip
        this = {"id": str(item.inst_id), "name": item.inst_name}
        if item.obj_id == "host":
            host = {"type": "host", "type_name": "主机", **this}
            placement = placements.get(item.inst_id)
            if placement is not None and businesses.get(placement[0], {}).get("default") == 1:
                module = str(modules.get(placement[1], {}).get("bk_module_name", ""))
                directory = {"type": "sys_host_rsc_pool_directory", "type_name": "主机池主机",
                             "id": str(placement[1]), "name": module}  # fmt: skip
                action, path = ("edit_resource_pool_host", "主机池主机编辑", "host", "主机"), [directory, host]
            else:  # a host without a placement (not seen in bk-cmdb's own data) is named alone
                action, path = ("edit_biz_host", "业务主机编辑", "host", "主机"), [biz, host] if placement else [host]
        elif item in by_business:
            action_id, action_name = _BY_BUSINESS.get(item.obj_id, _TOPOLOGY_EDIT)
            action, path = (action_id, action_name, "biz", "业务"), [biz]
        elif item.obj_id in _EDIT_ACTIONS:
            action = _EDIT_ACTIONS[item.obj_id]
            path = [{"type": action[2], "type_name": action[3], **this}]
        else:
            suffix = item.model_row_id if item.model_row_id is not None else item.obj_id
            action = (f"edit_comobj_{suffix}", f"{item.model_name}实例编辑", f"comobj_{suffix}", item.model_name)
            path = [{"type": action[2], "type_name": action[3], **this}]
        targets.append(EditTarget((item.obj_id, item.inst_id), action, path))
    return targets


def view_instances_payload(denied: list[DeniedInstance]) -> dict[str, Any]:
    """The `permission` object of a denied view of instances: one view action per model, one entry per instance."""
    return _instances_payload(denied, _VIEW_ACTIONS, ("view_comobj_{}", "{}实例查询"))


def _instances_payload(
    denied: list[DeniedInstance], builtins: Mapping[str, tuple[str, str, str]], custom: tuple[str, str]
) -> dict[str, Any]:
    actions: dict[str, dict[str, Any]] = {}
    for item in denied:
        builtin = builtins.get(item.obj_id)
        if builtin is not None:
            action_id, action_name, resource_type = builtin
        else:
            suffix = item.model_row_id if item.model_row_id is not None else item.obj_id
            action_id = custom[0].format(suffix)
            action_name = custom[1].format(item.model_name)
            resource_type = f"comobj_{suffix}"
        instance = {
            "type": resource_type,
            "type_name": item.model_name,
            "id": str(item.inst_id),
            "name": item.inst_name,
        }
        action = actions.get(action_id)
        if action is None:
            actions[action_id] = {
                "id": action_id,
                "name": action_name,
                "related_resource_types": [
                    {
                        "system_id": SYSTEM_ID,
                        "system_name": SYSTEM_NAME,
                        "type": resource_type,
                        "type_name": item.model_name,
                        "instances": [[instance]],
                    }
                ],
            }
        else:
            action["related_resource_types"][0]["instances"].append([instance])
    return {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "actions": list(actions.values())}


def view_permission_payload(obj_id: str, model_row_id: int | None, model_name: str) -> dict[str, Any]:
    """The `permission` object of a type-level denial of the view of a model's instances, as bk-cmdb's
    GetPermissionToApply builds it (CONTRACT-ui Correction a): a custom model's `view_comobj_<row>` named
    `<name>实例查询` and the built-in models' own actions; only biz, business sets and projects name their resource
    type (without instances), the others none."""
    builtin = _VIEW_ACTIONS.get(obj_id)
    if builtin is None:
        suffix = model_row_id if model_row_id is not None else obj_id
        action: dict[str, Any] = {"id": f"view_comobj_{suffix}", "name": f"{model_name}实例查询"}
        types: list[dict[str, Any]] = []
    else:
        action_id, action_name, _ = builtin
        action = {"id": action_id, "name": action_name}
        named = _VIEW_RESOURCE_TYPES.get(obj_id)
        types = (
            [{"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "type": named[0], "type_name": named[1]}]
            if named
            else []
        )
    return {
        "system_id": SYSTEM_ID,
        "system_name": SYSTEM_NAME,
        "actions": [{**action, "related_resource_types": types}],
    }


def business_access_payload(biz_id: int, biz_name: str) -> dict[str, Any]:
    """The `permission` object of a business-access denial, as bk-cmdb's GenBizBatchNoPermissionResp builds it."""
    instance = {"type": "biz", "type_name": "业务", "id": str(biz_id), "name": biz_name}
    resource = {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "type": "biz", "type_name": "业务",
                "instances": [[instance]]}  # fmt: skip
    action = {"id": "find_business_resource", "name": "业务访问", "related_resource_types": [resource]}
    return {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "actions": [action]}


def view_model_payload(model_row_id: int | None, model_name: str, obj_id: str) -> dict[str, Any]:
    """The `permission` object of a topology denial: `view_sys_model` on the model's `cc_ObjDes` row."""
    return view_models_payload([(model_row_id, model_name, obj_id)])


def view_models_payload(models: list[tuple[int | None, str, str]]) -> dict[str, Any]:
    """The `permission` object of a denial of `view_sys_model` on these models (row id, name, model id): one
    inner list of instances per model."""
    instances = [
        [{"type": "sys_model", "type_name": "模型", "id": str(row if row is not None else obj_id), "name": name}]
        for row, name, obj_id in models
    ]
    return {
        "system_id": SYSTEM_ID,
        "system_name": SYSTEM_NAME,
        "actions": [
            {
                "id": "view_sys_model",
                "name": "模型查看",
                "related_resource_types": [
                    {
                        "system_id": SYSTEM_ID,
                        "system_name": SYSTEM_NAME,
                        "type": "sys_model",
                        "type_name": "模型",
                        "instances": instances,
                    }
                ],
            }
        ],
    }


def watch_permission_payload(model: tuple[int | None, str] | None) -> dict[str, Any]:
    """The `permission` object of a denied watch: `watch_inst_asst_event`, naming the model (its `cc_ObjDes` row
    and name) when the watch was of one model's links."""
    resource: dict[str, Any] = {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "type": "inst_asst_event",
                                "type_name": "实例关联事件"}  # fmt: skip
    if model is not None:
        row_id, name = model
        resource["instances"] = [
            [{"type": "inst_asst_event", "type_name": "实例关联事件", "id": str(row_id), "name": name}]
        ]
    action = {"id": "watch_inst_asst_event", "name": "实例关联事件监听", "related_resource_types": [resource]}
    return {"system_id": SYSTEM_ID, "system_name": SYSTEM_NAME, "actions": [action]}
