"""The rules of instance associations (CONTRACT section 5), over the association store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from cmdb_asso.domain import AuditRecord, Definition, LinkEnds, NewLink
from cmdb_asso.errors import (
    DefinitionNotFound,
    DefinitionNotUnique,
    DuplicateItem,
    OneToManyViolated,
    OneToOneViolated,
    PermissionDenied,
    SourceInstanceMissing,
    TargetInstanceMissing,
)
from cmdb_asso.service.context import Caller
from cmdb_asso.service.permission import Authorizer, DeniedInstance, edit_permission_payload
from cmdb_asso.storage.associations import AssociationStore, LinkConflict

log = structlog.get_logger(__name__)

DEFAULT_SUPPLIER = "0"
# A create that loses a race re-reads the rules; one that keeps losing without seeing a winner gives up.
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create-one body."""

    obj_asst_id: str
    inst_id: int
    asst_inst_id: int


def check_mapping_and_duplicate(link: NewLink, existing: list[LinkEnds]) -> None:
    """Steps 4 and 5: the mapping limits of the definition, then the exact duplicate."""
    mapping = link.definition.mapping
    if mapping == "1:1" and any(
        ends.inst_id == link.inst_id or ends.asst_inst_id == link.asst_inst_id for ends in existing
    ):
        raise OneToOneViolated()
    if mapping == "1:n" and any(ends.asst_inst_id == link.asst_inst_id for ends in existing):
        raise OneToManyViolated()
    if any(ends.inst_id == link.inst_id and ends.asst_inst_id == link.asst_inst_id for ends in existing):
        raise DuplicateItem("association")


def utc_now() -> datetime:
    """The current time as a naive UTC datetime, as bk-cmdb stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


class AssociationService:
    """Creates and checks instance associations; owns every rule, raises typed errors."""

    def __init__(self, store: AssociationStore, authorizer: Authorizer) -> None:
        self.store = store
        self.authorizer = authorizer

    async def definition(self, obj_asst_id: str, supplier_account: str) -> Definition:
        """Step 2: the one definition with this id under supplier "0" or the caller's."""
        suppliers = tuple(sorted({DEFAULT_SUPPLIER, supplier_account}))
        definitions = await self.store.find_definitions(obj_asst_id, suppliers)
        if not definitions:
            raise DefinitionNotFound()
        if len(definitions) > 1:
            raise DefinitionNotUnique()
        return definitions[0]

    async def authorize_edit(self, caller: Caller, link: NewLink) -> None:
        """Step 3: edit permission on both the source and the target instance."""
        definition = link.definition
        ends = [(definition.obj_id, link.inst_id), (definition.asst_obj_id, link.asst_inst_id)]
        allowed = await asyncio.gather(*(self.authorizer.can_edit(caller, obj_id) for obj_id, _ in ends))
        denied_ends = [end for end, ok in zip(ends, allowed, strict=True) if not ok]
        if not denied_ends:
            return
        models = await self.store.find_models(sorted({obj_id for obj_id, _ in denied_ends}))
        denied = []
        for obj_id, inst_id in denied_ends:
            names = await self.store.find_instance_names(obj_id, caller.supplier_account, [inst_id])
            row_id, model_name = models.get(obj_id, (None, obj_id))
            denied.append(DeniedInstance(obj_id, row_id, model_name or obj_id, inst_id, names.get(inst_id, "")))
        raise PermissionDenied(permission=edit_permission_payload(denied))

    async def instance_names(self, link: NewLink) -> tuple[str | None, str | None]:
        """The names of the source and target instances, None where one does not exist."""
        definition = link.definition
        supplier = link.supplier_account
        if definition.obj_id == definition.asst_obj_id:
            names = await self.store.find_instance_names(definition.obj_id, supplier, [link.inst_id, link.asst_inst_id])
            return names.get(link.inst_id), names.get(link.asst_inst_id)
        sources, targets = await asyncio.gather(
            self.store.find_instance_names(definition.obj_id, supplier, [link.inst_id]),
            self.store.find_instance_names(definition.asst_obj_id, supplier, [link.asst_inst_id]),
        )
        return sources.get(link.inst_id), targets.get(link.asst_inst_id)

    async def create_one(self, caller: Caller, request: CreateRequest) -> int:
        """Create one association after every check of section 5, in order; return its id."""
        definition = await self.definition(request.obj_asst_id, caller.supplier_account)
        link = NewLink(definition, request.inst_id, request.asst_inst_id, caller.supplier_account)
        await self.authorize_edit(caller, link)
        for _attempt in range(_CREATE_ATTEMPTS):
            # The reads are independent; they run together and their answers are judged in the contract's order.
            existing, (src_name, dst_name) = await asyncio.gather(
                self.store.find_conflicting_links(link), self.instance_names(link)
            )
            check_mapping_and_duplicate(link, existing)
            if src_name is None:
                raise SourceInstanceMissing()
            if dst_name is None:
                raise TargetInstanceMissing()
            audit = AuditRecord(
                action="create",
                supplier_account=caller.supplier_account,
                user=caller.user,
                app_code=caller.app_code,
                request_id=caller.request_id,
                operation_time=utc_now(),
                src_inst_id=link.inst_id,
                src_inst_name=src_name,
                dest_inst_id=link.asst_inst_id,
                dest_inst_name=dst_name,
                obj_asst_id=definition.obj_asst_id,
                asst_id=definition.asst_id,
                src_obj_id=definition.obj_id,
                dest_obj_id=definition.asst_obj_id,
            )
            try:
                return await self.store.create_link(link, audit)
            except LinkConflict:
                # A concurrent create won the unique index; the next pass sees it and answers its code.
                log.info("create_raced", bk_obj_asst_id=definition.obj_asst_id, bk_inst_id=link.inst_id)
        raise DuplicateItem("association")
