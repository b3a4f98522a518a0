"""Importing instance associations from an Excel sheet's rows (CONTRACT-ui 23.2): each row names a definition, an
operation and its two instances by their unique keys (`<attribute display name>=<value>`); rows are judged on their
own, in row order, each seeing the rows before it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cmdb_asso.domain import MAPPINGS, AuditRecord, Definition
from cmdb_asso.errors import (
    CmdbError,
    DefinitionMappingInvalid,
    DuplicateItem,
    ImportRowRefused,
    Language,
    LinkConflict,
    OneToManyViolated,
    OneToOneViolated,
    PermissionDenied,
)
from cmdb_asso.inputs import is_int64
from cmdb_asso.service.associations import AssociationService, MappingRules, link_audit
from cmdb_asso.service.context import Caller
from cmdb_asso.service.permission import Authorizer
from cmdb_asso.service.property_names import COMMON_ATTRIBUTES, PROPERTY_NAMES, TRANSLATED_MODELS
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.documents import definition_from
from cmdb_asso.storage.tables import instance_table

# The row operations (bk-cmdb's `operate`): the sheet's `add` and `delete`; anything else is 1.
ADD, DELETE = 2, 3
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# Links written together (one journal entry each write, as a create-many).
_LINKS_PER_WRITE = 200


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One sheet row: the definition, the operation and the two instances' key texts."""

    obj_asst_id: str
    operate: int
    src_key: str
    dst_key: str


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """An import's rows by their Excel row number, and the unique rules that name each model's instances."""

    obj_id: str
    rows: dict[int, ImportRow]
    object_unique_id: int
    other_unique_ids: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Key:
    """A key attribute as a sheet names it."""

    property_id: str
    type: str
    option: Any


@dataclass(frozen=True, slots=True)
class _End:
    """One end of a row: its model, the key text and its values."""

    obj_id: str
    text: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Step:
    """A row that passed every check but the rules of its operation."""

    number: int
    definition: Definition
    operate: int
    pair: tuple[int, int]


@dataclass
class _Links:
    """The links of one definition as the rows see them, in row order."""

    pairs: set[tuple[int, int]] = field(default_factory=set)
    targets_of: dict[int, set[int]] = field(default_factory=dict)
    sources_of: dict[int, set[int]] = field(default_factory=dict)

    def add(self, src: int, dst: int) -> None:
        self.pairs.add((src, dst))
        self.targets_of.setdefault(src, set()).add(dst)
        self.sources_of.setdefault(dst, set()).add(src)

    def remove(self, src: int, dst: int) -> None:
        self.pairs.discard((src, dst))
        self.targets_of.get(src, set()).discard(dst)
        self.sources_of.get(dst, set()).discard(src)


class AssociationImporter:
    """Imports the rows of an Excel sheet: adds and deletes links named by their instances' unique keys."""

    def __init__(self, store: AssociationStore, service: AssociationService, authorizer: Authorizer) -> None:
        self.store = store
        self.service = service
        self.authorizer = authorizer

    async def import_rows(self, caller: Caller, request: ImportRequest, language: Language) -> dict[int, CmdbError]:
        """Judge and write every row; the rows that failed, by row number, with why (display names are read in
        `language`, as the sheet was written)."""
        if not request.rows:
            return {}
        supplier = caller.supplier_account
        definitions = await self._definitions(request, supplier)
        own_keys, other_keys = await self._keys(request, supplier, language)
        ends, failed = _parsed_rows(request, definitions, own_keys, other_keys)
        found = await self._instances(supplier, [end for _, *pair in ends.values() for end in pair])
        steps, refused = await self._checked_steps(caller, request, ends, found)
        failed |= refused
        failed |= await self._apply(caller, steps)
        return dict(sorted(failed.items()))

    async def _checked_steps(
        self, caller: Caller, request: ImportRequest, ends: dict[int, tuple[Definition, _End, _End]], found: _Instances
    ) -> tuple[list[_Step], dict[int, CmdbError]]:
        """Step 3's first checks, per row: its instances resolved, the caller's edit permission on both (one
        decision for every instance the rows name: one IAM call, where IAM decides), a known operation."""
        resolved: dict[int, tuple[int, int] | CmdbError] = {}
        for number, (_definition, src, dst) in ends.items():
            try:
                resolved[number] = (found.resolve(src), found.resolve(dst))
            except CmdbError as error:
                resolved[number] = error
        instances = [
            (end.obj_id, inst_id)
            for number, (_d, *pair) in ends.items()
            if isinstance(ids := resolved[number], tuple)
            for end, inst_id in zip(pair, ids, strict=True)
        ]
        denied = set(await self.authorizer.denied_edits(caller, list(dict.fromkeys(instances)))) if instances else set()
        steps: list[_Step] = []
        failed: dict[int, CmdbError] = {}
        for number, (definition, src, dst) in ends.items():
            pair = resolved[number]
            operate = request.rows[number].operate
            if isinstance(pair, CmdbError):
                failed[number] = pair
            elif (src.obj_id, pair[0]) in denied or (dst.obj_id, pair[1]) in denied:
                failed[number] = PermissionDenied()
            elif operate not in (ADD, DELETE):
                failed[number] = ImportRowRefused("import_association_operate_not_found")
            else:
                steps.append(_Step(number, definition, operate, pair))
        return steps, failed

    async def _definitions(self, request: ImportRequest, supplier: str) -> dict[str, Definition]:
        """Step 2a: the rows' definitions in which the model is the source or the target (CONTRACT-ui 22)."""
        ids = sorted({row.obj_asst_id for row in request.rows.values()})
        query = {"$or": [{"bk_obj_id": request.obj_id}, {"bk_asst_obj_id": request.obj_id}],
                 "bk_obj_asst_id": {"$in": ids}}  # fmt: skip
        rows = await self.store.definition_rows(query, supplier)
        return {definition.obj_asst_id: definition for definition in map(definition_from, rows)}

    async def _keys(
        self, request: ImportRequest, supplier: str, language: Language
    ) -> tuple[dict[str, _Key], dict[str, dict[str, _Key]]]:
        """Steps 2b and 2c: the model's key attributes, and each other model's, by display name."""
        others = sorted(request.other_unique_ids)
        own, other = await asyncio.gather(
            self.store.key_attributes(supplier, [request.object_unique_id], [request.obj_id]),
            self.store.key_attributes(
                supplier, list(request.other_unique_ids.values()), [*others, request.obj_id] if others else []
            ),
        )
        other_keys: dict[str, dict[str, _Key]] = {}
        for attribute in other:
            other_keys.setdefault(str(attribute.get("bk_obj_id", "")), {}).update(_named_key(attribute, language))
        own_keys: dict[str, _Key] = {}
        for attribute in own:
            own_keys.update(_named_key(attribute, language))
        return own_keys, other_keys

    async def _instances(self, supplier: str, ends: list[_End]) -> _Instances:
        """Step 2f: per model, the instances any row names, in one read per model (and 500 rows)."""
        wanted: dict[str, dict[str, dict[str, Any]]] = {}
        for end in ends:
            condition = wanted.setdefault(end.obj_id, {})
            condition.setdefault(repr(sorted(end.values.items())), end.values)
        models = sorted(wanted)
        found = await asyncio.gather(
            *(
                self.store.find_instances_by_keys(
                    obj_id,
                    supplier,
                    list(wanted[obj_id].values()),
                    sorted({name for values in wanted[obj_id].values() for name in values}),
                )
                for obj_id in models
            )
        )
        return _Instances(supplier, dict(zip(models, found, strict=True)))

    async def _apply(self, caller: Caller, steps: list[_Step]) -> dict[int, CmdbError]:
        """Step 3's rules in row order against the links that exist, then the writes, in row order."""
        supplier = caller.supplier_account
        by_definition: dict[Definition, list[tuple[int, int]]] = {}
        for step in steps:
            by_definition.setdefault(step.definition, []).append(step.pair)
        existing = await asyncio.gather(
            *(self.store.find_existing_links(d, supplier, pairs) for d, pairs in by_definition.items())
        )
        links: dict[Definition, _Links] = {}
        for definition, stored in zip(by_definition, existing, strict=True):
            links[definition] = _Links()
            for ends in stored:
                links[definition].add(ends.inst_id, ends.asst_inst_id)
        failed: dict[int, CmdbError] = {}
        writes: list[_Step] = []
        for step in steps:
            state = links[step.definition]
            try:
                if step.operate == DELETE:
                    if step.pair not in state.pairs:
                        continue  # nothing matched: not an error
                    state.remove(*step.pair)
                elif _judge_add(step.definition, state, *step.pair):
                    state.add(*step.pair)
                else:
                    continue  # the same link exists: done already
            except CmdbError as error:
                failed[step.number] = error
                continue
            writes.append(step)
        for run in _runs(writes):
            if run[0].operate == ADD:
                failed |= await self._add(caller, run)
            else:
                await self._delete(caller, run)
        return failed

    async def _add(self, caller: Caller, run: list[_Step]) -> dict[int, CmdbError]:
        """Write a run of accepted adds, one write per definition; a write raced by another writer is done again
        row by row, each judged again."""
        supplier = caller.supplier_account
        ends = [(s.definition.obj_id, s.pair[0]) for s in run] + [(s.definition.asst_obj_id, s.pair[1]) for s in run]
        names = await self.store.find_names(supplier, ends)
        failed: dict[int, CmdbError] = {}
        for definition, group in _grouped(run).items():
            for start in range(0, len(group), _LINKS_PER_WRITE):
                failed |= await self._write(caller, definition, group[start : start + _LINKS_PER_WRITE], names)
        return failed

    async def _write(
        self, caller: Caller, definition: Definition, steps: list[_Step], names: dict[tuple[str, int], str]
    ) -> dict[int, CmdbError]:
        """One all-or-nothing write of a definition's links with their audit records; raced, row by row."""
        supplier = caller.supplier_account
        new_links = [MappingRules.new_link(definition, *step.pair, supplier) for step in steps]
        audits = [self._audit(caller, definition, step.pair, names) for step in steps]
        try:
            await self.store.create_links(new_links, audits)
        except LinkConflict:
            failed: dict[int, CmdbError] = {}
            for step in steps:
                try:
                    await self.service.create_authorized(caller, definition, step.pair)
                except CmdbError as error:
                    failed[step.number] = error
            return failed
        return {}

    @staticmethod
    def _audit(
        caller: Caller, definition: Definition, pair: tuple[int, int], names: dict[tuple[str, int], str]
    ) -> AuditRecord:
        src, dst = (definition.obj_id, pair[0]), (definition.asst_obj_id, pair[1])
        return link_audit(
            caller, "create", definition.obj_asst_id, definition.asst_id, (*src, names.get(src, "")),
            (*dst, names.get(dst, "")),
        )  # fmt: skip

    async def _delete(self, caller: Caller, run: list[_Step]) -> None:
        """Delete a run of links, one delete per definition (a link gone meanwhile is no error); each row's edit
        permission on both ends was decided with the others'."""
        for definition, steps in _grouped(run).items():
            found = await self.store.link_ids(definition, caller.supplier_account, [step.pair for step in steps])
            if found:
                await self.service.delete(caller, definition.obj_id, sorted(found.values()), authorized=True)


class _Instances:
    """The instances an import's rows name, and how a row's end is resolved to one (step 3.1)."""

    def __init__(self, supplier: str, found: dict[str, list[dict[str, Any]]]) -> None:
        self.found = found
        self.id_fields = {obj_id: instance_table(obj_id, supplier).id_field for obj_id in found}

    def resolve(self, end: _End) -> int:
        """The id of the first instance with every value of the end's key; the bk-cmdb message naming the first
        part, when no instance has even that, or the whole text."""
        instances = self.found.get(end.obj_id, [])
        first_name, first_value = next(iter(end.values.items()))
        if not any(_same(instance.get(first_name), first_value) for instance in instances):
            raise ImportRowRefused("import_instance_not_found", end.obj_id, end.text.split(",")[0].strip())
        for instance in instances:
            if all(_same(instance.get(name), value) for name, value in end.values.items()):
                return int(instance[self.id_fields[end.obj_id]])
        raise ImportRowRefused("import_instance_not_found", end.obj_id, end.text)


def _parsed_rows(
    request: ImportRequest,
    definitions: dict[str, Definition],
    own_keys: dict[str, _Key],
    other_keys: dict[str, dict[str, _Key]],
) -> tuple[dict[int, tuple[Definition, _End, _End]], dict[int, CmdbError]]:
    """Step 2d, per row in row order: its definition, and its two key texts parsed with the keys of each end's model
    (the model of the path's keys for its own end); the rows that failed, with why."""
    ends: dict[int, tuple[Definition, _End, _End]] = {}
    failed: dict[int, CmdbError] = {}
    for number in sorted(request.rows):
        row = request.rows[number]
        definition = definitions.get(row.obj_asst_id)
        if definition is None:
            failed[number] = ImportRowRefused("import_asstid_not_found", row.obj_asst_id)
            continue
        if definition.mapping not in MAPPINGS:  # as create: a definition whose rules are unknown is not written
            failed[number] = DefinitionMappingInvalid()
            continue
        if definition.obj_id == request.obj_id:
            src_keys, dst_keys = own_keys, other_keys.get(definition.asst_obj_id, {})
        else:
            src_keys, dst_keys = other_keys.get(definition.obj_id, {}), own_keys
        parsed: list[_End] = []
        for obj_id, text, keys in ((definition.obj_id, row.src_key, src_keys),
                                   (definition.asst_obj_id, row.dst_key, dst_keys)):  # fmt: skip
            try:
                parsed.append(_parsed_end(obj_id, text, keys))
            except ImportRowRefused as error:
                failed[number] = error  # when both ends fail, the target's message is kept
        if number not in failed:
            ends[number] = (definition, parsed[0], parsed[1])
    return ends, failed


def _judge_add(definition: Definition, links: _Links, src: int, dst: int) -> bool:
    """Step 3's add rules: False when the same link exists (the row is done); an error when the mapping refuses
    it."""
    if definition.mapping == "1:1" and links.targets_of.get(src):
        if dst not in links.targets_of[src]:
            raise DuplicateItem("association")
        return False
    if (src, dst) in links.pairs:
        return False
    if definition.mapping == "1:1" and links.sources_of.get(dst):
        raise OneToOneViolated()
    if definition.mapping == "1:n" and links.sources_of.get(dst):
        raise OneToManyViolated()
    return True


def _runs(steps: list[_Step]) -> Iterable[list[_Step]]:
    """The steps cut into runs of one operation, in row order."""
    run: list[_Step] = []
    for step in steps:
        if run and run[-1].operate != step.operate:
            yield run
            run = []
        run.append(step)
    if run:
        yield run


def _grouped(steps: list[_Step]) -> dict[Definition, list[_Step]]:
    grouped: dict[Definition, list[_Step]] = {}
    for step in steps:
        grouped.setdefault(step.definition, []).append(step)
    return grouped


def _named_key(attribute: dict[str, Any], language: Language) -> dict[str, _Key]:
    """An attribute by the display name a sheet uses: bk-cmdb's translation for the built-in models' attributes,
    else the stored name, else the attribute id."""
    obj_id, property_id = str(attribute.get("bk_obj_id", "")), str(attribute.get("bk_property_id", ""))
    name = str(attribute.get("bk_property_name") or "")
    if obj_id in TRANSLATED_MODELS:
        prefix = "common" if property_id in COMMON_ATTRIBUTES else obj_id
        translated = PROPERTY_NAMES.get(f"{prefix}_property_{property_id}", ("", ""))
        name = (translated[1] if language == "zh" else translated[0]) or name
    key = _Key(property_id, str(attribute.get("bk_property_type") or ""), attribute.get("option"))
    return {name or property_id: key}


def _parsed_end(obj_id: str, text: str, keys: dict[str, _Key]) -> _End:
    """Step 2e: a key text as the values of the model's key attributes."""
    parts = text.split(",")
    values: dict[str, Any] = {}
    for part in parts:
        pieces = part.strip().split("=")
        if len(pieces) != 2:
            raise ImportRowRefused("import_asst_obj_property_str_primary_format_error", obj_id, text)
        key = keys.get(pieces[0])
        if key is None:
            names = "+".join(piece.split("=")[0] for piece in parts)
            raise ImportRowRefused("import_asst_obj_primary_property_str_not_found", obj_id, names)
        try:
            values[key.property_id] = _typed(pieces[1], key, obj_id)
        except ValueError:
            raise ImportRowRefused("import_asst_obj_property_str_primary_type_error", obj_id, pieces[0]) from None
    if len(values) != len(keys):
        raise ImportRowRefused("import_asst_obj_property_str_primary_count_len", obj_id, text)
    return _End(obj_id, text, values)


def _typed(text: str, key: _Key, obj_id: str) -> Any:
    """A key value converted by its attribute's type, as bk-cmdb's `convStrToCCType` means to (bk-cmdb itself never
    reads the type, so that a typed key never matches there)."""
    if (obj_id == "host" and key.property_id == "bk_cloud_id") or key.type == "int":
        if not _INTEGER.fullmatch(text) or not is_int64(int(text)):
            raise ValueError(text)
        return int(text)
    if key.type == "bool":
        if text not in _GO_BOOLS:
            raise ValueError(text)
        return _GO_BOOLS[text]
    if key.type == "float":
        if not _DECIMAL.fullmatch(text):
            raise ValueError(text)
        return float(text)
    if key.type == "enum":
        if not isinstance(key.option, list):
            raise ValueError(text)  # bk-cmdb: an enum without its options does not convert
        for option in key.option:
            if isinstance(option, dict) and option.get("name") == text and isinstance(option.get("id"), str):
                return option["id"]
    return text


def _same(stored: Any, wanted: Any) -> bool:
    """Whether a stored key value is the value a row names (a number whatever its stored type: 5 is 5.0)."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored is wanted
    return bool(stored == wanted)
