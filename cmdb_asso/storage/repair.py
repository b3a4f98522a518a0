"""`check-links`: report (and with --repair, mend) everything that keeps the store from being whole.

What it looks for:
- `unfinished_write`: a journal entry whose process died (or is still working, if it is young): recovery
  settles it (see journal.py);
- `delete_claim`: a link claimed by a delete that never journalled its work: recovery releases it;
- `half_link`: a link with a copy in one of its two models' tables only, and no journal entry to explain it
  (bk-cmdb's own crashes, older versions of this service): mended by writing the missing copy, since any
  client may have been told it exists;
- `no_audit`: a link without its create audit record: mended by writing one;
- `duplicate`: the same (bk_inst_id, bk_asst_inst_id, bk_obj_asst_id) more than once (possible wherever the
  unique index is missing): mended by archiving and deleting all but the oldest;
- `missing_unique_index`: a table without a unique index the rules rely on: reported; after the duplicates
  are gone, --repair builds it.

Every read uses an index bk-cmdb builds: links by table, audit records by their type, action and time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cmdb_asso.clock import utc_now
from cmdb_asso.domain import AuditRecord
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import archive_document, audit_document, stored_link_from
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.indexes import CLAIM, IndexManager, describe, list_indexes, table_indexes
from cmdb_asso.storage.journal import Journal
from cmdb_asso.storage.tables import AUDIT_LOG, AUDIT_SEQUENCE, DEL_ARCHIVE, inst_asst_table

REPAIR_USER = "cmdb-asso check-links"
_LINK_FIELDS = ("id", "bk_inst_id", "bk_asst_inst_id", "bk_obj_id", "bk_asst_obj_id", "bk_obj_asst_id",
                "bk_asst_id", "bk_supplier_account", "bk_biz_id", "create_time", "last_time", CLAIM)  # fmt: skip
# An audit record is written just before its link; a link is matched with audits from a little earlier.
_AUDIT_SLACK = timedelta(minutes=5)
_SEP = "\x1f"


@dataclass(frozen=True)
class Problem:
    """One inconsistency: its kind, the link (if any) and the tables concerned."""

    kind: str
    link_id: int
    tables: tuple[str, ...]
    link: dict[str, Any]
    note: str = ""

    def describe(self) -> str:
        """One line for the report."""
        if not self.link:
            return f"{self.kind} {self.note} ({', '.join(self.tables)})"
        ends = f"{self.link.get('bk_obj_id')}:{self.link.get('bk_inst_id')}"
        ends += f" -> {self.link.get('bk_asst_obj_id')}:{self.link.get('bk_asst_inst_id')}"
        where = ", ".join(self.tables)
        note = f" {self.note}" if self.note else ""
        return f"{self.kind} id={self.link_id} {self.link.get('bk_obj_asst_id')} {ends} ({where}){note}"


def _audit_key(src: Any, dst: Any, obj_asst_id: Any) -> tuple[int, int, str]:
    return int(src), int(dst), str(obj_asst_id)


def _created(link: dict[str, Any]) -> datetime | None:
    created = link.get("create_time")
    return created if isinstance(created, datetime) else None


async def _tables(mongo: MongoConnection, supplier_account: str) -> list[str]:
    prefix = inst_asst_table("", supplier_account)
    with translate_errors(write=False):
        return sorted(name for name in await mongo.db.list_collection_names() if name.startswith(prefix))


async def find_problems(
    mongo: MongoConnection, supplier_account: str, *, grace_seconds: float = 60.0, since_hours: float = 0
) -> list[Problem]:
    """Everything recovery and repair would mend; links younger than `grace_seconds` may still be being
    written and are left out of the link checks; `since_hours` (0: all) limits those checks to recent links."""
    problems = await _journal_problems(mongo, supplier_account, grace_seconds)
    journalled = {problem.link_id for problem in problems if problem.kind == "unfinished_write"}
    now = utc_now()
    cutoff = now - timedelta(seconds=grace_seconds)
    oldest = now - timedelta(hours=since_hours) if since_hours else None
    seen: dict[int, tuple[dict[str, Any], set[str]]] = {}
    tables = await _tables(mongo, supplier_account)
    with translate_errors(write=False):
        for table in tables:
            state = describe(table, await list_indexes(mongo.db[table]), table_indexes(mongo))
            if not state.complete:
                absent = [name for name, ok in (("pair", state.unique_link), ("source guard", state.src_guard),
                                                ("target guard", state.dst_guard)) if not ok]  # fmt: skip
                problems.append(Problem("missing_unique_index", 0, (table,), {}, "unique: " + ", ".join(absent)))
            query: dict[str, Any] = {"create_time": {"$gte": oldest}} if oldest else {}
            async for link in mongo.db[table].find(query, {"_id": 0, **dict.fromkeys(_LINK_FIELDS, 1)}):
                entry = seen.setdefault(int(link["id"]), (link, set()))
                entry[1].add(table)
        problems += await _duplicates(mongo, tables, supplier_account)
    settled = [
        (link_id, link, present)
        for link_id, (link, present) in sorted(seen.items())
        if link_id not in journalled and CLAIM not in link and ((_created(link) or cutoff) <= cutoff)
    ]
    audited = await _audited(mongo, [link for _, link, _ in settled])
    for link_id, link, present in settled:
        expected = {inst_asst_table(str(link[key]), supplier_account) for key in ("bk_obj_id", "bk_asst_obj_id")}
        if expected - present:
            problems.append(Problem("half_link", link_id, tuple(sorted(present)), link))
        elif _audit_key(link["bk_inst_id"], link["bk_asst_inst_id"], link.get("bk_obj_asst_id")) not in audited:
            problems.append(Problem("no_audit", link_id, tuple(sorted(present)), link))
    return problems


async def _journal_problems(mongo: MongoConnection, supplier_account: str, grace_seconds: float) -> list[Problem]:
    journal = Journal(mongo)
    problems = []
    entries = await journal.stale_entries(0)
    for entry in entries:
        young = (utc_now() - entry["at"]).total_seconds() < grace_seconds if isinstance(entry["at"], datetime) else 0
        note = "(young: may still be in flight)" if young else "(its process is gone)"
        links = [item["link"] for item in entry.get("links", [])]
        links += [{"id": item["link_id"], "tables": item["tables"]} for item in entry.get("items", [])]
        for link in links:
            kind = f"unfinished_write {entry.get('op')}"
            problems.append(Problem("unfinished_write", int(link["id"]), tuple(entry.get("tables", [])), link,
                                    f"{kind} {note}"))  # fmt: skip
    journalled_deletes = {str(entry["_id"]) for entry in entries}
    for table, doc in await journal.stale_claims(supplier_account, grace_seconds):
        if str(doc.get(CLAIM)) in journalled_deletes:
            continue  # its delete is journalled: reported once, above, as an unfinished write
        problems.append(Problem("delete_claim", int(doc["id"]), (table,), doc, "(its delete never started)"))
    return problems


async def _audited(mongo: MongoConnection, links: list[dict[str, Any]]) -> set[tuple[int, int, str]]:
    """The (source, target, definition) of create audit records from the links' time span, read through
    bk-cmdb's {audit_type, resource_type, action, operation_time} index."""
    times = [created for link in links if (created := _created(link)) is not None]
    query: dict[str, Any] = {"audit_type": "model_instance", "resource_type": "instance_association",
                             "action": "create"}  # fmt: skip
    if times and len(times) == len(links):
        query["operation_time"] = {"$gte": min(times) - _AUDIT_SLACK, "$lte": max(times) + _AUDIT_SLACK}
    with translate_errors(write=False):
        return {
            _audit_key(doc.get("resource_id"), detail.get("dest_inst_id"), detail.get("asst_id"))
            async for doc in mongo.db[AUDIT_LOG].find(query, {"_id": 0, "resource_id": 1, "operation_detail": 1})
            if isinstance(detail := doc.get("operation_detail"), dict)
            and doc.get("resource_id") is not None
            and detail.get("dest_inst_id") is not None
        }


async def _duplicates(mongo: MongoConnection, tables: list[str], supplier_account: str) -> list[Problem]:
    problems = []
    for table in tables:
        obj_id = table.removeprefix(inst_asst_table("", supplier_account))
        # One string key per (source, target, definition): a compound group key is not evaluated by every
        # server that speaks MongoDB's protocol (the embedded one takes it literally), a string one is.
        key = {"$concat": [{"$toString": "$bk_inst_id"}, _SEP, {"$toString": "$bk_asst_inst_id"}, _SEP,
                           "$bk_obj_asst_id"]}  # fmt: skip
        pipeline: list[dict[str, Any]] = [
            {"$match": {"bk_obj_id": obj_id}},
            {"$project": {"_id": 0, "key": key, "id": 1}},
            {"$group": {"_id": "$key", "ids": {"$push": "$id"}, "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}},
        ]
        cursor = mongo.db[table].aggregate(pipeline)
        if inspect.isawaitable(cursor):  # pymongo's async aggregate is a coroutine, motor's is not
            cursor = await cursor
        for group in await cursor.to_list(None):
            ids = sorted(int(link_id) for link_id in group["ids"])
            src, dst, obj_asst_id = str(group["_id"]).split(_SEP, 2)
            link = {"id": ids[0], "bk_obj_id": obj_id, "bk_inst_id": int(src), "bk_asst_inst_id": int(dst),
                    "bk_obj_asst_id": obj_asst_id, "bk_asst_obj_id": "?"}  # fmt: skip
            for extra in ids[1:]:
                problems.append(Problem("duplicate", extra, (table,), {**link, "id": extra}, f"(repeats id {ids[0]})"))
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


async def repair(
    mongo: MongoConnection, supplier_account: str, problems: list[Problem], *, grace_seconds: float
) -> int:
    """Mend the problems; return how many were mended. Unfinished writes and delete claims are settled by
    recovery (those older than `grace_seconds`); half links are completed; links without an audit record get
    one; extra duplicates are archived and deleted; then the missing unique indexes are built."""
    report = await Journal(mongo).recover(supplier_account, grace_seconds=grace_seconds)
    mended = report.rolled_forward + report.rolled_back + report.claims_released
    ids = IdAllocator(mongo, block_size=max(len(problems), 1))
    now = utc_now()
    with translate_errors(write=True):
        for problem in problems:
            if problem.kind == "half_link":
                stored = await mongo.db[problem.tables[0]].find_one({"id": problem.link_id}, {"_id": 0})
                if stored is None:
                    continue
                for obj_id in dict.fromkeys((str(stored["bk_obj_id"]), str(stored["bk_asst_obj_id"]))):
                    table = inst_asst_table(obj_id, supplier_account)
                    if table not in problem.tables:
                        await mongo.db[table].insert_one(dict(stored))
                problem = Problem("no_audit", problem.link_id, problem.tables, stored)
                if await _has_create_audit(mongo, stored):
                    mended += 1
                    continue
            if problem.kind == "no_audit":
                (audit_id,) = await ids.take(AUDIT_SEQUENCE)
                record = _audit_for(problem.link, "create", supplier_account)
                await mongo.db[AUDIT_LOG].insert_one(audit_document(record, audit_id))
                mended += 1
            elif problem.kind == "duplicate":
                await _remove_duplicate(mongo, supplier_account, problem, ids, now)
                mended += 1
    if any(problem.kind == "missing_unique_index" for problem in problems):
        states = await IndexManager(mongo).prepare_all(await _tables(mongo, supplier_account))
        mended += sum(state.complete for state in states if any(state.table in p.tables for p in problems))
    return mended


async def _has_create_audit(mongo: MongoConnection, link: dict[str, Any]) -> bool:
    return _audit_key(link["bk_inst_id"], link["bk_asst_inst_id"], link.get("bk_obj_asst_id")) in await _audited(
        mongo, [link]
    )


async def _remove_duplicate(
    mongo: MongoConnection, supplier_account: str, problem: Problem, ids: IdAllocator, now: datetime
) -> None:
    stored = await mongo.db[problem.tables[0]].find_one({"id": problem.link_id})
    if stored is None:
        return
    for obj_id in dict.fromkeys((str(stored["bk_obj_id"]), str(stored["bk_asst_obj_id"]))):
        table = inst_asst_table(obj_id, supplier_account)
        for copy in await mongo.db[table].find({"id": problem.link_id}).to_list(None):
            await mongo.db[DEL_ARCHIVE].insert_one(archive_document(table, stored_link_from(copy), now))
            await mongo.db[table].delete_one({"_id": copy["_id"]})
    (audit_id,) = await ids.take(AUDIT_SEQUENCE)
    await mongo.db[AUDIT_LOG].insert_one(audit_document(_audit_for(stored, "delete", supplier_account), audit_id))
