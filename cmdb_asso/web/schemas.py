"""Request schemas, and the helper that validates a body in field order into the contract's codes.

A field reports a failure as the *kind* of error (its marshmallow message); `load_body` turns the first
failing field's kind, in declared order, into the project's typed error naming that field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from cmdb_asso.errors import (
    BodyInvalid,
    BodyNotDecoded,
    BodyUndecodable,
    CmdbError,
    DataEmpty,
    InputInvalid,
    LimitExceeded,
    PageLimitExceeded,
    ParamEmpty,
    ParamMissing,
    ParamNotInteger,
)
from cmdb_asso.inputs import MODEL_ID, int64_or_none, is_int64
from cmdb_asso.service.importing import ImportRequest, ImportRow
from cmdb_asso.service.queries import DetailRequest
from cmdb_asso.service.watch import WatchRequest

MAX_IDS = 500

ErrorMessages = dict[str, str | list[Any] | dict[Any, Any]]
_KINDS: dict[str, Callable[[str], CmdbError]] = {
    "missing": ParamMissing,
    "invalid": BodyInvalid,
    "empty": ParamEmpty,
    "not_integer": ParamNotInteger,
    "no_data": DataEmpty,
    "input_invalid": lambda _name: InputInvalid(),
    "page_limit": lambda _name: PageLimitExceeded(),
    "not_decoded": lambda _name: BodyNotDecoded(),
}
MISSING: ErrorMessages = {"required": "missing", "null": "missing", "invalid": "invalid", "blank": "missing"}
EMPTY: ErrorMessages = {"required": "empty", "null": "empty", "invalid": "invalid", "blank": "empty"}
INTEGER_ID_ERRORS: ErrorMessages = {
    "required": "missing",
    "null": "missing",
    "invalid": "not_integer",
}
ID_LIST_ERRORS: ErrorMessages = {
    "required": "input_invalid",
    "null": "input_invalid",
    "invalid": "not_integer",
    "empty": "input_invalid",
    "too_many": "page_limit",
}
FLAG_ERRORS: ErrorMessages = {"invalid": "invalid", "null": "invalid"}
RAW_LIST_ERRORS: ErrorMessages = {"required": "no_data", "null": "no_data", "invalid": "invalid"}


class PositiveInt64(fields.Field[int]):
    """A JSON integer in 1..2**63-1; booleans, fractions and strings are refused (integral floats pass)."""

    default_error_messages = MISSING

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        number = int64_or_none(value, minimum=1)
        if number is None:
            raise self.make_error("invalid")
        return number


class IntegerId(fields.Field[int]):
    """An id that must be integral (a JSON integer, or ASCII digits as a path parameter carries them): else 1199009."""

    default_error_messages = INTEGER_ID_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        number = int64_or_none(value, from_text=True, minimum=0)
        if number is None:
            raise self.make_error("invalid")
        return number


class PageNumber(fields.Field[int]):
    """A page's start or limit: a JSON integer in 0..2**63-1 (booleans and fractions refused)."""

    default_error_messages = MISSING

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) or (number := int64_or_none(value, minimum=0)) is None:
            raise self.make_error("invalid")
        return number


class StrictBoolean(fields.Field[bool]):
    """A JSON boolean, nothing else: `"true"` or `1` would silently mean something the caller may not mean."""

    default_error_messages = FLAG_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Identifier(fields.Field[str]):
    """A non-empty string of at most 256 characters; an empty one counts as not given."""

    default_error_messages = MISSING

    def __init__(self, *, pattern: re.Pattern[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pattern = pattern

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value.strip():
            raise self.make_error("blank")
        if len(value) > 256 or (self.pattern is not None and not self.pattern.fullmatch(value)):
            raise self.make_error("invalid")
        return value


def model_id_field(**kwargs: Any) -> Identifier:
    """A model id (`bk_obj_id`): a token that can name a table."""
    return Identifier(pattern=MODEL_ID, **kwargs)


class IdList(fields.Field[list[int]]):
    """A non-empty list (else 1199003) of at most 500 (else 1199059) integral ids (else 1199009)."""

    default_error_messages = ID_LIST_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if not value:
            raise self.make_error("empty")
        if len(value) > MAX_IDS:
            raise self.make_error("too_many")
        item_field = IntegerId()
        ids: list[int] = []
        for item in value:
            number = item_field.deserialize(item)
            if number is None:
                raise self.make_error("invalid")
            ids.append(number)
        return ids


class RawList(fields.Field[list[Any]]):
    """A JSON array, its items checked later one by one."""

    default_error_messages = RAW_LIST_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return value


class StringList(fields.Field[list[str]]):
    """A list of field names."""

    default_error_messages = MISSING

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.make_error("invalid")
        return value


class _Schema(Schema):
    class Meta:
        unknown = EXCLUDE


class CreateAssociationSchema(_Schema):
    """The create-one body: bk_obj_asst_id, bk_inst_id, bk_asst_inst_id; other keys are ignored."""

    bk_obj_asst_id = Identifier(required=True, error_messages=MISSING)
    bk_inst_id = PositiveInt64(required=True, error_messages=MISSING)
    bk_asst_inst_id = PositiveInt64(required=True, error_messages=MISSING)
    dry_run = StrictBoolean(load_default=False)


class CreateManySchema(_Schema):
    """The create-many body; empty ids answer 1199011, missing details 1199038."""

    bk_obj_asst_id = Identifier(required=True, error_messages=EMPTY)
    bk_obj_id = model_id_field(required=True, error_messages=EMPTY)
    bk_asst_obj_id = model_id_field(required=True, error_messages=EMPTY)
    details = RawList(required=True)
    atomic = StrictBoolean(load_default=False)
    dry_run = StrictBoolean(load_default=False)


class DetailSchema(_Schema):
    """One detail of create-many."""

    bk_inst_id = PositiveInt64(required=True, error_messages=MISSING)
    bk_asst_inst_id = PositiveInt64(required=True, error_messages=MISSING)


class DeleteOneSchema(_Schema):
    """Delete one: the model whose table holds the link, and the link's id."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    id = IntegerId(required=True)


class DeleteManySchema(_Schema):
    """Delete many: the model, and up to 500 ids."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    id = IdList(required=True)


class FindSchema(_Schema):
    """Find: the model, and a condition checked against the allow-list by the service."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    condition = fields.Raw(load_default=None, allow_none=True)


class PageSchema(_Schema):
    """A page: start, limit (0 or absent means the largest page) and a sort string."""

    start = PageNumber(load_default=0)
    limit = PageNumber(load_default=0)
    sort = fields.String(load_default="", error_messages=MISSING)


class RelatedConditionSchema(_Schema):
    """The instance whose links find-related returns (absent or null: its zero value, which the service refuses)."""

    bk_obj_id = model_id_field(load_default="", allow_none=True, error_messages=MISSING)
    bk_inst_id = PageNumber(load_default=0, allow_none=True)


class RelatedPageSchema(_Schema):
    """Find related's page: start and limit, non-negative (else 1199011); no limit means every link."""

    start = PageNumber(load_default=0, allow_none=True, error_messages={"invalid": "empty"})
    limit = PageNumber(load_default=0, allow_none=True, error_messages={"invalid": "empty"})


class FindRelatedSchema(_Schema):
    """Find related: the instance, the fields to return (required) and a page (sorted by id whatever it says)."""

    condition = fields.Raw(load_default=None)
    fields_ = StringList(data_key="fields", load_default=None)
    page = fields.Raw(load_default=None)


class SearchSchema(_Schema):
    """Search and count: the model, query-builder conditions, fields and a page."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    conditions = fields.Raw(load_default=None, allow_none=True)
    fields_ = StringList(data_key="fields", load_default=None)
    page = fields.Raw(load_default=None)


class SignedIntegerId(fields.Field[int]):
    """An integral id within int64, negatives included (a JSON integer, or ASCII digits as a path carries them):
    else 1199009."""

    default_error_messages = INTEGER_ID_ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        number = int64_or_none(value, from_text=True)
        if number is None:
            raise self.make_error("invalid")
        return number


class TopoSchema(_Schema):
    """Instance topology: the model and the instance (from the path, or the ESB body)."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    bk_inst_id = SignedIntegerId(required=True)


class AssociationTabSchema(_Schema):
    """The Association tab's page: the instance, the page's start and limit, then the model, all from the path."""

    id = IntegerId(required=True)
    start = IntegerId(required=True)
    limit = IntegerId(required=True)
    bk_obj_id = model_id_field(required=True, error_messages=EMPTY | {"invalid": "empty"})


class BusinessPathSchema(_Schema):
    """The business of a business-gated read, from the path: a positive int64 (else 1199006)."""

    bk_biz_id = IntegerId(required=True, error_messages=MISSING, validate=validate.Range(min=1, error="invalid"))


class BusinessHostLinksSchema(_Schema):
    """Host links gated by a business: the model (which must be `host`) and a Find condition; a value of the
    wrong JSON type does not decode."""

    bk_obj_id = fields.String(load_default="", allow_none=True, error_messages={"invalid": "not_decoded"})
    condition = fields.Dict(load_default=None, allow_none=True, error_messages={"invalid": "not_decoded"})


class GraphSchema(_Schema):
    """The graph of many hops: the root instance, which way to walk, how far, along which definitions, and
    how many instances at most."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    bk_inst_id = PositiveInt64(required=True, error_messages=MISSING)
    direction = fields.String(load_default="both", validate=validate.OneOf(["out", "in", "both"]))
    depth = PositiveInt64(load_default=2, validate=validate.Range(max=6))
    bk_obj_asst_ids = StringList(load_default=None)
    max_nodes = PositiveInt64(load_default=None)


class BaseInfoConditionSchema(_Schema):
    """Base info's condition: the instance, the other model and the direction (for the API document)."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    bk_inst_id = PositiveInt64(required=True, error_messages=MISSING)
    association_obj_id = model_id_field(required=True, error_messages=MISSING)
    is_target_object = StrictBoolean(load_default=False)


class BaseInfoSchema(_Schema):
    """Base info of linked instances: the condition and a page of links (for the API document; the body is
    checked by `load_base_info`, in bk-cmdb's order and codes)."""

    condition = fields.Nested(BaseInfoConditionSchema, required=True)
    page = fields.Raw(load_default=None)


def load_base_info(body: Any) -> dict[str, Any]:
    """Base info's body checked in the order of CONTRACT-reads 13: the instance's model, its id (0 or missing
    1199010, negative 1199011), the other model, the direction, then the page (negative start or limit 1199011,
    limit 0 means 20, over 1000 1199059 unless it is bk-cmdb's 999999999)."""
    if not isinstance(body, dict):
        raise BodyInvalid("body")
    condition = body.get("condition") or {}
    if not isinstance(condition, dict):
        raise BodyInvalid("condition")
    obj_id = _model_id(condition, "bk_obj_id")
    inst_id = condition.get("bk_inst_id")
    if inst_id is None or (inst_id == 0 and not isinstance(inst_id, bool)):
        raise ParamMissing("bk_inst_id")
    number = None if isinstance(inst_id, bool) else int64_or_none(inst_id)
    if number is None:
        raise BodyInvalid("bk_inst_id")
    if number < 0:
        raise ParamEmpty("bk_inst_id")
    other = _model_id(condition, "association_obj_id")
    is_target = condition.get("is_target_object", False)
    if not isinstance(is_target, bool):
        raise BodyInvalid("is_target_object")
    page = body.get("page") or {}
    if not isinstance(page, dict):
        raise BodyInvalid("page")
    start, limit = (_page_number(page, name) for name in ("start", "limit"))
    sort = page.get("sort") or ""
    if not isinstance(sort, str):
        raise BodyInvalid("page.sort")
    return {"obj_id": obj_id, "inst_id": number, "other_obj_id": other, "is_target": is_target, "start": start,
            "limit": limit, "sort": sort}  # fmt: skip


class DetailConditionSchema(_Schema):
    """Links with details: the query-builder filter on link fields, the fields of each part, which instances."""

    asst_filter = fields.Raw(required=True, metadata={"description": "query-builder rule tree on link fields"})
    asst_fields = StringList(load_default=None)
    src_fields = StringList(load_default=None)
    dst_fields = StringList(load_default=None)
    src_detail = StrictBoolean(load_default=False)
    dst_detail = StrictBoolean(load_default=False)


class DetailPageSchema(_Schema):
    """A page of links with details: `limit` is required, 1 to 200."""

    start = PageNumber(load_default=0)
    limit = PageNumber(required=True)
    sort = fields.String(load_default="")


class LinksWithInstancesSchema(_Schema):
    """Links with instance details (for the API document; the body is checked by `load_detail_request`, in
    bk-cmdb's order and codes)."""

    bk_obj_id = model_id_field(required=True, error_messages=MISSING)
    condition = fields.Nested(DetailConditionSchema, required=True)
    page = fields.Nested(DetailPageSchema, required=True)


def load_detail_request(body: Any) -> DetailRequest:
    """Links-with-details' body decoded as bk-cmdb decodes it: a value of the wrong type anywhere answers
    1199000 (CONTRACT-reads 12 step 1); the service checks what it means."""
    if not isinstance(body, dict):
        raise BodyUndecodable()
    obj_id = _model_id(body, "bk_obj_id")
    condition = _decoded(body.get("condition"), dict) or {}
    page = _decoded(body.get("page"), dict) or {}
    lists = {name: tuple(_decoded_strings(condition.get(name))) for name in ("asst_fields", "src_fields", "dst_fields")}
    flags = {name: bool(_decoded(condition.get(name), bool)) for name in ("src_detail", "dst_detail")}
    start, limit = (_decoded_int(page.get(name)) for name in ("start", "limit"))
    return DetailRequest(
        obj_id, condition.get("asst_filter"), lists["asst_fields"], lists["src_fields"], lists["dst_fields"],
        flags["src_detail"], flags["dst_detail"], start, limit, _decoded(page.get("sort"), str) or "",
    )  # fmt: skip


class ModelAssociationsSchema(_Schema):
    """Model associations by condition (for the API document; `load_model_associations` decodes the body): only
    `condition` is used, on the fields of `cc_ObjAsst`."""

    condition = fields.Dict(load_default=None)
    fields_ = StringList(load_default=None, data_key="fields")
    page = fields.Dict(load_default=None)
    time_condition = fields.Dict(load_default=None)
    disable_counter = StrictBoolean(load_default=False)


def load_model_associations(body: Any) -> Any:
    """Model associations' body decoded as bk-cmdb decodes its QueryCondition (a value of the wrong type answers
    1199000): the condition."""
    if not isinstance(body, dict):
        raise BodyUndecodable()
    _decoded_strings(body.get("fields"))
    for name in ("page", "time_condition"):
        _decoded(body.get(name), dict)
    _decoded(body.get("disable_counter"), bool)
    return _decoded(body.get("condition"), dict)


class DefinitionsByIdsSchema(_Schema):
    """Definitions of a model by their ids: the model (from the path) and the ids (for the API document;
    `load_definitions_by_ids` decodes the body)."""

    bk_obj_id = fields.String(required=True)
    bk_obj_asst_ids = StringList(load_default=None)


def load_definitions_by_ids(body: Any) -> list[str]:
    """The ids of definitions-by-ids' body; a value of the wrong type answers 1199006 with 1199000's text, as
    bk-cmdb wraps its decoder's failure there."""
    if not isinstance(body, dict):
        raise BodyNotDecoded()
    try:
        return _decoded_strings(body.get("bk_obj_asst_ids"))
    except BodyUndecodable:
        raise BodyNotDecoded() from None


class PermissionSchema(_Schema):
    """A denial's permission object, as a 9900403 answer carries it (for the API document)."""

    system_id = fields.String(load_default="bk_cmdb")
    system_name = fields.String(load_default="")
    actions = fields.List(fields.Dict(), load_default=list)


class ImportRowSchema(_Schema):
    """One row of an Excel import."""

    bk_obj_asst_id = fields.String(load_default="")
    operate = fields.Integer(load_default=0, metadata={"description": "2 add, 3 delete, 1 any other text"})
    src_primary_key = fields.String(load_default="", metadata={"description": "<display name>=<value>[,...]"})
    dst_primary_key = fields.String(load_default="")


class ImportSchema(_Schema):
    """An Excel import's rows by row number, and the unique rules naming each model's instances (for the API
    document; `load_import_request` decodes the body)."""

    bk_obj_id = fields.String(required=True)
    association_info = fields.Dict(keys=fields.String(), values=fields.Nested(ImportRowSchema), load_default=None)
    asst_object_unique_id_info = fields.Dict(keys=fields.String(), values=fields.Integer(), load_default=None)
    object_unique_id = fields.Integer(load_default=0)


_ROW_NUMBER = re.compile(r"[+-]?[0-9]+")


def load_import_request(body: Any, max_rows: int) -> ImportRequest:
    """An import's body decoded as bk-cmdb decodes it (a value of the wrong type, or a row key that is not a decimal
    integer, answers 1199006 with 1199000's text); more rows than `max_rows` answer 1199035."""
    try:
        if not isinstance(body, dict):
            raise BodyUndecodable()
        rows: dict[int, ImportRow] = {}
        for key, row in (_decoded(body.get("association_info"), dict) or {}).items():
            number = int(key) if _ROW_NUMBER.fullmatch(key) else None
            if number is None or not is_int64(number):
                raise BodyUndecodable()
            fields_ = _decoded(row, dict) or {}
            texts = [_decoded(fields_.get(name), str) or "" for name in ("bk_obj_asst_id", "src_primary_key",
                                                                         "dst_primary_key")]  # fmt: skip
            rows[number] = ImportRow(texts[0], _decoded_int(fields_.get("operate")), texts[1], texts[2])
        others = _decoded(body.get("asst_object_unique_id_info"), dict) or {}
        other_unique_ids = {str(obj_id): _decoded_int(unique_id) for obj_id, unique_id in others.items()}
        unique_id = _decoded_int(body.get("object_unique_id"))
    except BodyUndecodable:
        raise BodyNotDecoded() from None
    if len(rows) > max_rows:
        raise LimitExceeded("association_info", max_rows)
    return ImportRequest(str(body.get("bk_obj_id", "")), rows, unique_id, other_unique_ids)


class WatchFilterSchema(_Schema):
    """Which model's links to watch."""

    bk_sub_resource = fields.String(load_default="")


class WatchSchema(_Schema):
    """Link events (for the API document; the body is checked by `load_watch_request`)."""

    bk_resource = fields.String(required=True, metadata={"description": "inst_asst"})
    bk_event_types = StringList(load_default=None, metadata={"description": "create, update, delete"})
    bk_fields = StringList(load_default=None)
    bk_start_from = fields.Integer(load_default=0, metadata={"description": "unix seconds"})
    bk_cursor = fields.String(load_default="")
    bk_filter = fields.Nested(WatchFilterSchema, load_default=None)


def load_watch_request(body: Any) -> tuple[str, WatchRequest]:
    """A watch body decoded as bk-cmdb decodes it (a value of the wrong type answers 1199000): the resource
    and the request."""
    if not isinstance(body, dict):
        raise BodyUndecodable()
    watch_filter = _decoded(body.get("bk_filter"), dict) or {}
    request = WatchRequest(
        tuple(_decoded_strings(body.get("bk_event_types"))), tuple(_decoded_strings(body.get("bk_fields"))),
        _decoded_int(body.get("bk_start_from")), _decoded(body.get("bk_cursor"), str) or "",
        _decoded(watch_filter.get("bk_sub_resource"), str) or "",
    )  # fmt: skip
    return _decoded(body.get("bk_resource"), str) or "", request


def _decoded(value: Any, kind: type) -> Any:
    """`value` if it is null or of `kind` (a JSON null decodes to Go's zero value), else 1199000."""
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise BodyUndecodable()
    return value


def _decoded_strings(value: Any) -> list[str]:
    items = _decoded(value, list) or []
    if not all(isinstance(item, str) for item in items):
        raise BodyUndecodable()
    return list(items)


def _decoded_int(value: Any) -> int:
    if value is None:
        return 0
    if not is_int64(value):
        raise BodyUndecodable()
    return int(value)


def _model_id(condition: dict[str, Any], name: str) -> str:
    value = condition.get(name)
    if value is None or value == "":
        raise ParamMissing(name)
    if not isinstance(value, str) or not MODEL_ID.fullmatch(value):
        raise BodyInvalid(name)
    return value


def _page_number(page: dict[str, Any], name: str) -> int:
    value = page.get(name, 0)
    number = None if isinstance(value, bool) else int64_or_none(value)
    if number is None:
        raise BodyInvalid(f"page.{name}")
    if number < 0:
        raise ParamEmpty(f"page.{name}")
    return number


def load_body(schema: Schema, body: Any, *, prefix: str = "") -> dict[str, Any]:
    """Validate `body`; the first failing field in declared order answers the error of its kind."""
    if not isinstance(body, dict):
        raise BodyInvalid(prefix.rstrip(".") or "body")
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        errors = exc.normalized_messages()  # type: ignore[no-untyped-call]
        for name, field in schema.fields.items():
            key = field.data_key or name
            if key in errors:
                messages = errors[key]
                kind = messages[0] if isinstance(messages, list) and messages else "invalid"
                raise _KINDS.get(str(kind), BodyInvalid)(f"{prefix}{key}") from exc
        raise BodyInvalid(prefix.rstrip(".") or "body") from exc
    return loaded


def check_batch_shape(body: dict[str, Any], limit: int) -> None:
    """Create-many's request checks after the fields: details present, within the limit, ids consistent."""
    details = body["details"]
    if not details:
        raise DataEmpty("details")
    if len(details) > limit:
        raise LimitExceeded("details", limit)
    if not body["bk_obj_asst_id"].startswith(body["bk_obj_id"]):
        raise BodyInvalid("bk_obj_asst_id")
    if not body["bk_obj_asst_id"].endswith(body["bk_asst_obj_id"]):
        raise BodyInvalid("bk_obj_asst_id")


def load_detail(detail: Any) -> tuple[int, int] | CmdbError:
    """One create-many detail as a pair, or the error that refuses it."""
    if not isinstance(detail, dict):
        return BodyInvalid("details")
    try:
        loaded = load_body(DETAIL_SCHEMA, detail)
    except CmdbError as error:
        return error
    return loaded["bk_inst_id"], loaded["bk_asst_inst_id"]


DETAIL_SCHEMA = DetailSchema()
