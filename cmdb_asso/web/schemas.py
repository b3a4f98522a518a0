"""Request schemas, and the helper that validates a body in field order into the contract's codes."""

from __future__ import annotations

import math
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from cmdb_asso.errors import BodyInvalid, ParamMissing

INT64_MAX = 2**63 - 1
_MISSING = "missing"
_INVALID = "invalid"
_ERRORS: dict[str, str | list[Any] | dict[Any, Any]] = {
    "required": _MISSING,
    "null": _MISSING,
    "invalid": _INVALID,
}


class PositiveInt64(fields.Field[int]):
    """A JSON integer in 1..2**63-1; booleans, fractions and strings are refused (integral floats pass)."""

    default_error_messages = _ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise self.make_error("invalid")
            value = int(value)
        if not isinstance(value, int) or not 0 < value <= INT64_MAX:
            raise self.make_error("invalid")
        return value


class Identifier(fields.Field[str]):
    """A non-empty string id of at most 256 characters; an empty one counts as unassigned."""

    default_error_messages = _ERRORS

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value.strip():
            raise self.make_error("required")
        if len(value) > 256:
            raise self.make_error("invalid")
        return value


class CreateAssociationSchema(Schema):
    """The create-one body: bk_obj_asst_id, bk_inst_id, bk_asst_inst_id; other keys are ignored."""

    class Meta:
        unknown = EXCLUDE

    bk_obj_asst_id = Identifier(required=True, error_messages=_ERRORS)
    bk_inst_id = PositiveInt64(required=True, error_messages=_ERRORS)
    bk_asst_inst_id = PositiveInt64(required=True, error_messages=_ERRORS)


def load_body(schema: Schema, body: Any) -> dict[str, Any]:
    """Validate `body`; the first failing field in declared order answers 1199010 (unassigned) or 1199006."""
    if not isinstance(body, dict):
        raise BodyInvalid("body")
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        errors = exc.normalized_messages()  # type: ignore[no-untyped-call]
        for name in schema.fields:
            if name in errors:
                messages = errors[name]
                if isinstance(messages, list) and _MISSING in messages:
                    raise ParamMissing(name) from exc
                raise BodyInvalid(name) from exc
        raise BodyInvalid("body") from exc
    return loaded
