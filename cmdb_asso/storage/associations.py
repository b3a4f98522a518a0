"""Instance associations in bk-cmdb's tables: definitions, instances, links and their audit records."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from bson.int64 import Int64
from pymongo.errors import DuplicateKeyError, PyMongoError

from cmdb_asso.domain import MAPPINGS, AuditRecord, Definition, LinkEnds, Mapping, NewLink
from cmdb_asso.storage.client import Mongo, translate_errors
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.indexes import DST_GUARD, SRC_GUARD, IndexManager
from cmdb_asso.storage.tables import (
    AUDIT_LOG,
    AUDIT_SEQUENCE,
    INST_ASST_SEQUENCE,
    OBJ_ASST,
    OBJ_DES,
    inst_asst_table,
    instance_table,
)

log = structlog.get_logger(__name__)

RESOURCE_NAME_MAX_BYTES = 256
_TRANSACTION_ATTEMPTS = 5


class LinkConflict(Exception):
    """The store refused a link because a unique index already holds its key (a rule was raced)."""


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` of UTF-8 without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def link_document(link: NewLink, link_id: int) -> dict[str, Any]:
    """The stored form of a link: bk-cmdb's fields and types, plus our guard fields where the mapping needs them."""
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
    }
    if definition.mapping == "1:1":
        doc[SRC_GUARD] = f"{definition.obj_asst_id}:{link.inst_id}"
    if definition.mapping in ("1:1", "1:n"):
        doc[DST_GUARD] = f"{definition.obj_asst_id}:{link.asst_inst_id}"
    return doc


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


def _definition_from(doc: dict[str, Any]) -> Definition:
    stored = doc.get("mapping")
    checked: Mapping = next((mapping for mapping in MAPPINGS if mapping == stored), "n:n")
    if stored not in MAPPINGS:
        log.warning("definition_mapping_unknown", bk_obj_asst_id=doc.get("bk_obj_asst_id"), mapping=stored)
    return Definition(
        obj_asst_id=str(doc.get("bk_obj_asst_id", "")),
        obj_id=str(doc.get("bk_obj_id", "")),
        asst_obj_id=str(doc.get("bk_asst_obj_id", "")),
        asst_id=str(doc.get("bk_asst_id", "")),
        mapping=checked,
        supplier_account=str(doc.get("bk_supplier_account", "")),
    )


class AssociationStore:
    """Reads and writes of instance associations; every driver call of the service goes through here."""

    def __init__(self, mongo: Mongo, *, id_block_size: int, definition_cache_seconds: float) -> None:
        self.mongo = mongo
        self.ids = IdAllocator(mongo, id_block_size)
        self.indexes = IndexManager(mongo)
        self._definition_ttl = definition_cache_seconds
        self._definitions: dict[tuple[str, tuple[str, ...]], tuple[float, list[Definition]]] = {}

    async def find_definitions(self, obj_asst_id: str, suppliers: tuple[str, ...]) -> list[Definition]:
        """Definitions with this id under any of `suppliers`; cached for the configured seconds."""
        key = (obj_asst_id, suppliers)
        cached = self._definitions.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        query = {"bk_obj_asst_id": obj_asst_id, "bk_supplier_account": {"$in": list(suppliers)}}
        with translate_errors(write=False):
            docs = await self.mongo.db[OBJ_ASST].find(query, {"_id": 0}).to_list(None)
        definitions = [_definition_from(doc) for doc in docs]
        if self._definition_ttl > 0 and definitions:
            self._definitions[key] = (now + self._definition_ttl, definitions)
        return definitions

    def forget_definitions(self) -> None:
        """Drop the definition cache (a changed definition is then seen at once)."""
        self._definitions.clear()

    async def find_conflicting_links(self, link: NewLink) -> list[LinkEnds]:
        """Existing links of the definition that share the new link's source or target where its mapping limits it."""
        definition = link.definition
        same_pair = {"bk_inst_id": link.inst_id, "bk_asst_inst_id": link.asst_inst_id}
        same_source = {"bk_obj_id": definition.obj_id, "bk_inst_id": link.inst_id}
        same_target = {"bk_asst_obj_id": definition.asst_obj_id, "bk_asst_inst_id": link.asst_inst_id}
        clauses = {"1:1": [same_source, same_target], "1:n": [same_target, same_pair], "n:n": [same_pair]}
        query = {"bk_obj_asst_id": definition.obj_asst_id, "$or": clauses[definition.mapping]}
        table = inst_asst_table(definition.obj_id, link.supplier_account)
        projection = {"_id": 0, "bk_inst_id": 1, "bk_asst_inst_id": 1}
        with translate_errors(write=False):
            docs = await self.mongo.db[table].find(query, projection).limit(3).to_list(None)
        return [LinkEnds(int(doc["bk_inst_id"]), int(doc["bk_asst_inst_id"])) for doc in docs]

    async def find_instance_names(self, obj_id: str, supplier_account: str, ids: list[int]) -> dict[int, str]:
        """The names of those instances of `obj_id` that exist, by id."""
        table = instance_table(obj_id, supplier_account)
        projection = {"_id": 0, table.id_field: 1, table.name_field: 1}
        with translate_errors(write=False):
            docs = await self.mongo.db[table.collection].find(table.filter_for(ids), projection).to_list(None)
        return {int(doc[table.id_field]): str(doc.get(table.name_field, "")) for doc in docs}

    async def create_link(self, link: NewLink, audit: AuditRecord) -> int:
        """Write the link to both models' tables and its audit record, all or nothing; return its id.

        Raises LinkConflict when a unique index refuses the link.
        """
        definition = link.definition
        tables = [inst_asst_table(definition.obj_id, link.supplier_account)]
        if definition.asst_obj_id != definition.obj_id:
            tables.append(inst_asst_table(definition.asst_obj_id, link.supplier_account))
        await asyncio.gather(*(self.indexes.ensure(table) for table in tables))
        (link_id,) = await self.ids.take(INST_ASST_SEQUENCE)
        (audit_id,) = await self.ids.take(AUDIT_SEQUENCE)
        doc = link_document(link, link_id)
        audit_doc = audit_document(audit, audit_id)
        try:
            with translate_errors(write=True):
                if self.mongo.transactions:
                    await self._write_in_transaction(tables, doc, audit_doc)
                else:
                    await self._write_with_undo(tables, doc, audit_doc)
        except DuplicateKeyError as exc:
            raise LinkConflict(str(exc.details or "")) from exc
        return link_id

    async def _insert_link(self, table: str, doc: dict[str, Any], session: Any) -> None:
        await self.mongo.db[table].insert_one(dict(doc), session=session)

    async def _insert_audit(self, doc: dict[str, Any], session: Any) -> None:
        await self.mongo.db[AUDIT_LOG].insert_one(dict(doc), session=session)

    async def _write_in_transaction(self, tables: list[str], doc: dict[str, Any], audit: dict[str, Any]) -> None:
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                async with self.mongo.transaction() as session:
                    for table in tables:
                        await self._insert_link(table, doc, session)
                    await self._insert_audit(audit, session)
                return
            except PyMongoError as exc:
                if not exc.has_error_label("TransientTransactionError") or attempt == _TRANSACTION_ATTEMPTS:
                    raise
                await asyncio.sleep(0.005 * attempt)

    async def _write_with_undo(self, tables: list[str], doc: dict[str, Any], audit: dict[str, Any]) -> None:
        # The audit record goes first, so that no link ever exists without its record; a crash between the
        # writes leaves a record without a link, or a link in one table only, both of which `check-links` finds.
        await self._insert_audit(audit, None)
        written: list[str] = []
        try:
            for table in tables:
                await self._insert_link(table, doc, None)
                written.append(table)
        except BaseException:
            await self._undo(written, doc["id"], audit["id"])
            raise

    async def _undo(self, tables: list[str], link_id: int, audit_id: int) -> None:
        undo = [(table, link_id) for table in tables] + [(AUDIT_LOG, audit_id)]
        for table, doc_id in undo:
            try:
                await asyncio.shield(self.mongo.db[table].delete_one({"id": doc_id}))
            except (PyMongoError, asyncio.CancelledError):
                log.error("undo_failed", table=table, id=int(doc_id))

    async def find_models(self, obj_ids: list[str]) -> dict[str, tuple[int | None, str]]:
        """Row id and display name of each model in `cc_ObjDes`, by `bk_obj_id`."""
        with translate_errors(write=False):
            docs = (
                await self.mongo.db[OBJ_DES]
                .find({"bk_obj_id": {"$in": obj_ids}}, {"_id": 0, "bk_obj_id": 1, "bk_obj_name": 1, "id": 1})
                .to_list(None)
            )
        return {
            str(doc["bk_obj_id"]): (
                int(doc["id"]) if doc.get("id") is not None else None,
                str(doc.get("bk_obj_name", "")),
            )
            for doc in docs
        }
