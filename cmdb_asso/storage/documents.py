"""The stored forms of bk-cmdb's documents: links, audit records, archive copies and definitions."""

from __future__ import annotations

import base64
from collections.abc import Mapping as ReadOnlyDict
from datetime import UTC, datetime
from typing import Any

import structlog
from bson import Binary, Regex, Timestamp
from bson.int64 import Int64
from bson.objectid import ObjectId

from cmdb_asso.domain import MAPPINGS, AuditRecord, Definition, Mapping, NewLink, StoredLink
from cmdb_asso.storage.indexes import CLAIM, CLAIMED_AT, DST_GUARD, SRC_GUARD

log = structlog.get_logger(__name__)

RESOURCE_NAME_MAX_BYTES = 256
# Fields of ours (and MongoDB's `_id`) that no answer shows.
HIDDEN_FIELDS = {"_id": 0, SRC_GUARD: 0, DST_GUARD: 0, CLAIM: 0, CLAIMED_AT: 0}


# The first four bytes of the `_id` this service gives a link's copies (an ObjectId's timestamp, here zero).
_LINK_OID_PREFIX = bytes(4)


def link_oid(link_id: int) -> ObjectId:
    """The `_id` of every copy of link `link_id` that this service writes on the embedded server: the id in an
    ObjectId's last eight bytes, so that a link is found by its id through the `_id` index there, where a field
    named `id` is never indexed. (MongoDB indexes `id`: there `_id`s are the driver's, growing with their
    writing time as bk-cmdb's do.)"""
    return ObjectId(_LINK_OID_PREFIX + link_id.to_bytes(8, "big", signed=True))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` of UTF-8 without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def link_document(link: NewLink, link_id: int, now: datetime) -> dict[str, Any]:
    """The stored form of a link: bk-cmdb's fields and types, plus the guard fields the service asked for."""
    definition = link.definition
    doc: dict[str, Any] = {
        "id": Int64(link_id),
        "bk_inst_id": Int64(link.inst_id),
        "bk_obj_id": definition.obj_id,
        "bk_asst_inst_id": Int64(link.asst_inst_id),
        "bk_asst_obj_id": definition.asst_obj_id,
        "bk_supplier_account": link.supplier_account,
        "bk_obj_asst_id": definition.obj_asst_id,
        "bk_asst_id": definition.asst_id,
        "bk_biz_id": Int64(0),
        "create_time": now,
        "last_time": now,
    }
    if link.unique_source_key is not None:
        doc[SRC_GUARD] = link.unique_source_key
    if link.unique_target_key is not None:
        doc[DST_GUARD] = link.unique_target_key
    return doc


def archive_document(table: str, link: StoredLink, now: datetime, oid: Any = None) -> dict[str, Any]:
    """The `cc_DelArchive` copy of a link removed from `table` (`oid`: that table's copy's `_id`, when it is not
    the document the link was read from), its `_id` kept as text."""
    return {
        "oid": str(oid if oid is not None else link.document.get("_id", "")),
        "coll": table,
        "time": now,
        "detail": public_fields(link.document),
    }


# The keys a link is looked up by: its unique triple, which every store indexes (the embedded server never
# indexes a field named `id`), and its id.
LINK_KEYS = ("bk_inst_id", "bk_asst_inst_id", "bk_obj_asst_id", "id")


def link_key(link: ReadOnlyDict[str, Any]) -> dict[str, Any]:
    """The filter that finds this link (a stored document, or what an event or journal keeps of one) by keys the
    store indexes."""
    return {key: link[key] for key in LINK_KEYS if key in link}


def stored_link_from(doc: dict[str, Any]) -> StoredLink:
    """A link document of a model's table as a StoredLink (the document kept for its archive copy)."""
    return StoredLink(
        id=int(doc["id"]),
        obj_asst_id=str(doc.get("bk_obj_asst_id", "")),
        asst_id=str(doc.get("bk_asst_id", "")),
        obj_id=str(doc["bk_obj_id"]),
        inst_id=int(doc["bk_inst_id"]),
        asst_obj_id=str(doc["bk_asst_obj_id"]),
        asst_inst_id=int(doc["bk_asst_inst_id"]),
        document=doc,
    )


def audit_document(record: AuditRecord, audit_id: int) -> dict[str, Any]:
    """The stored form of an audit record, as bk-cmdb writes it for instance associations."""
    return {
        "id": Int64(audit_id),
        "audit_type": "model_instance",
        "resource_type": "instance_association",
        "action": record.action,
        "operate_from": "user",
        "operation_time": record.operation_time,
        "bk_supplier_account": record.supplier_account,
        "user": record.user,
        "bk_biz_id": Int64(0),
        "resource_id": Int64(record.src_inst_id),
        "resource_name": truncate_utf8(record.src_inst_name, RESOURCE_NAME_MAX_BYTES),
        "code": record.app_code,
        "rid": record.request_id,
        "extend_resource_name": "",
        "operation_detail": {
            "asst_id": record.obj_asst_id,
            "asst_kind": record.asst_id,
            "src_obj_id": record.src_obj_id,
            "dest_obj_id": record.dest_obj_id,
            "dest_inst_id": Int64(record.dest_inst_id),
            "dest_inst_name": record.dest_inst_name,
        },
    }


def definition_from(doc: dict[str, Any]) -> Definition:
    """A `cc_ObjAsst` row as a Definition; a mapping that is none of the three becomes "unknown" (logged)."""
    stored = doc.get("mapping")
    checked: Mapping = next((mapping for mapping in MAPPINGS if mapping == stored), "unknown")
    if checked == "unknown":
        log.warning("definition_mapping_unknown", bk_obj_asst_id=doc.get("bk_obj_asst_id"), mapping=stored)
    return Definition(
        obj_asst_id=str(doc.get("bk_obj_asst_id", "")),
        obj_id=str(doc.get("bk_obj_id", "")),
        asst_obj_id=str(doc.get("bk_asst_obj_id", "")),
        asst_id=str(doc.get("bk_asst_id", "")),
        mapping=checked,
        supplier_account=str(doc.get("bk_supplier_account", "")),
    )


def public_fields(doc: ReadOnlyDict[str, Any]) -> dict[str, Any]:
    """A stored link without MongoDB's `_id` and our own fields."""
    return {key: value for key, value in doc.items() if key not in HIDDEN_FIELDS}


def plain_document(doc: ReadOnlyDict[str, Any]) -> dict[str, Any]:
    """A document as plain JSON values: datetimes in UTC with their zone, ids and decimals as text, binary as
    base64 (as Go's encoder writes bytes)."""
    return {str(key): _plain(value) for key, value in doc.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, ReadOnlyDict):
        return plain_document(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | str | float | None):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)  # the driver's naive datetimes are UTC
    if isinstance(value, Binary | bytes):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Timestamp):
        return value.as_datetime()
    if isinstance(value, Regex):
        return value.pattern if isinstance(value.pattern, str) else value.pattern.decode("utf-8", "replace")
    return str(value)  # ObjectId, Decimal128, Code and the rest: their text
