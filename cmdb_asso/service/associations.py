"""The rules of instance associations (CONTRACT sections 5 and 8): create one, create many, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import structlog

from cmdb_asso.clock import utc_now
from cmdb_asso.domain import MAPPINGS, AuditRecord, Definition, LinkEnds, NewLink, StoredLink
from cmdb_asso.errors import (
    AssociationExists,
    BodyInvalid,
    CmdbError,
    DefinitionMappingInvalid,
    DefinitionNotFound,
    DefinitionNotUnique,
    DuplicateItem,
    LinkConflict,
    OneToManyViolated,
    OneToOneViolated,
    PermissionDenied,
    SourceInstanceMissing,
    TargetInstanceMissing,
)
from cmdb_asso.service.coalescing import Coalescer
from cmdb_asso.service.context import Caller
from cmdb_asso.service.permission import Authorizer, edit_permission_payload
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.idempotency import Reservation, current_reservation, earlier_attempt_ids, reservations_to
from cmdb_asso.storage.tables import visible_suppliers

log = structlog.get_logger(__name__)

# A write that loses a race re-reads the rules; one that keeps losing falls back to one link at a time.
_WRITE_ATTEMPTS = 3
# Delete calls in one group at most (each of up to 500 links, as a delete-many).
DELETE_GROUP_LIMIT = 16


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create-one body."""

    obj_asst_id: str
    inst_id: int
    asst_inst_id: int


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A validated create-many body; `details` maps each index to its pair, or to the error of its detail."""

    obj_id: str
    asst_obj_id: str
    obj_asst_id: str
    details: dict[int, tuple[int, int] | CmdbError]
    atomic: bool = False


@dataclass
class BatchOutcome:
    """Per index: the id of the created link, or the error that refused it."""

    created: dict[int, int | None] = field(default_factory=dict)
    failed: dict[int, CmdbError] = field(default_factory=dict)


class MappingRules:
    """Steps 4 and 5 of the contract: what a definition's mapping forbids, given the links that exist and those
    accepted earlier in the same batch."""

    def __init__(self, definition: Definition, existing: Iterable[LinkEnds]) -> None:
        self.mapping = definition.mapping
        self.obj_id, self.asst_obj_id = definition.obj_id, definition.asst_obj_id
        self.sources: set[int] = set()
        self.targets: set[int] = set()
        self.pairs: set[tuple[int, int]] = set()
        for ends in existing:
            self.accept(ends.inst_id, ends.asst_inst_id)

    def accept(self, inst_id: int, asst_inst_id: int) -> None:
        """Count a link as present."""
        self.sources.add(inst_id)
        self.targets.add(asst_inst_id)
        self.pairs.add((inst_id, asst_inst_id))

    @staticmethod
    def new_link(definition: Definition, inst_id: int, asst_inst_id: int, supplier_account: str) -> NewLink:
        """The link to write, with the keys the store must keep unique for its mapping (so that a race the
        read cannot see is refused by a unique index)."""
        source_key = f"{definition.obj_asst_id}:{inst_id}" if definition.mapping == "1:1" else None
        limited_target = definition.mapping in ("1:1", "1:n")
        target_key = f"{definition.obj_asst_id}:{asst_inst_id}" if limited_target else None
        return NewLink(definition, inst_id, asst_inst_id, supplier_account, source_key, target_key)

    def allows(self, inst_id: int, asst_inst_id: int) -> bool:
        """Whether the mapping limits and the duplicate rule let this link be added."""
        try:
            self.check(inst_id, asst_inst_id)
        except CmdbError:
            return False
        return True

    def check(self, inst_id: int, asst_inst_id: int, duplicate: Literal["item", "batch"] = "item") -> None:
        """Steps 4 and 5: the mapping limits of the definition, then the exact duplicate (a batch detail's
        duplicate first: bk-cmdb's core judges it before anything else)."""
        if duplicate == "batch" and (inst_id, asst_inst_id) in self.pairs:
            raise AssociationExists(self.obj_id, self.asst_obj_id)
        if self.mapping == "1:1" and (inst_id in self.sources or asst_inst_id in self.targets):
            raise OneToOneViolated()
        if self.mapping == "1:n" and asst_inst_id in self.targets:
            raise OneToManyViolated()
        if (inst_id, asst_inst_id) in self.pairs:
            raise DuplicateItem("association")


# One end of a link in an audit record: model, instance id and instance name.
_End = tuple[str, int, str]


def link_audit(
    caller: Caller, action: Literal["create", "delete"], obj_asst_id: str, asst_id: str, src: _End, dst: _End
) -> AuditRecord:
    return AuditRecord(
        action=action,
        supplier_account=caller.supplier_account,
        user=caller.user,
        app_code=caller.app_code,
        request_id=caller.request_id,
        operation_time=utc_now(),
        src_obj_id=src[0],
        src_inst_id=src[1],
        src_inst_name=src[2],
        dest_obj_id=dst[0],
        dest_inst_id=dst[1],
        dest_inst_name=dst[2],
        obj_asst_id=obj_asst_id,
        asst_id=asst_id,
    )


def _delete_audit(caller: Caller, link: StoredLink, names: dict[tuple[str, int], str]) -> AuditRecord:
    src = (link.obj_id, link.inst_id, names.get((link.obj_id, link.inst_id), ""))
    dst = (link.asst_obj_id, link.asst_inst_id, names.get((link.asst_obj_id, link.asst_inst_id), ""))
    return link_audit(caller, "delete", link.obj_asst_id, link.asst_id, src, dst)


@dataclass(frozen=True, slots=True)
class _DeleteWork:
    """One delete call's links (permission checked) and their audit records, for a group of deletes."""

    links: list[StoredLink]
    audits: dict[int, AuditRecord]


@dataclass(frozen=True, slots=True)
class _GroupMember:
    """One create-one request waiting to be written with others of its definition."""

    caller: Caller
    definition: Definition
    pair: tuple[int, int]
    # Where the request's idempotency key records the id reserved for it, if it has a key.
    reservation: Reservation | None


class AssociationService:
    """Creates and deletes instance associations; owns every rule, raises typed errors."""

    def __init__(
        self, store: AssociationStore, authorizer: Authorizer, *, group_limit: int = 200, groups_in_flight: int = 1
    ) -> None:
        self.store = store
        self.authorizer = authorizer
        self._creates: Coalescer[tuple[str, Definition], _GroupMember, int] = Coalescer(
            self._create_group, max_group=group_limit, max_in_flight=groups_in_flight
        )
        # A group of deletes is bounded by the links in it, as a delete-many is (500).
        self._deletes: Coalescer[tuple[str, str], _DeleteWork, int] = Coalescer(
            self._delete_group, max_group=DELETE_GROUP_LIMIT, max_in_flight=groups_in_flight
        )

    @property
    def coalesced(self) -> tuple[int, int]:
        """Groups of create-one requests written so far, and the requests in them."""
        return self._creates.groups, self._creates.items

    @property
    def deletes_waiting(self) -> int:
        """Delete requests waiting for their group's turn."""
        return self._deletes.waiting()

    @property
    def deletes_coalesced(self) -> tuple[int, int]:
        """Groups of delete requests written so far, and the requests in them."""
        return self._deletes.groups, self._deletes.items

    @property
    def creates_waiting(self) -> int:
        """Create-one requests waiting for their group's turn."""
        return self._creates.waiting()

    async def close(self) -> None:
        """Stop the groups still being written (at shutdown)."""
        await self._creates.close()
        await self._deletes.close()

    async def definition(self, obj_asst_id: str, supplier_account: str) -> Definition:
        """Step 2: the one definition with this id under supplier "0" or the caller's."""
        suppliers = visible_suppliers(supplier_account)
        definitions = await self.store.find_definitions(obj_asst_id, suppliers)
        if not definitions:
            raise DefinitionNotFound()
        if len(definitions) > 1:
            raise DefinitionNotUnique()
        if definitions[0].mapping not in MAPPINGS:
            # Not the least restrictive mapping by default: a definition whose rules are unknown gets no links.
            raise DefinitionMappingInvalid()
        return definitions[0]

    async def authorize_edit(self, caller: Caller, ends: list[tuple[str, int]]) -> None:
        """Step 3: edit permission on every (model, instance) end; a denial names the denied instances."""
        denied_ends = await self.authorizer.denied_edits(caller, ends)
        if not denied_ends:
            return
        raise PermissionDenied(
            permission=await edit_permission_payload(self.store, caller.supplier_account, denied_ends)
        )

    async def _check_rules(
        self,
        callers: Caller | Mapping[int, Caller],
        definition: Definition,
        pairs: dict[int, tuple[int, int]],
        duplicate: Literal["item", "batch"],
        *,
        optimistic: bool = False,
        refused_by_call: set[int] | None = None,
    ) -> tuple[dict[int, AuditRecord], dict[int, CmdbError]]:
        """Steps 4 to 6 for every pair, in index order, each seeing the pairs accepted before it; `callers` is the
        caller of every pair, or each pair's own (a coalesced group: all of one supplier).

        `optimistic` skips reading the existing links of an n:n definition: its only rule, no duplicate, is
        the contract's unique index, which refuses a repeated link at the write (LinkConflict, and then a full
        judgement). Where an instance is missing, the links are read after all, so the answer keeps the
        contract's order. 1:1 and 1:n links are always read: links that bk-cmdb wrote carry no guard fields.
        """

        def caller_of(index: int) -> Caller:
            return callers if isinstance(callers, Caller) else callers[index]

        supplier = caller_of(min(pairs)).supplier_account
        values = list(pairs.values())
        # Write first only where the store refuses a repeat itself: bk-cmdb databases may lack that index.
        skip_links = optimistic and definition.mapping == "n:n" and self.store.refuses_repeats(definition, supplier)
        # One round of reads for the whole batch; its answers are judged in the contract's order.
        group_commit = refused_by_call is not None  # only a group commit asks which refusals it caused
        existing, src_names, dst_names = await self.store.read_for_create(
            definition, supplier, values, with_links=not skip_links, separate_requests=group_commit
        )
        if skip_links and any(src not in src_names or dst not in dst_names for src, dst in values):
            existing = await self.store.find_existing_links(definition, supplier, values)
        limits = MappingRules(definition, existing)
        stored_only = MappingRules(definition, existing) if refused_by_call is not None else None
        accepted: dict[int, AuditRecord] = {}
        failed: dict[int, CmdbError] = {}

        def judge_limits(index: int, src: int, dst: int) -> None:
            try:
                limits.check(src, dst, duplicate)
            except CmdbError:
                if refused_by_call is not None and stored_only is not None and stored_only.allows(src, dst):
                    refused_by_call.add(index)  # refused only because of a pair accepted before it
                raise

        def judge_instances(src: int, dst: int) -> None:
            if src not in src_names:
                raise SourceInstanceMissing()
            if dst not in dst_names:
                raise TargetInstanceMissing()

        for index in sorted(pairs):
            src, dst = pairs[index]
            try:
                if duplicate == "batch":
                    # bk-cmdb's core judges a batch detail's duplicate first, then its instances, then the mapping
                    # (CONTRACT-ui Correction e); create one keeps the mapping first.
                    if (src, dst) in limits.pairs:
                        judge_limits(index, src, dst)
                    judge_instances(src, dst)
                    judge_limits(index, src, dst)
                else:
                    judge_limits(index, src, dst)
                    judge_instances(src, dst)
            except CmdbError as error:
                failed[index] = error
                continue
            limits.accept(src, dst)
            accepted[index] = link_audit(
                caller_of(index),
                "create",
                definition.obj_asst_id,
                definition.asst_id,
                (definition.obj_id, src, src_names[src]),
                (definition.asst_obj_id, dst, dst_names[dst]),
            )
        return accepted, failed

    async def create_one(self, caller: Caller, request: CreateRequest, *, dry_run: bool = False) -> int | None:
        """Create one association after every check of section 5, in order; return its id.

        A dry run makes every check and writes nothing (no id is reserved): it returns None or raises.
        """
        definition = await self.definition(request.obj_asst_id, caller.supplier_account)
        pair = (request.inst_id, request.asst_inst_id)
        await self.authorize_edit(caller, [(definition.obj_id, pair[0]), (definition.asst_obj_id, pair[1])])
        if dry_run:
            _accepted, failed = await self._check_rules(caller, definition, {0: pair}, "item")
            if failed:
                raise failed[0]
            return None
        return await self.create_authorized(caller, definition, pair)

    async def create_authorized(self, caller: Caller, definition: Definition, pair: tuple[int, int]) -> int:
        """Steps 4 to 6 and the write of one link whose edit permission was checked; its id."""
        # Concurrent creates of one definition go together (one round of reads, one write); alone, at once.
        member = _GroupMember(caller, definition, pair, current_reservation())
        return await self._creates.submit((caller.supplier_account, definition), member)

    async def _create_group(
        self, key: tuple[str, Definition], members: list[_GroupMember]
    ) -> list[int | BaseException]:
        """Create the members' links as one write, each judged in arrival order as if it came alone; per member,
        its id or its error. A write raced by another process is judged again; the last pass writes one link at
        a time, so that a race costs one link; an outage during the write reaches the members it would have."""
        _supplier, definition = key
        callers = {index: member.caller for index, member in enumerate(members)}
        pending = {index: member.pair for index, member in enumerate(members)}
        results: dict[int, int | BaseException] = {}
        for attempt in range(_WRITE_ATTEMPTS):
            refused_by_group: set[int] = set()
            accepted, failed = await self._check_rules(
                callers, definition, pending, "item", optimistic=attempt == 0, refused_by_call=refused_by_group
            )
            results.update(failed)
            if not accepted:
                break
            indexes = sorted(accepted)
            if attempt == _WRITE_ATTEMPTS - 1:
                for index in indexes:
                    results[index] = await self._create_alone(members[index], accepted[index])
                break
            written: list[int | BaseException]
            try:
                written = list(await self._write_links([members[i] for i in indexes], [accepted[i] for i in indexes]))
            except LinkConflict:
                # Another writer won a unique index: the next pass sees its link and judges everyone again.
                log.info("create_raced", bk_obj_asst_id=definition.obj_asst_id, links=len(indexes))
                continue
            except CmdbError as error:
                # Nothing was written: the writers, and those refused only because of them, get the outage.
                written = [error] * len(indexes)
                results.update(dict.fromkeys(refused_by_group, error))
            results.update(zip(indexes, written, strict=True))
            break
        return [results[index] for index in range(len(members))]

    async def _create_alone(self, member: _GroupMember, audit: AuditRecord) -> int | BaseException:
        try:
            (new_id,) = await self._write_links([member], [audit])
        except LinkConflict:
            _accepted, failed = await self._check_rules(member.caller, member.definition, {0: member.pair}, "item")
            return failed.get(0) or DuplicateItem("association")
        except CmdbError as error:
            return error
        return new_id

    async def _write_links(self, members: list[_GroupMember], audits: list[AuditRecord]) -> list[int]:
        """Write the members' links in one write; each member with an idempotency key gets its own id reported
        before the write."""
        links = [MappingRules.new_link(m.definition, *m.pair, m.caller.supplier_account) for m in members]
        records = [member.reservation for member in members]

        async def report(link_ids: list[int], table: str) -> None:
            reports = [record([link_id], table) for record, link_id in zip(records, link_ids, strict=True) if record]
            await asyncio.gather(*reports)

        with reservations_to(report):
            return await self.store.create_links(links, audits)

    async def create_many(self, caller: Caller, request: BatchRequest, *, dry_run: bool = False) -> BatchOutcome:
        """Create a batch of associations of one definition; per index, an id or an error.

        A dry run judges every detail and writes nothing: the details that would be created map to None.
        """
        definition = await self.definition(request.obj_asst_id, caller.supplier_account)
        if definition.obj_id != request.obj_id:
            raise BodyInvalid("bk_obj_id")
        if definition.asst_obj_id != request.asst_obj_id:
            raise BodyInvalid("bk_asst_obj_id")
        outcome = BatchOutcome()
        pending: dict[int, tuple[int, int]] = {}
        for index, detail in request.details.items():
            if isinstance(detail, CmdbError):
                outcome.failed[index] = detail
            else:
                pending[index] = detail
        if request.atomic and outcome.failed:
            raise outcome.failed[min(outcome.failed)]
        ends = [(definition.obj_id, src) for src, _ in pending.values()]
        ends += [(definition.asst_obj_id, dst) for _, dst in pending.values()]
        await self.authorize_edit(caller, ends)
        for attempt in range(_WRITE_ATTEMPTS):
            if not pending or await self._batch_pass(caller, definition, request, pending, outcome, attempt, dry_run):
                await self._claim_earlier_links(caller, definition, request, outcome)
                return outcome
        # Every pass was raced, and an atomic batch cannot fall back to one link at a time.
        raise DuplicateItem("association")

    async def _claim_earlier_links(
        self, caller: Caller, definition: Definition, request: BatchRequest, outcome: BatchOutcome
    ) -> None:
        """A batch run again after its first attempt was cut (a crash, an ambiguous failure): the details refused
        because their link exists are created, with their ids, where that link is one the first attempt wrote."""
        earlier = earlier_attempt_ids()
        pairs = {index: pair for index in outcome.failed if isinstance(pair := request.details[index], tuple)}
        if not earlier or not pairs:
            return
        found = await self.store.link_ids(definition, caller.supplier_account, list(set(pairs.values())))
        for index, pair in pairs.items():
            link_id = found.get(pair)
            if link_id is not None and link_id in earlier:
                del outcome.failed[index]
                outcome.created[index] = link_id

    async def _batch_pass(
        self,
        caller: Caller,
        definition: Definition,
        request: BatchRequest,
        pending: dict[int, tuple[int, int]],
        outcome: BatchOutcome,
        attempt: int,
        dry_run: bool,
    ) -> bool:
        """Judge the pending details and write the accepted ones; False when another writer raced the write
        (nothing of the pass was kept, and the details it refused are settled)."""
        optimistic = attempt == 0 and not dry_run
        accepted, failed = await self._check_rules(caller, definition, pending, "batch", optimistic=optimistic)
        if request.atomic and failed:
            raise failed[min(failed)]
        outcome.failed.update(failed)
        if dry_run or not accepted:
            outcome.created.update(dict.fromkeys(accepted))
            return True
        indexes = sorted(accepted)
        links = [MappingRules.new_link(definition, *pending[index], caller.supplier_account) for index in indexes]
        if attempt == _WRITE_ATTEMPTS - 1 and not request.atomic:
            # The last pass writes one link at a time, so that one more race costs one link, not the batch.
            await self._create_one_by_one(caller, definition, pending, indexes, links, accepted, outcome)
            return True
        try:
            ids = await self.store.create_links(links, [accepted[index] for index in indexes])
        except LinkConflict:
            # Raced by another writer: judge again against what now exists.
            log.info("batch_conflict", bk_obj_asst_id=definition.obj_asst_id, attempt=attempt)
            for index in failed:
                pending.pop(index, None)
            return False
        outcome.created.update(zip(indexes, ids, strict=True))
        return True

    async def _create_one_by_one(
        self,
        caller: Caller,
        definition: Definition,
        pending: dict[int, tuple[int, int]],
        indexes: list[int],
        links: list[NewLink],
        accepted: dict[int, AuditRecord],
        outcome: BatchOutcome,
    ) -> None:
        """The last resort under heavy contention: write each link alone, judging again any that loses."""
        for index, link in zip(indexes, links, strict=True):
            try:
                (outcome.created[index],) = await self.store.create_links([link], [accepted[index]])
            except LinkConflict:
                _accepted, failed = await self._check_rules(caller, definition, {index: pending[index]}, "batch")
                outcome.failed[index] = failed.get(index) or AssociationExists(*pending[index])

    async def delete(self, caller: Caller, obj_id: str, ids: list[int], *, authorized: bool = False) -> int:
        """Delete the links with these ids from `obj_id`'s table and their other side; return how many.
        `authorized`: the caller's edit permission on both ends of each was checked already (an import's rows)."""
        if not await self.store.has_model(obj_id, caller.supplier_account):
            return 0  # no table is named from a model the caller's supplier does not have
        links = await self.store.find_links_by_ids(obj_id, caller.supplier_account, sorted(set(ids)))
        if not links:
            return 0
        ends = [(link.obj_id, link.inst_id) for link in links] + [
            (link.asst_obj_id, link.asst_inst_id) for link in links
        ]
        if not authorized:
            await self.authorize_edit(caller, ends)
        names = await self.store.find_names(caller.supplier_account, ends)
        audits = {link.id: _delete_audit(caller, link, names) for link in links}
        # Concurrent deletes of one model's links go together (group commit); each counts what it removed, so
        # that a link deleted by two calls at once is counted (and audited) once.
        return await self._deletes.submit((obj_id, caller.supplier_account), _DeleteWork(links, audits))

    async def _delete_group(self, key: tuple[str, str], members: list[_DeleteWork]) -> list[int | BaseException]:
        """One write for the deletes of a group: each link goes with the first member that asked for it."""
        obj_id, supplier = key
        taken: dict[int, int] = {}
        links: list[StoredLink] = []
        audits: dict[int, AuditRecord] = {}
        for index, member in enumerate(members):
            for link in member.links:
                if link.id not in taken:
                    taken[link.id] = index
                    links.append(link)
                    audits[link.id] = member.audits[link.id]
        removed = await self.store.delete_links(obj_id, supplier, links, audits)
        counts = [0] * len(members)
        for link_id in removed:
            counts[taken[link_id]] += 1
        return list(counts)
