"""Instance associations in bk-cmdb's tables: definitions, instances, links and their audit records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from bson.objectid import ObjectId
from cachetools import TTLCache

from cmdb_asso.clock import utc_now
from cmdb_asso.domain import AuditRecord, Definition, LinkEnds, ModelInfo, NewLink, StoredLink
from cmdb_asso.inputs import INT64_MAX, is_int64
from cmdb_asso.storage.all_or_nothing import AllOrNothing, Insert
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import (
    HIDDEN_FIELDS,
    archive_document,
    audit_document,
    definition_from,
    link_document,
    link_oid,
    plain_document,
    public_fields,
    stored_link_from,
)
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.folded_reads import LARGE_BATCH, ONE_AT_A_TIME_AT_MOST, FoldedReads, ReadPart
from cmdb_asso.storage.idempotency import report_reservation
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.indexes import CLAIM, CLAIMED_AT, IndexManager
from cmdb_asso.storage.journal import Journal, new_token
from cmdb_asso.storage.tables import (
    ATTRIBUTES,
    AUDIT_LOG,
    AUDIT_SEQUENCE,
    DEL_ARCHIVE,
    INST_ASST_SEQUENCE,
    MODULE_HOST,
    OBJ_ASST,
    OBJ_DES,
    OBJECT_UNIQUE,
    InstanceTable,
    dense_runs,
    inst_asst_table,
    instance_table,
    one_or_in,
    owner_filter,
    run_filter,
)
from cmdb_asso.storage.watch import track_changes

log = structlog.get_logger(__name__)

# Key conditions of an Excel import sent in one `$or` (a sheet has up to 1,000 rows, two ends each).
_KEY_CONDITIONS_PER_READ = 500
# Where one read per id replaces an `$in` (the embedded server), how many are sent together.
_READS_PER_WAVE = 64


class AssociationStore:
    """Reads and writes of instance associations, their definitions and instances, and their audit records."""

    def __init__(
        self,
        mongo: MongoConnection,
        *,
        id_block_size: int,
        definition_cache_seconds: float,
        fold_reads: str = "auto",
        definition_cache_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        track_changes: bool = True,
    ) -> None:
        self.mongo = mongo
        self.ids = IdAllocator(mongo, id_block_size)
        self.indexes = IndexManager(mongo)
        self.journal = Journal(mongo)
        self.reads = FoldedReads(mongo, setting=fold_reads)
        self.writer = AllOrNothing(mongo, self.journal)
        # Tables known to exist (a table is never dropped by this service).
        self._tables_seen: set[str] = set()
        # Tables whose changes the server records (see `track_changes`), before this process writes to them.
        self._tracked: set[str] = set()
        # Off when link events are (watch.enabled: off): the embedded server's change tracking then costs every
        # write of a table a stream was once opened on, for nothing.
        self.track_changes = track_changes
        self.links_created = 0
        self.links_deleted = 0
        # Keyed by a supplier the caller names: bounded, so that no caller can grow it without limit.
        self._definitions: TTLCache[tuple[str, tuple[str, ...]], list[Definition]] | None = (
            TTLCache(definition_cache_entries, definition_cache_seconds, timer=clock)
            if definition_cache_seconds > 0
            else None
        )
        # What `cc_ObjDes` says of a model (None: no such model), and each supplier's mainline set: cached like the
        # definitions, since every permission decision reads them.
        self._models: TTLCache[tuple[str, str], ModelInfo | None] | None = (
            TTLCache(definition_cache_entries, definition_cache_seconds, timer=clock)
            if definition_cache_seconds > 0
            else None
        )
        self._mainlines: TTLCache[str, frozenset[str]] | None = (
            TTLCache(definition_cache_entries, definition_cache_seconds, timer=clock)
            if definition_cache_seconds > 0
            else None
        )

    async def find_definitions(self, obj_asst_id: str, suppliers: tuple[str, ...]) -> list[Definition]:
        """Definitions with this id under any of `suppliers`; cached for the configured seconds."""
        key = (obj_asst_id, suppliers)
        cached = self._definitions.get(key) if self._definitions is not None else None
        if cached is not None:
            return cached
        query = {"bk_obj_asst_id": obj_asst_id, "bk_supplier_account": {"$in": list(suppliers)}}
        with translate_errors(write=False):
            docs = await self.mongo.db[OBJ_ASST].find(query, {"_id": 0}).to_list(None)
        definitions = [definition_from(doc) for doc in docs]
        if self._definitions is not None and definitions:
            self._definitions[key] = definitions
        return definitions

    async def find_existing_links(
        self, definition: Definition, supplier_account: str, pairs: list[tuple[int, int]]
    ) -> list[LinkEnds]:
        """Links of the definition that share a source or target with `pairs` where the mapping limits it,
        and (n:n) those that may repeat a pair; one query whatever the number of pairs (a few indexed ones on
        the embedded server)."""
        table = inst_asst_table(definition.obj_id, supplier_account)
        projection = {"_id": 0, "bk_inst_id": 1, "bk_asst_inst_id": 1}
        queries = self._conflict_filters(definition, supplier_account, pairs)
        with translate_errors(write=False):
            found = await asyncio.gather(
                *(
                    self.mongo.db[table].find(query, projection).batch_size(LARGE_BATCH).to_list(None)
                    for query in queries
                )
            )
        return _link_ends(doc for docs in found for doc in docs)

    def _conflict_filters(
        self, definition: Definition, supplier_account: str, pairs: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """The filters of the links that may conflict with `pairs` (`_existing_links_queries`): one, or on the
        embedded server, which reads every row for an `$or` or an `$in`, one per end (or pair) where there are a
        few."""
        one_each = self.mongo.embedded and len(pairs) <= ONE_AT_A_TIME_AT_MOST
        return _existing_links_queries(definition, supplier_account, pairs, one_each=one_each)

    async def link_ids(
        self, definition: Definition, supplier_account: str, pairs: list[tuple[int, int]]
    ) -> dict[tuple[int, int], int]:
        """The ids of the definition's links between these pairs that exist, each looked up by its unique triple
        in the source model's table (an index every store serves)."""
        table = self.mongo.db[inst_asst_table(definition.obj_id, supplier_account)]

        async def one(pair: tuple[int, int]) -> tuple[tuple[int, int], int] | None:
            query = {"bk_inst_id": pair[0], "bk_asst_inst_id": pair[1], "bk_obj_asst_id": definition.obj_asst_id}
            doc = await table.find_one(_owned(query, supplier_account), {"_id": 0, "id": 1})
            return (pair, int(doc["id"])) if doc else None

        with translate_errors(write=False):
            found = await asyncio.gather(*(one(pair) for pair in pairs))
        return dict(item for item in found if item is not None)

    @property
    def ids_reserved(self) -> dict[str, int]:
        """Ids reserved from cc_idgenerator by this process, by sequence."""
        return self.ids.reserved

    @property
    def links_recovered(self) -> tuple[int, int]:
        """Links of unfinished writes this process's recovery rolled forward and back."""
        return self.journal.rolled_forward, self.journal.rolled_back

    def refuses_repeats(self, definition: Definition, supplier_account: str) -> bool:
        """Whether the store itself refuses a repeated link of `definition` (the unique index on
        {bk_inst_id, bk_asst_inst_id, bk_obj_asst_id} exists on both tables), so a create may write first."""
        tables = {inst_asst_table(definition.obj_id, supplier_account)}
        tables.add(inst_asst_table(definition.asst_obj_id, supplier_account))
        states = [self.indexes.state(table) for table in sorted(tables)]
        return all(state is not None and state.unique_link for state in states)

    async def read_for_create(
        self,
        definition: Definition,
        supplier_account: str,
        pairs: list[tuple[int, int]],
        *,
        with_links: bool = True,
        separate_requests: bool = False,
    ) -> tuple[list[LinkEnds], dict[int, str], dict[int, str]]:
        """What the rules need for `pairs`: the existing links that may conflict (unless `with_links` is off),
        and the names of the source and target instances that exist. One command where the server can fold the
        reads into one aggregation; otherwise the reads run together. `separate_requests` (a group commit's
        pairs, each from its own request): where the server scans for `$in` (nx-27017), a few instances are
        read one id at a time; a batch keeps its fixed number of commands."""
        sources = sorted({src for src, _ in pairs})
        targets = sorted({dst for _, dst in pairs})
        src = instance_table(definition.obj_id, supplier_account)
        dst = instance_table(definition.asst_obj_id, supplier_account)
        parts: list[ReadPart] = []
        if with_links:
            links_projection = {"_id": 0, "bk_inst_id": 1, "bk_asst_inst_id": 1}
            links_table = inst_asst_table(definition.obj_id, supplier_account)
            for query in self._conflict_filters(definition, supplier_account, pairs):
                parts.append(ReadPart("link", links_table, query, links_projection))
        if src == dst:
            parts.append(ReadPart.names("both", src, sorted({*sources, *targets})))
        else:
            parts += [ReadPart.names("src", src, sources), ReadPart.names("dst", dst, targets)]
        found = await self.reads.read(parts, one_id_at_a_time=separate_requests)
        existing = _link_ends(found.get("link", []))

        def names(tag: str, table: InstanceTable) -> dict[int, str]:
            return {int(doc[table.id_field]): str(doc.get(table.name_field, "")) for doc in found.get(tag, [])}

        if src == dst:
            both = names("both", src)
            return existing, both, both
        return existing, names("src", src), names("dst", dst)

    async def find_instance_names(
        self, obj_id: str, supplier_account: str, ids: list[int], *, name_field: str | None = None
    ) -> dict[int, str]:
        """The names of those instances of `obj_id` that exist, by id (from `name_field` when given; a list of
        strings, as hosts keep their IPs, is joined with commas)."""
        table = instance_table(obj_id, supplier_account)
        name = name_field or table.name_field
        docs = await self._read_instances(table, ids, {"_id": 0, table.id_field: 1, name: 1})
        return {int(doc[table.id_field]): _name_text(doc.get(name)) for doc in docs}

    async def find_instances(
        self, obj_id: str, supplier_account: str, ids: list[int], fields: list[str] | None
    ) -> dict[int, dict[str, Any]]:
        """The stored documents of those instances of `obj_id` that exist, by id, without `_id`, cut to `fields`
        when given (the id field is always read), with MongoDB's own types as plain JSON values."""
        if not ids:
            return {}
        table = instance_table(obj_id, supplier_account)
        projection: dict[str, Any] = {"_id": 0}
        if fields:
            projection |= dict.fromkeys([*fields, table.id_field], 1)
        docs = await self._read_instances(table, ids, projection)
        return {int(doc[table.id_field]): plain_document(doc) for doc in docs if is_int64(doc.get(table.id_field))}

    async def _read_instances(self, table: InstanceTable, ids: list[int], projection: dict[str, Any]) -> list[Any]:
        """The instances with these ids: one read with their `$in`, or on the embedded server, whose `$in` reads
        every row, one indexed read per run of close ids (`dense_runs`), in waves."""
        collection = self.mongo.db[table.collection]
        with translate_errors(write=False):
            if self.mongo.embedded and len(ids) > 1:
                runs = dense_runs(ids)
                found: list[Any] = []
                for start in range(0, len(runs), _READS_PER_WAVE):
                    reads = [
                        collection.find(table.scoped({table.id_field: run_filter(run)}), projection)
                        .batch_size(len(run) + 1)
                        .to_list(None)
                        for run in runs[start : start + _READS_PER_WAVE]
                    ]
                    found += [doc for docs in await asyncio.gather(*reads) for doc in docs]
                return found
            # One round trip: the first batch holds every instance asked for.
            cursor = collection.find(table.filter_for(ids), projection).batch_size(len(ids) + 1)
            return list(await cursor.to_list(None))

    async def find_definitions_from(
        self, obj_id: str, suppliers: tuple[str, ...], *, as_target: bool = False
    ) -> list[Definition]:
        """The definitions whose source model (or target model, `as_target`) is `obj_id`, under any of
        `suppliers`."""
        query = {
            "bk_asst_obj_id" if as_target else "bk_obj_id": obj_id,
            "bk_supplier_account": {"$in": list(suppliers)},
        }
        with translate_errors(write=False):
            docs = await self.mongo.db[OBJ_ASST].find(query, {"_id": 0}).to_list(None)
        return [definition_from(doc) for doc in docs]

    async def find_names(
        self,
        supplier_account: str,
        instances: list[tuple[str, int]],
        *,
        name_fields: Mapping[str, str] | None = None,
    ) -> dict[tuple[str, int], str]:
        """The names of those of these (model, id) instances that exist: one read per model, together (a
        model's name from `name_fields` where it names one)."""
        by_model: dict[str, set[int]] = {}
        for obj_id, inst_id in instances:
            by_model.setdefault(obj_id, set()).add(inst_id)
        models = sorted(by_model)
        fields = name_fields or {}
        found = await asyncio.gather(
            *(
                self.find_instance_names(
                    obj_id, supplier_account, sorted(by_model[obj_id]), name_field=fields.get(obj_id)
                )
                for obj_id in models
            )
        )
        return {
            (obj_id, inst_id): name
            for obj_id, names in zip(models, found, strict=True)
            for inst_id, name in names.items()
        }

    async def find_models(self, obj_ids: list[str], supplier_account: str) -> dict[str, ModelInfo]:
        """What `cc_ObjDes` says of each of these models that the caller's supplier may see, by `bk_obj_id`; cached
        for the configured seconds, as definitions are."""
        cache = self._models
        cached = {obj_id: cache[(obj_id, supplier_account)] for obj_id in obj_ids
                  if cache is not None and (obj_id, supplier_account) in cache}  # fmt: skip
        missing = [obj_id for obj_id in dict.fromkeys(obj_ids) if obj_id not in cached]
        if missing:
            projection = {"_id": 0, "bk_obj_id": 1, "bk_obj_name": 1, "bk_obj_icon": 1, "id": 1}
            query = {"bk_obj_id": one_or_in(missing), **owner_filter(supplier_account)}
            with translate_errors(write=False):
                docs = await self.mongo.db[OBJ_DES].find(query, projection).to_list(None)
            read: dict[str, ModelInfo | None] = dict.fromkeys(missing)
            for doc in docs:
                read[str(doc["bk_obj_id"])] = ModelInfo(
                    int(doc["id"]) if doc.get("id") is not None else None,
                    str(doc.get("bk_obj_name", "")),
                    str(doc.get("bk_obj_icon", "")),
                )
            if cache is not None:
                cache.update({(obj_id, supplier_account): info for obj_id, info in read.items()})
            cached |= read
        return {obj_id: info for obj_id, info in cached.items() if info is not None}

    async def definition_rows(self, query: dict[str, Any], supplier_account: str) -> list[dict[str, Any]]:
        """The `cc_ObjAsst` rows matching an already checked `query` that the supplier may see, in id order, as
        stored (without `_id`, as plain JSON values)."""
        with translate_errors(write=False):
            cursor = self.mongo.db[OBJ_ASST].find(_owned(query, supplier_account), {"_id": 0}).sort("id", 1)
            return [plain_document(doc) for doc in await cursor.to_list(None)]

    async def key_attributes(
        self, supplier_account: str, unique_ids: list[int], obj_ids: list[str]
    ) -> list[dict[str, Any]]:
        """The attributes of these models that any of these unique rules (`cc_ObjectUnique` ids) names as a key, as
        stored (id, model, attribute id, display name, type and options): what an Excel import names instances by."""
        if not unique_ids or not obj_ids:
            return []
        with translate_errors(write=False):
            uniques = (
                await self.mongo.db[OBJECT_UNIQUE]
                .find(
                    {"id": one_or_in(sorted(set(unique_ids))), **owner_filter(supplier_account)}, {"_id": 0, "keys": 1}
                )
                .to_list(None)
            )
            key_ids = sorted(
                {
                    int(key["key_id"])
                    for unique in uniques
                    for key in (unique.get("keys") if isinstance(unique.get("keys"), list) else [])
                    if isinstance(key, dict) and is_int64(key.get("key_id"))
                }
            )
            if not key_ids:
                return []
            query = {"bk_obj_id": one_or_in(sorted(set(obj_ids))), "id": one_or_in(key_ids)}
            projection = {"_id": 0, "id": 1, "bk_obj_id": 1, "bk_property_id": 1, "bk_property_name": 1,
                          "bk_property_type": 1, "option": 1}  # fmt: skip
            cursor = self.mongo.db[ATTRIBUTES].find(_owned(query, supplier_account), projection).sort("id", 1)
            return [plain_document(doc) for doc in await cursor.to_list(None)]

    async def find_instances_by_keys(
        self, obj_id: str, supplier_account: str, conditions: list[dict[str, Any]], fields: list[str]
    ) -> list[dict[str, Any]]:
        """The instances of `obj_id` the caller's supplier may see that match any of these equality conditions on
        their key attributes, cut to `fields` and the id field (as plain JSON values)."""
        table = instance_table(obj_id, supplier_account)
        projection = dict.fromkeys([*fields, table.id_field], 1) | {"_id": 0}
        found: list[dict[str, Any]] = []
        with translate_errors(write=False):
            for start in range(0, len(conditions), _KEY_CONDITIONS_PER_READ):
                chunk = conditions[start : start + _KEY_CONDITIONS_PER_READ]
                query = table.scoped(chunk[0] if len(chunk) == 1 else {"$or": chunk})
                cursor = self.mongo.db[table.collection].find(query, projection).batch_size(LARGE_BATCH)
                found += [plain_document(doc) for doc in await cursor.to_list(None)]
        return found

    async def host_placements(self, supplier_account: str, host_ids: list[int]) -> dict[int, tuple[int, int]]:
        """Each host's business and module, from its first `cc_ModuleHostConfig` row (as bk-cmdb reads them)."""
        if not host_ids:
            return {}
        query = {"bk_host_id": one_or_in(host_ids), **owner_filter(supplier_account)}
        projection = {"_id": 0, "bk_host_id": 1, "bk_biz_id": 1, "bk_module_id": 1}
        with translate_errors(write=False):
            rows = await self.mongo.db[MODULE_HOST].find(query, projection).sort("_id", 1).to_list(None)
        placements: dict[int, tuple[int, int]] = {}
        for row in rows:
            host, biz, module = row.get("bk_host_id"), row.get("bk_biz_id"), row.get("bk_module_id")
            if is_int64(host) and is_int64(biz) and is_int64(module):
                placements.setdefault(int(host), (int(biz), int(module)))
        return placements

    async def mainline_models(self, supplier_account: str) -> frozenset[str]:
        """bk-cmdb's mainline set: every model at either end of a `bk_mainline` definition the supplier may see."""
        if self._mainlines is not None and supplier_account in self._mainlines:
            return self._mainlines[supplier_account]
        rows = await self.definition_rows({"bk_asst_id": "bk_mainline"}, supplier_account)
        found = frozenset(str(row[end]) for row in rows for end in ("bk_obj_id", "bk_asst_obj_id") if row.get(end))
        if self._mainlines is not None:
            self._mainlines[supplier_account] = found
        return found

    async def has_model(self, obj_id: str, supplier_account: str) -> bool:
        """Whether `obj_id` is a model the caller's supplier may see (its own or the shared supplier's): no table
        is named from a model id before this holds. Cached like definitions."""
        return obj_id in await self.find_models([obj_id], supplier_account)

    async def create_links(self, links: list[NewLink], audits: list[AuditRecord]) -> list[int]:
        """Write links of one definition to both models' tables with their audit records, all or nothing.

        Returns the new ids in order. Raises LinkConflict when a unique index refuses any link (a rule was
        raced); then nothing of the call remains.
        """
        definition = links[0].definition
        supplier = links[0].supplier_account
        tables = [inst_asst_table(definition.obj_id, supplier)]
        if definition.asst_obj_id != definition.obj_id:
            tables.append(inst_asst_table(definition.asst_obj_id, supplier))
        link_ids, audit_ids = await asyncio.gather(
            self.ids.take(INST_ASST_SEQUENCE, len(links)), self.ids.take(AUDIT_SEQUENCE, len(audits))
        )
        # An idempotent request records what it reserved before the first write: a retry after a crash or an
        # unknown commit result can then find the link and answer with its id.
        await report_reservation(link_ids, tables[0])
        now = utc_now()
        docs = [link_document(link, link_id, now) for link, link_id in zip(links, link_ids, strict=True)]
        if self.mongo.embedded:  # found by id through `_id` there (see `link_oid`)
            docs = [{"_id": link_oid(int(doc["id"])), **doc} for doc in docs]
        audit_docs = [
            {"_id": ObjectId(), **audit_document(record, audit_id)}
            for record, audit_id in zip(audits, audit_ids, strict=True)
        ]
        # The audit records go first, so that without a transaction no link ever exists without its record.
        inserts = [Insert(AUDIT_LOG, audit_docs), *(Insert(table, docs) for table in tables)]
        # The entry holds each link and its audit record's `_id`: the audit records are written first, so recovery
        # never writes one (journal.py), and whole ones made a 200-link entry 170 KB instead of 66 KB. The links stay
        # whole so that a recoverer of the version before, which writes a missing copy from the entry, writes it right.
        journal = {
            "tables": tables,
            "links": [
                {"link": doc, "audit": {"_id": audit["_id"]}} for doc, audit in zip(docs, audit_docs, strict=True)
            ],
        }
        for table in set(tables) - self._tracked if self.track_changes else ():
            await track_changes(self.mongo, table)
            self._tracked.add(table)
        await self.writer.write(inserts, journal)
        for table in tables:
            if not self.indexes.is_ready(table):  # the table exists now: its indexes are built in the background
                self.indexes.schedule(table)
        self.links_created += len(link_ids)
        return link_ids

    async def find_links_by_ids(self, obj_id: str, supplier_account: str, ids: list[int]) -> list[StoredLink]:
        """The stored links with these ids in `obj_id`'s table (as source or target)."""
        table = inst_asst_table(obj_id, supplier_account)
        with translate_errors(write=False):
            docs = await self._by_ids(table, ids, owner_filter(supplier_account))
        return [stored_link_from(doc) for doc in sorted(docs, key=lambda doc: int(doc["id"]))]

    async def _by_ids(
        self,
        table: str,
        ids: list[int],
        query: dict[str, Any] | None = None,
        projection: dict[str, Any] | None = None,
        session: Any = None,
    ) -> list[dict[str, Any]]:
        """The documents of `table` with these link ids (that also match `query`). On the embedded server, which
        never indexes `id`, through the `_id`s this service gives links, then by `id` for the ids not found so
        (links bk-cmdb wrote); elsewhere by `id`, which MongoDB indexes."""
        if not ids:
            return []
        wanted = {**(query or {}), "id": one_or_in(ids)}
        shown = projection and {**projection, "id": 1}
        collection = self.mongo.db[table]
        if not self.mongo.embedded:
            return list(await collection.find(wanted, shown, session=session).to_list(None))
        keyed = {**wanted, "_id": {"$in": [link_oid(link_id) for link_id in ids]}}
        docs = list(await collection.find(keyed, shown, session=session).to_list(None))
        if missing := sorted(set(ids) - {int(doc["id"]) for doc in docs}):
            docs += await collection.find({**wanted, "id": one_or_in(missing)}, shown, session=session).to_list(None)
        return docs

    async def links_touching(
        self,
        frontier: dict[str, list[int]],
        supplier_account: str,
        direction: str,
        obj_asst_ids: list[str] | None,
        *,
        limit: int = 0,
    ) -> list[StoredLink]:
        """The links whose source (`out`), target (`in`) or either end (`both`) is one of the frontier's
        instances, limited to `obj_asst_ids` when given; each link once, by id. On MongoDB one read per model
        table, each with the model's whole frontier in one `$in`; on the embedded server, whose `$in` reads every
        row, one indexed read per run of close ids (`dense_runs`) and direction, in waves. With `limit`, each
        read stops after `limit + 1` links, and no wave starts once more than `limit` are found (so that more
        than `limit` in all tells the caller the bound was reached)."""

        def queries(obj_id: str, ids: list[int]) -> list[dict[str, Any]]:
            if self.mongo.embedded:
                return [query for run in dense_runs(ids) for query in queries_of(obj_id, run_filter(run))]
            return queries_of(obj_id, one_or_in(ids))

        def queries_of(obj_id: str, ends: Any) -> list[dict[str, Any]]:
            as_source = {"bk_obj_id": obj_id, "bk_inst_id": ends}
            as_target = {"bk_asst_obj_id": obj_id, "bk_asst_inst_id": ends}
            chosen = {"out": [as_source], "in": [as_target]}.get(direction) or [{"$or": [as_source, as_target]}]
            if self.mongo.embedded and direction == "both":
                # nx-27017 runs an `$or` without its indexes (seconds on a large table): two finds instead.
                chosen = [as_source, as_target]
            owned = [_owned(query, supplier_account) for query in chosen]
            return [{**query, "bk_obj_asst_id": {"$in": obj_asst_ids}} if obj_asst_ids else query for query in owned]

        async def read(table: str, query: dict[str, Any]) -> list[dict[str, Any]]:
            cursor = self.mongo.db[table].find(query, dict(HIDDEN_FIELDS)).batch_size(LARGE_BATCH)
            if limit:
                cursor = cursor.limit(limit + 1)
            return list(await cursor.to_list(None))

        reads = [
            (inst_asst_table(obj_id, supplier_account), query)
            for obj_id in sorted(frontier)
            for query in queries(obj_id, sorted(frontier[obj_id]))
        ]
        wave = _READS_PER_WAVE if self.mongo.embedded else len(reads)
        links: dict[int, StoredLink] = {}
        for start in range(0, len(reads), wave):
            if limit and len(links) > limit:
                break
            with translate_errors(write=False):
                found = await asyncio.gather(*(read(table, query) for table, query in reads[start : start + wave]))
            for doc in (doc for docs in found for doc in docs):
                try:
                    link = stored_link_from(doc)
                except (KeyError, TypeError, ValueError):  # a link document without its ends: nothing to walk
                    continue
                links[link.id] = link
        return [links[link_id] for link_id in sorted(links)]

    async def delete_links(
        self, obj_id: str, supplier_account: str, links: list[StoredLink], audits: dict[int, AuditRecord]
    ) -> set[int]:
        """Remove links from both models' tables, archive each removed copy and write one audit record per link,
        all or nothing; return the ids of the links this call removed.

        The links are first claimed in `obj_id`'s table: of concurrent deletes of one link exactly one claims it,
        and only what was claimed is archived, audited and counted.
        """
        token = new_token()
        named = inst_asst_table(obj_id, supplier_account)
        items = await self._delete_plan(named, supplier_account, links, audits)
        if await self.mongo.supports_transactions():
            removed: list[dict[str, Any]] = []

            async def write(session: Any) -> None:
                removed[:] = await self._claim_items(named, supplier_account, links, items, token, session)
                await self._remove(removed, session)

            with translate_errors(write=True):
                await self.mongo.run_transaction(write)
            self.links_deleted += len(removed)
            return {int(item["link_id"]) for item in removed}
        # The intent goes first, then the claim: a process that dies after claiming always leaves an entry for
        # recovery, which finishes the delete (a delete is finished, never undone).
        await self.journal.open(token, "delete", {"items": items})
        mine = await self._claim_items(named, supplier_account, links, items, token, None)
        if mine and len(mine) < len(items):  # concurrent deletes took the others: the entry names only ours
            await self.journal.narrow(token, {"items": mine})
        with translate_errors(write=True):
            await self._remove(mine, None)
        await self.journal.close(token)
        self.links_deleted += len(mine)
        return {int(item["link_id"]) for item in mine}

    async def _claim_items(
        self,
        named: str,
        supplier: str,
        links: list[StoredLink],
        items: list[dict[str, Any]],
        token: str,
        session: Any,
    ) -> list[dict[str, Any]]:
        """The planned items of the links this delete claimed, each with the table that holds its claim."""
        claimed = await self._claim(named, supplier, items, links, token, session)
        return [{**item, "claimed_in": claimed[item["link_id"]]} for item in items if item["link_id"] in claimed]

    async def _remove(self, items: list[dict[str, Any]], session: Any) -> None:
        """Write the items' audit records and archive copies, then remove their links from every table; the
        copies that carry the claim go last, so that a delete cut half way leaves each link claimed (a second
        delete would otherwise claim the copy left and audit the link again)."""
        if not items:
            return
        await self.writer.insert(AUDIT_LOG, [item["audit"] for item in items], session)
        await self.writer.insert(DEL_ARCHIVE, [archive for item in items for archive in item["archives"]], session)
        copies = _copies(items)
        for claims in (False, True):
            by_table: dict[str, list[int]] = {}
            for item in items:
                for table in item["tables"]:
                    if (table == item["claimed_in"]) == claims:
                        by_table.setdefault(table, []).append(item["link_id"])
            for table, ids in sorted(by_table.items()):
                await self.mongo.db[table].delete_many(_copies_filter(table, ids, copies), session=session)

    async def _copy_ids(self, named: str, supplier: str, links: list[StoredLink]) -> dict[tuple[str, int], Any]:
        """The `_id` of each copy of the links, by table and link id: the named table's from the links, the
        other tables' read."""
        by_table: dict[str, list[int]] = {}
        copies: dict[tuple[str, int], Any] = {}
        for link in links:
            if "_id" in link.document:
                copies[(named, link.id)] = link.document["_id"]
            for obj_id in (link.obj_id, link.asst_obj_id):
                table = inst_asst_table(obj_id, supplier)
                if table != named:
                    by_table.setdefault(table, []).append(link.id)
        with translate_errors(write=False):
            for table, ids in sorted(by_table.items()):
                docs = await self._by_ids(table, sorted(set(ids)), projection={"_id": 1})
                copies |= {(table, int(doc["id"])): doc["_id"] for doc in docs}
        return copies

    async def _delete_plan(
        self, named: str, supplier: str, links: list[StoredLink], audits: dict[int, AuditRecord]
    ) -> list[dict[str, Any]]:
        """Per link: its tables, its audit record and its archive copies, each with its `_id`, so that
        recovery can tell what was written."""
        audit_ids = await self.ids.take(AUDIT_SEQUENCE, len(links))
        copies = await self._copy_ids(named, supplier, links)
        now = utc_now()
        items = []
        for link, audit_id in zip(links, audit_ids, strict=True):
            tables = [inst_asst_table(obj_id, supplier) for obj_id in dict.fromkeys((link.obj_id, link.asst_obj_id))]
            audit = {"_id": ObjectId(), **audit_document(audits[link.id], audit_id)}
            # Each table's copy is archived under its own `_id` (as bk-cmdb's data layer archives every removed
            # document), which is how the event feed finds a delete's detail.
            archives = [
                {"_id": ObjectId(), **archive_document(table, link, now, copies.get((table, link.id)))}
                for table in tables
                if table == named or (table, link.id) in copies
            ]
            # Each copy's `_id`, by which the claim and the removal find it (the embedded server indexes no `id`).
            located = [[table, copies[(table, link.id)]] for table in tables if (table, link.id) in copies]
            items.append(
                {"link_id": link.id, "tables": tables, "audit": audit, "archives": archives, "copies": located}
            )
        return items

    async def _claim(
        self, named: str, supplier: str, items: list[dict[str, Any]], links: list[StoredLink], token: str, session: Any
    ) -> dict[int, str]:
        """Mark the links as this delete's, in one canonical copy each (the source model's table, whichever
        table the caller named), so that of concurrent deletes exactly one claims each link; a link whose
        source copy is gone (half deleted by another writer) is claimed in the named table. Return the table
        each claimed link was claimed in."""
        by_source: dict[str, list[int]] = {}
        for link in links:
            by_source.setdefault(inst_asst_table(link.obj_id, supplier), []).append(link.id)
        copies = _copies(items)
        claimed: dict[int, str] = {}
        with translate_errors(write=True):
            for table, ids in sorted(by_source.items()):
                claimed |= dict.fromkeys(await self._mark(table, ids, copies, token, session), table)
            orphans = sorted({link.id for link in links} - set(claimed))
            if orphans and named not in by_source:
                present: set[int] = set()
                for table in sorted(by_source):
                    found = await self._by_ids(table, orphans, projection={"_id": 1}, session=session)
                    present |= {int(doc["id"]) for doc in found}
                if without_source := [link_id for link_id in orphans if link_id not in present]:
                    claimed |= dict.fromkeys(await self._mark(named, without_source, copies, token, session), named)
        return claimed

    async def _mark(
        self, table: str, ids: list[int], copies: dict[tuple[str, int], Any], token: str, session: Any
    ) -> set[int]:
        """Claim for `token` those of the links' copies in `table` that no delete has claimed; the ids claimed."""
        located = _copies_filter(table, ids, copies)
        collection = self.mongo.db[table]
        marked = await collection.update_many(
            {**located, "id": one_or_in(ids), CLAIM: {"$exists": False}},
            {"$set": {CLAIM: token, CLAIMED_AT: time.time()}},
            session=session,
        )
        if not marked.modified_count:
            return set()
        cursor = collection.find({**located, CLAIM: token, "id": one_or_in(ids)}, {"id": 1}, session=session)
        return {int(doc["id"]) for doc in await cursor.to_list(None)}

    async def find_links(
        self,
        obj_id: str,
        supplier_account: str,
        query: dict[str, Any],
        *,
        fields: list[str] | None = None,
        sort: list[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        """Links in `obj_id`'s table matching `query` (an already checked filter), in bk-cmdb's fields only."""
        table = inst_asst_table(obj_id, supplier_account)
        projection: dict[str, Any] = {"_id": 0, **dict.fromkeys(fields, 1)} if fields else dict(HIDDEN_FIELDS)
        cursor = self.mongo.db[table].find(_owned(query, supplier_account), projection)
        if sort:
            cursor = cursor.sort(sort)
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit).batch_size(limit)  # a whole page in one round trip
        with translate_errors(write=False):
            return [public_fields(doc) for doc in await cursor.to_list(None)]

    async def links_of_instance(
        self, obj_id: str, supplier_account: str, inst_id: int, *, fields: list[str] | None, start: int, limit: int
    ) -> list[dict[str, Any]]:
        """`limit` links from the `start`-th, in id order, of `obj_id`'s table where the instance is the source or the
        target. Where the server evaluates a `$or` row by row over the whole table (the embedded server), one
        indexed find per direction, merged; on MongoDB one find, whose `$or` uses both indexes."""
        as_source = {"bk_obj_id": obj_id, "bk_inst_id": inst_id}
        as_target = {"bk_asst_obj_id": obj_id, "bk_asst_inst_id": inst_id}
        if not self.mongo.embedded:
            query = {"$or": [as_source, as_target]}
            return await self.find_links(
                obj_id, supplier_account, query, fields=fields, sort=[("id", 1)], skip=start, limit=limit
            )
        first = start + limit
        shown = fields and list(dict.fromkeys([*fields, "id"]))  # merged by id, whatever is asked for
        sides = await asyncio.gather(
            self.find_links(obj_id, supplier_account, as_source, fields=shown, sort=[("id", 1)], limit=first),
            self.find_links(obj_id, supplier_account, as_target, fields=shown, sort=[("id", 1)], limit=first),
        )
        merged: dict[Any, dict[str, Any]] = {}
        for link in (link for side in sides for link in side):
            merged.setdefault(link.get("id"), link)  # a link of the instance with itself is on both sides
        ordered = sorted(merged.values(), key=lambda link: link["id"] if is_int64(link.get("id")) else INT64_MAX)
        return ordered[start:first]

    async def count_links(self, obj_id: str, supplier_account: str, query: dict[str, Any]) -> int:
        """How many links in `obj_id`'s table match `query`: on the embedded server by the `count` command, which
        uses the filter's indexes where `count_documents`' aggregation reads every row (29 s against 1.1 s at 1M
        links); on MongoDB by `count_documents`, exact on every deployment."""
        table = inst_asst_table(obj_id, supplier_account)
        if self.mongo.embedded and not await self._table_exists(table):
            # The embedded server creates a collection that a command names; MongoDB does not. A read never
            # creates anything, so a table that does not exist counts nothing there.
            return 0
        with translate_errors(write=False):
            if self.mongo.embedded:
                counted = await self.mongo.db.command("count", table, query=_owned(query, supplier_account))
                return int(counted["n"])
            return int(await self.mongo.db[table].count_documents(_owned(query, supplier_account)))

    async def _table_exists(self, table: str) -> bool:
        if table in self._tables_seen or self.indexes.is_ready(table):
            return True
        with translate_errors(write=False):
            names = await self.mongo.db.list_collection_names(filter={"name": table})
        exists = table in names  # checked by name: the embedded server answers every name, whatever the filter
        if exists:
            self._tables_seen.add(table)
        return exists


def _owned(query: dict[str, Any], supplier_account: str) -> dict[str, Any]:
    """`query` limited to the links the caller's supplier may see (a query of its own on the supplier field
    is kept beside it, so that it can only narrow)."""
    if "bk_supplier_account" not in query:
        return {**query, **owner_filter(supplier_account)}
    return {"$and": [query, owner_filter(supplier_account)]}


def _link_ends(docs: Iterable[dict[str, Any]]) -> list[LinkEnds]:
    """The ends of these links, each link once (reads split per end find a link once per end they share)."""
    return list(dict.fromkeys(LinkEnds(int(doc["bk_inst_id"]), int(doc["bk_asst_inst_id"])) for doc in docs))


def _copies(items: list[dict[str, Any]]) -> dict[tuple[str, int], Any]:
    """The `_id` of each copy a delete plan located, by table and link id."""
    return {(table, item["link_id"]): oid for item in items for table, oid in item["copies"]}


def _copies_filter(table: str, ids: list[int], copies: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """The filter of these links' copies in `table`: by the `_id`s the delete plan located (the embedded server
    indexes no `id`), and by `id` for a copy it did not locate (not there yet when planned: a create half way)."""
    located = [copies[(table, link_id)] for link_id in ids if (table, link_id) in copies]
    unlocated = [link_id for link_id in ids if (table, link_id) not in copies]
    found = [{"_id": {"$in": located}}] if located else []
    found += [{"id": one_or_in(unlocated)}] if unlocated else []
    return found[0] if len(found) == 1 else {"$or": found}


def _existing_links_queries(
    definition: Definition, supplier_account: str, pairs: list[tuple[int, int]], *, one_each: bool
) -> list[dict[str, Any]]:
    """Filters of the links of the definition that share a source or target with `pairs` where the mapping limits
    it, and (n:n) those that may repeat a pair: one filter, or with `one_each` one equality per end (per pair for
    n:n), which every store serves from an index."""
    sources = sorted({src for src, _ in pairs})
    targets = sorted({dst for _, dst in pairs})

    def same_source(ids: list[int]) -> dict[str, Any]:
        return {"bk_obj_id": definition.obj_id, "bk_inst_id": one_or_in(ids)}

    def same_target(ids: list[int]) -> dict[str, Any]:
        return {"bk_asst_obj_id": definition.asst_obj_id, "bk_asst_inst_id": one_or_in(ids)}

    # Under 1:1 and 1:n a repeated pair also repeats its target, so the target clause covers duplicates.
    if one_each:
        clauses = {
            "1:1": [*(same_source([src]) for src in sources), *(same_target([dst]) for dst in targets)],
            "1:n": [same_target([dst]) for dst in targets],
            "n:n": [{**same_source([src]), "bk_asst_inst_id": dst} for src, dst in sorted(set(pairs))],
        }
    else:
        clauses = {
            "1:1": [{"$or": [same_source(sources), same_target(targets)]}],
            "1:n": [same_target(targets)],
            "n:n": [{**same_source(sources), "bk_asst_inst_id": one_or_in(targets)}],
        }
    owned = {"bk_obj_asst_id": definition.obj_asst_id, **owner_filter(supplier_account)}
    return [{**owned, **clause} for clause in clauses[definition.mapping]]


def _name_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)
