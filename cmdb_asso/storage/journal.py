"""The write journal: what a multi-document write without a transaction means to do, recorded before its first
write, and the recovery that brings any write its process did not finish to one consistent state.

Without a transaction (the embedded server, a standalone mongod) a create writes the audit record, then the
source model's table, then the target model's; a delete writes its audit records and archive copies, then
removes the link from both tables. A process killed in between leaves part of that. So every such write first
inserts one journal entry (`cmdb_asso_journal`, a collection of our own) and removes it when the write is done
(or fully undone). A create's entry holds its links and names their audit records by `_id` (the records are
written before any link); a missing copy is written from the copy present. A delete's entry holds everything it
will write or take away (the audit records, the archive copies), since what it removes is gone from the tables.

Recovery looks at entries older than any in-flight request could be and decides each link alone:

- a create whose link has a copy in at least one table is rolled forward (the missing copy is written from
  the present one): a retrying client was told the link exists, and it does;
- a create whose link has no copy anywhere is rolled back (its audit record is removed): a retrying client
  saw nothing and created its own;
- a delete whose link it claimed is always rolled forward (the remaining copies go, the audit record and
  archive copies stay or are written): it was asked for, and part of it may be gone already; a delete that
  died before its claim changed nothing, and its entry is dropped (the link may be another delete's now).

Links claimed by a delete whose process died before it wrote its journal entry are released.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import structlog
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from cmdb_asso.clock import utc_now
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import link_key
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.indexes import CLAIM, CLAIMED_AT, create_indexes
from cmdb_asso.storage.lease import LEASES, Lease
from cmdb_asso.storage.tables import AUDIT_LOG, DEL_ARCHIVE, inst_asst_table

log = structlog.get_logger(__name__)

JOURNAL = "cmdb_asso_journal"
# Who is settling an entry, and until when (epoch seconds: the embedded server reads `$set` datetimes back as
# strings): of recoverers running at once (every worker, check-links --repair), exactly one settles each entry.
RECOVERER = "recoverer"
RECOVERER_UNTIL = "recoverer_until"
# How long a recoverer holds an entry; one that died is replaced after it.
RECOVERY_CLAIM_SECONDS = 120.0


def new_token() -> str:
    """A fresh journal token."""
    return uuid.uuid4().hex


@dataclass
class Recovery:
    """What one recovery pass did."""

    rolled_forward: int = 0
    rolled_back: int = 0
    claims_released: int = 0
    entries: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        """Whether the pass changed anything."""
        return bool(self.rolled_forward or self.rolled_back or self.claims_released)


class Journal:
    """Opens and closes journal entries, and recovers the ones left behind."""

    def __init__(self, mongo: MongoConnection) -> None:
        self.mongo = mongo
        self._indexed = False
        self.rolled_forward = 0
        self.rolled_back = 0
        self.owner = new_token()

    async def _ensure_index(self) -> None:
        if not self._indexed:
            await create_indexes(self.mongo.db[JOURNAL], [IndexModel([("at", ASCENDING)], name="cmdb_asso_at")])
            self._indexed = True

    async def open(self, token: str, op: Literal["create", "delete"], body: dict[str, Any]) -> None:
        """Record the intent of a write before its first document is written."""
        await self._ensure_index()
        with translate_errors(write=True):
            await self.mongo.db[JOURNAL].insert_one({"_id": token, "op": op, "at": utc_now(), **body})

    async def narrow(self, token: str, body: dict[str, Any]) -> None:
        """Replace what an open entry says it will do (a delete that claimed fewer links than it asked for)."""
        with translate_errors(write=True):
            await self.mongo.db[JOURNAL].update_one({"_id": token}, {"$set": body})

    async def close(self, token: str) -> None:
        """The write is whole (done or undone): forget its entry. A failure only leaves work for recovery."""
        try:
            with translate_errors(write=True):
                await self.mongo.db[JOURNAL].delete_one({"_id": token})
        except Exception as exc:  # the write itself succeeded; recovery finds the entry and sees it whole
            log.warning("journal_entry_left", token=token, error=type(exc).__name__)

    async def stale_entries(self, grace_seconds: float) -> list[dict[str, Any]]:
        """Entries older than `grace_seconds`: their writers are gone."""
        cutoff = utc_now() - timedelta(seconds=grace_seconds)
        with translate_errors(write=False):
            return list(await self.mongo.db[JOURNAL].find({"at": {"$lte": cutoff}}).sort("at", 1).to_list(None))

    async def stale_claims(self, supplier_account: str, grace_seconds: float) -> list[tuple[str, dict[str, Any]]]:
        """Links claimed by a delete longer than `grace_seconds` ago, with their tables."""
        cutoff = time.time() - grace_seconds
        prefix = inst_asst_table("", supplier_account)
        found: list[tuple[str, dict[str, Any]]] = []
        with translate_errors(write=False):
            for table in sorted(await self.mongo.db.list_collection_names()):
                if not table.startswith(prefix):
                    continue
                # A claim is a token string: `$gt: ""` finds one through the claim's index on every store, where
                # the embedded server answers `$exists` by reading every row (a second at a million links).
                query = {CLAIM: {"$gt": ""}, CLAIMED_AT: {"$lte": cutoff}}
                found += [(table, doc) for doc in await self.mongo.db[table].find(query).to_list(None)]
        return found

    async def recover(self, supplier_account: str, *, grace_seconds: float) -> Recovery:
        """Bring every write left behind for longer than `grace_seconds` to one consistent state."""
        report = Recovery()
        for stale in await self.stale_entries(grace_seconds):
            entry = await self._take(stale["_id"])
            if entry is None:
                continue  # another recoverer is settling it
            report.entries += 1
            if entry.get("op") == "delete":
                await self._finish_delete(entry, report)
            else:
                await self._settle_create(entry, report)
            with translate_errors(write=True):
                await self.mongo.db[JOURNAL].delete_one({"_id": entry["_id"], RECOVERER: self.owner})
        tokens = {str(entry["_id"]) for entry in await self._all_entries()}
        # With transactions a claim never outlives its delete's transaction: no table is scanned for one.
        claims = (
            [] if await self.mongo.supports_transactions() else await self.stale_claims(supplier_account, grace_seconds)
        )
        for table, doc in claims:
            if str(doc.get(CLAIM)) in tokens:
                continue  # its delete is journalled and younger than the grace: not ours yet
            with translate_errors(write=True):
                await self.mongo.db[table].update_one(
                    {"_id": doc["_id"], CLAIM: doc[CLAIM]}, {"$unset": {CLAIM: "", CLAIMED_AT: ""}}
                )
            report.claims_released += 1
            report.details.append(f"released the delete claim on link {doc.get('id')} in {table}")
        self.rolled_forward += report.rolled_forward
        self.rolled_back += report.rolled_back
        if report.anything:
            log.warning(
                "recovered_unfinished_writes",
                rolled_forward=report.rolled_forward,
                rolled_back=report.rolled_back,
                claims_released=report.claims_released,
            )
        return report

    def recovery_lease(self, seconds: float) -> Lease:
        """The database's recovery lease, as this journal's owner holds it."""
        return Lease(self.mongo.db[LEASES], "recovery", self.owner, seconds)

    async def _take(self, token: Any) -> dict[str, Any] | None:
        """Claim an entry for this recoverer, atomically; None when another holds it (or it is gone)."""
        now = time.time()
        free = {"$or": [{RECOVERER_UNTIL: {"$exists": False}}, {RECOVERER_UNTIL: {"$lt": now}}]}
        claim = {"$set": {RECOVERER: self.owner, RECOVERER_UNTIL: now + RECOVERY_CLAIM_SECONDS}}
        with translate_errors(write=True):
            taken = await self.mongo.db[JOURNAL].find_one_and_update(
                {"_id": token, **free}, claim, return_document=ReturnDocument.AFTER
            )
        return dict(taken) if taken is not None and taken.get(RECOVERER) == self.owner else None

    async def _all_entries(self) -> list[dict[str, Any]]:
        with translate_errors(write=False):
            return list(await self.mongo.db[JOURNAL].find({}, {"_id": 1}).to_list(None))

    async def _settle_create(self, entry: dict[str, Any], report: Recovery) -> None:
        db = self.mongo.db
        tables: list[str] = list(entry.get("tables", []))
        with translate_errors(write=True):
            for item in entry.get("links", []):
                link, audit = dict(item["link"]), dict(item["audit"])
                copies = {table: doc for table in tables if (doc := await db[table].find_one(link_key(link)))}
                present = list(copies)
                missing = [table for table in tables if table not in copies]
                if present and await self._complete(copies[present[0]], audit, missing):
                    report.rolled_forward += 1
                    report.details.append(f"completed link {link['id']} ({', '.join(tables)})")
                    continue
                for table in present:
                    await db[table].delete_many(link_key(link))
                await db[AUDIT_LOG].delete_one({"_id": audit["_id"]})
                report.rolled_back += 1
                report.details.append(f"rolled back link {link['id']} that was never written whole")

    async def _complete(self, present: dict[str, Any], audit: dict[str, Any], missing: list[str]) -> bool:
        """Write the missing copies of a link from a `present` one (and the audit record, when the entry holds it
        whole); False when a unique index refuses a copy (another link took its place meanwhile), after which the
        caller rolls this link back."""
        db = self.mongo.db
        link = {key: value for key, value in present.items() if key not in (CLAIM, CLAIMED_AT)}
        for table in missing:
            try:
                await db[table].insert_one(dict(link))
            except DuplicateKeyError:
                if await db[table].find_one(link_key(link), {"_id": 1}) is None:
                    return False
                # The same link is there: written meanwhile (by its writer, or a repair). Done, not lost.
        if len(audit) > 1:
            # An entry written before entries were kept small holds the whole record. A small one names only its
            # `_id`: a create inserts every audit record before any link, so a link with a copy has its record.
            await _insert_if_missing(db[AUDIT_LOG], audit)
        return True

    async def _finish_delete(self, entry: dict[str, Any], report: Recovery) -> None:
        db = self.mongo.db
        token = entry["_id"]
        with translate_errors(write=True):
            for item in entry.get("items", []):
                link_id, tables = item["link_id"], list(item["tables"])
                details = [archive.get("detail") for archive in item.get("archives", [])]
                known = next((detail for detail in details if isinstance(detail, dict)), {"id": link_id})
                query = link_key({**known, "id": link_id})
                present = {table: doc for table in tables if (doc := await db[table].find_one(query))}
                audit = dict(item["audit"])
                claimed = any(doc.get(CLAIM) == token for doc in present.values())
                # A delete writes its audit record after its claim and removes the claimed copy last: a link is
                # this delete's while a copy carries its claim or once its audit record exists. Otherwise the
                # delete died before claiming (nothing of it happened), or another delete claimed the link.
                if not claimed and await db[AUDIT_LOG].find_one({"_id": audit["_id"]}, {"_id": 1}) is None:
                    continue
                await _insert_if_missing(db[AUDIT_LOG], audit)
                for archive in item["archives"]:
                    await _insert_if_missing(db[DEL_ARCHIVE], dict(archive))
                for table in sorted(tables, key=lambda name: present.get(name, {}).get(CLAIM) == token):
                    await db[table].delete_many(query)
                report.rolled_forward += 1
                report.details.append(f"finished deleting link {link_id}")


async def _insert_if_missing(collection: Any, doc: dict[str, Any]) -> None:
    with contextlib.suppress(DuplicateKeyError):  # written before the process died
        await collection.insert_one(doc)
