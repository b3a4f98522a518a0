"""`check-links`: find (and with --repair, fix) half links and links without an audit record.

A half link is a link whose copy is missing from one of its two models' tables: what a process that could not
use a transaction leaves when it dies between the two writes, with its undo unfinished. The scan reads every
association table of the supplier once; links younger than the grace period are left alone, so that it is safe
to run while the service is writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cmdb_asso.clock import utc_now
from cmdb_asso.domain import AuditRecord
from cmdb_asso.storage.associations import archive_document, audit_document
from cmdb_asso.storage.client import Mongo, translate_errors
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.tables import AUDIT_LOG, AUDIT_SEQUENCE, DEL_ARCHIVE, inst_asst_table

REPAIR_USER = "cmdb-asso check-links"
_LINK_FIELDS = ("id", "bk_inst_id", "bk_asst_inst_id", "bk_obj_id", "bk_asst_obj_id", "bk_obj_asst_id",
                "bk_asst_id", "bk_supplier_account", "create_time")  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One inconsistency: its kind, the link and the tables concerned."""

    kind: str  # "half_link" or "no_audit"
    link_id: int
    tables: tuple[str, ...]
    link: dict[str, Any]

    def describe(self) -> str:
        """One line for the report."""
        ends = f"{self.link.get('bk_obj_id')}:{self.link.get('bk_inst_id')}"
        ends += f" -> {self.link.get('bk_asst_obj_id')}:{self.link.get('bk_asst_inst_id')}"
        where = ", ".join(self.tables)
        return f"{self.kind} id={self.link_id} {self.link.get('bk_obj_asst_id')} {ends} ({where})"


def _audit_key(src: Any, dst: Any, obj_asst_id: Any) -> tuple[int, int, str]:
    return int(src), int(dst), str(obj_asst_id)


def _older_than(link: dict[str, Any], cutoff: datetime) -> bool:
    created = link.get("create_time")
    return not isinstance(created, datetime) or created < cutoff


async def find_problems(mongo: Mongo, supplier_account: str, *, grace_seconds: float = 60.0) -> list[Problem]:
    """Scan every association table of the supplier for half links and links without an audit record."""
    prefix = inst_asst_table("", supplier_account)
    cutoff = utc_now() - timedelta(seconds=grace_seconds)
    with translate_errors(write=False):
        tables = sorted(name for name in await mongo.db.list_collection_names() if name.startswith(prefix))
        seen: dict[int, tuple[dict[str, Any], set[str]]] = {}
        projection = {"_id": 0, **dict.fromkeys(_LINK_FIELDS, 1)}
        for table in tables:
            async for link in mongo.db[table].find({}, projection):
                entry = seen.setdefault(int(link["id"]), (link, set()))
                entry[1].add(table)
        audited = {
            _audit_key(doc.get("resource_id"), detail.get("dest_inst_id"), detail.get("asst_id"))
            async for doc in mongo.db[AUDIT_LOG].find(
                {"resource_type": "instance_association", "action": "create"},
                {"_id": 0, "resource_id": 1, "operation_detail": 1},
            )
            if isinstance(detail := doc.get("operation_detail"), dict)
            and doc.get("resource_id") is not None
            and detail.get("dest_inst_id") is not None
        }
    problems = []
    for link_id, (link, present) in sorted(seen.items()):
        if not _older_than(link, cutoff):
            continue
        expected = {inst_asst_table(str(link[key]), supplier_account) for key in ("bk_obj_id", "bk_asst_obj_id")}
        if expected - present:
            problems.append(Problem("half_link", link_id, tuple(sorted(present)), link))
        elif _audit_key(link["bk_inst_id"], link["bk_asst_inst_id"], link.get("bk_obj_asst_id")) not in audited:
            problems.append(Problem("no_audit", link_id, tuple(sorted(present)), link))
    return problems


def _audit_for(link: dict[str, Any], action: str, supplier_account: str) -> AuditRecord:
    return AuditRecord(
        action="delete" if action == "delete" else "create",
        supplier_account=supplier_account,
        user=REPAIR_USER,
        app_code="",
        request_id="check-links",
        operation_time=utc_now(),
        src_inst_id=int(link["bk_inst_id"]),
        src_inst_name="",
        dest_inst_id=int(link["bk_asst_inst_id"]),
        dest_inst_name="",
        obj_asst_id=str(link.get("bk_obj_asst_id", "")),
        asst_id=str(link.get("bk_asst_id", "")),
        src_obj_id=str(link.get("bk_obj_id", "")),
        dest_obj_id=str(link.get("bk_asst_obj_id", "")),
    )


async def repair(mongo: Mongo, supplier_account: str, problems: list[Problem]) -> None:
    """Fix each problem: a half link is removed (archived, and audited as deleted, as its undo would have done);
    a link without an audit record gets one."""
    ids = IdAllocator(mongo, block_size=max(len(problems), 1))
    now = utc_now()
    with translate_errors(write=True):
        for problem in problems:
            (audit_id,) = await ids.take(AUDIT_SEQUENCE)
            if problem.kind == "no_audit":
                record = _audit_for(problem.link, "create", supplier_account)
                await mongo.db[AUDIT_LOG].insert_one(audit_document(record, audit_id))
                continue
            for table in problem.tables:
                copy = await mongo.db[table].find_one({"id": problem.link_id})
                if copy is None:
                    continue
                await mongo.db[DEL_ARCHIVE].insert_one(archive_document(table, copy, now))
                await mongo.db[table].delete_one({"_id": copy["_id"]})
            record = _audit_for(problem.link, "delete", supplier_account)
            await mongo.db[AUDIT_LOG].insert_one(audit_document(record, audit_id))
