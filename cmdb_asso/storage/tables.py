"""bk-cmdb's table names and instance id fields."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

OBJ_ASST = "cc_ObjAsst"
ASST_DES = "cc_AsstDes"
OBJ_DES = "cc_ObjDes"
ID_GENERATOR = "cc_idgenerator"
AUDIT_LOG = "cc_AuditLog"
DEL_ARCHIVE = "cc_DelArchive"
MODULE_HOST = "cc_ModuleHostConfig"
SYSTEM = "cc_System"
OBJECT_UNIQUE = "cc_ObjectUnique"
ATTRIBUTES = "cc_ObjAttDes"

SUPPLIER_FIELD = "bk_supplier_account"
# The supplier whose models, definitions and instances every supplier shares.
SHARED_SUPPLIER = "0"

# The id sequences in cc_idgenerator.
INST_ASST_SEQUENCE = "cc_InstAsst"
AUDIT_SEQUENCE = "cc_AuditLog"


@dataclass(frozen=True, slots=True)
class InstanceTable:
    """Where one model's instances live and how they are identified and named."""

    collection: str
    id_field: str
    name_field: str
    base_filter: tuple[tuple[str, str], ...] = ()
    # The suppliers whose instances the caller may see here (CONTRACT-reads 10, "Supplier filter").
    owners: tuple[str, ...] = ()

    def filter_for(self, ids: list[int]) -> dict[str, Any]:
        """A filter matching the instances with these ids that the caller's supplier may see."""
        return self.scoped({self.id_field: ids[0] if len(ids) == 1 else {"$in": ids}})

    def scoped(self, query: dict[str, Any]) -> dict[str, Any]:
        """`query` limited to this model's instances that the caller's supplier may see."""
        scoped: dict[str, Any] = {**dict(self.base_filter), **query}
        if self.owners:
            scoped[SUPPLIER_FIELD] = one_or_in(self.owners)
        return scoped


def visible_suppliers(supplier_account: str) -> tuple[str, ...]:
    """bk-cmdb's SetQueryOwner: a supplier reads its own rows and the shared supplier's."""
    return tuple(dict.fromkeys((SHARED_SUPPLIER, supplier_account)))


def owner_filter(supplier_account: str) -> dict[str, Any]:
    """The supplier condition bk-cmdb adds to every read of models, definitions, links and instances."""
    return {SUPPLIER_FIELD: one_or_in(visible_suppliers(supplier_account))}


def one_or_in(values: Sequence[Any]) -> Any:
    """A filter value matching any of `values`: the value itself when there is one (an equality every store
    serves from an index), else `$in`."""
    return values[0] if len(values) == 1 else {"$in": list(values)}


def dense_runs(values: Iterable[int], spread: int = 4) -> list[list[int]]:
    """`values` in order, cut into runs that each span at most `spread` times as many integers as they hold."""
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and value - runs[-1][0] < spread * (len(runs[-1]) + 1):
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def run_filter(run: list[int]) -> Any:
    """A filter value matching a run of `dense_runs` through the field's index on the embedded server, whose `$in`
    alone reads every row: the value itself, or the run's range narrowed by its `$in`."""
    return run[0] if len(run) == 1 else {"$gte": run[0], "$lte": run[-1], "$in": run}


_BUILTIN: dict[str, InstanceTable] = {
    "biz": InstanceTable("cc_ApplicationBase", "bk_biz_id", "bk_biz_name"),
    "set": InstanceTable("cc_SetBase", "bk_set_id", "bk_set_name"),
    "module": InstanceTable("cc_ModuleBase", "bk_module_id", "bk_module_name"),
    "host": InstanceTable("cc_HostBase", "bk_host_id", "bk_host_name"),
    "process": InstanceTable("cc_Process", "bk_process_id", "bk_process_name"),
    "plat": InstanceTable("cc_PlatBase", "bk_cloud_id", "bk_cloud_name"),
    "bk_biz_set_obj": InstanceTable("cc_BizSetBase", "bk_biz_set_id", "bk_biz_set_name"),
    "bk_project": InstanceTable("cc_ProjectBase", "id", "bk_project_name"),
}


def instance_table(obj_id: str, supplier_account: str) -> InstanceTable:
    """The table holding `obj_id`'s instances, with the suppliers whose instances the caller sees there: hosts
    are read by bk-cmdb's host reader, with the caller's supplier exactly; every other model as SetQueryOwner."""
    builtin = _BUILTIN.get(obj_id)
    if builtin is not None:
        owners = (supplier_account,) if obj_id == "host" else visible_suppliers(supplier_account)
        return replace(builtin, owners=owners)
    return InstanceTable(
        f"cc_ObjectBase_{supplier_account}_pub_{obj_id}",
        "bk_inst_id",
        "bk_inst_name",
        (("bk_obj_id", obj_id),),
        visible_suppliers(supplier_account),
    )


def inst_asst_table(obj_id: str, supplier_account: str) -> str:
    """The table holding the instance associations of `obj_id` (as source or target)."""
    return f"cc_InstAsst_{supplier_account}_pub_{obj_id}"
