"""Plain records shared by the service and storage layers (no behaviour, no driver types)."""

from __future__ import annotations

from collections.abc import Mapping as ReadOnlyDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# "unknown": a stored definition whose mapping is none of the three (corrupt data); nothing is written for it.
Mapping = Literal["1:1", "1:n", "n:n", "unknown"]
MAPPINGS: tuple[Mapping, ...] = ("1:1", "1:n", "n:n")


@dataclass(frozen=True, slots=True)
class Definition:
    """A model association definition (a `cc_ObjAsst` row)."""

    obj_asst_id: str
    obj_id: str
    asst_obj_id: str
    asst_id: str
    mapping: Mapping
    supplier_account: str


@dataclass(frozen=True, slots=True)
class LinkEnds:
    """The two instance ids of an existing link."""

    inst_id: int
    asst_inst_id: int


@dataclass(frozen=True, slots=True)
class NewLink:
    """An instance association about to be written (its id is assigned by storage)."""

    definition: Definition
    inst_id: int
    asst_inst_id: int
    supplier_account: str
    # Keys the store must keep unique, as the mapping limits the link (decided by the service): one source per
    # 1:1 definition, one target per 1:1 and 1:n definition. None where the mapping sets no limit.
    unique_source_key: str | None = None
    unique_target_key: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What `cc_ObjDes` says of a model: its row id (None where the row has none), display name and icon."""

    row_id: int | None
    name: str
    icon: str


@dataclass(frozen=True, slots=True)
class StoredLink:
    """An instance association as found in a model's table: what a delete removes."""

    id: int
    obj_asst_id: str
    asst_id: str
    obj_id: str
    inst_id: int
    asst_obj_id: str
    asst_inst_id: int
    # The document as stored, which storage archives as it was; opaque to the service.
    document: ReadOnlyDict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the audit log keeps of one created or deleted association."""

    action: Literal["create", "delete"]
    supplier_account: str
    user: str
    app_code: str
    request_id: str
    operation_time: datetime
    src_inst_id: int
    src_inst_name: str
    dest_inst_id: int
    dest_inst_name: str
    obj_asst_id: str
    asst_id: str
    src_obj_id: str
    dest_obj_id: str
