"""Query filters: the allow-listed `condition` of find, and the query builder of search and count.

Both produce a MongoDB filter from caller input only after checking every key, at every depth, arrays
included, so that nothing but association fields and plain comparison operators reaches MongoDB.
"""

from __future__ import annotations

from typing import Any

from cmdb_asso.errors import BodyInvalid, LimitExceeded
from cmdb_asso.inputs import INT64_MAX, INT64_MIN, is_int64

# Association fields a caller may filter on, and the type each holds.
INT_FIELDS = frozenset({"id", "bk_inst_id", "bk_asst_inst_id", "bk_biz_id"})
STRING_FIELDS = frozenset({"bk_obj_id", "bk_asst_obj_id", "bk_obj_asst_id", "bk_asst_id", "bk_supplier_account"})
ASSOCIATION_FIELDS = INT_FIELDS | STRING_FIELDS
COMPARISONS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
LIST_OPERATORS = frozenset({"$in", "$nin"})
LOGICAL = frozenset({"$and", "$or"})
MAX_DEPTH = 8
MAX_VALUES = 500

# The query builder (search and count).
BUILDER_FIELDS = frozenset(
    {"id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_obj_asst_id", "bk_asst_id"}
)
BUILDER_OPERATORS = {
    "equal": "$eq",
    "not_equal": "$ne",
    "in": "$in",
    "not_in": "$nin",
    "less": "$lt",
    "less_or_equal": "$lte",
    "greater": "$gt",
    "greater_or_equal": "$gte",
    "exist": "$exists",
    "not_exist": "$exists",
}
BUILDER_MAX_DEPTH = 3
BUILDER_MAX_OR_RULES = 20


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _check_value(field: str, value: Any, where: str) -> None:
    """A comparison value must be a scalar of the field's type (None is allowed, as MongoDB allows it);
    an integer must fit int64, or BSON could not encode the query."""
    if value is None:
        return
    if field in INT_FIELDS:
        # orjson reads an integer past 64 bits as a float: bounded the same way, a number means one thing.
        in_range = isinstance(value, float) and INT64_MIN <= value <= INT64_MAX
        if not (is_int64(value) or in_range):
            raise BodyInvalid(where)
    elif not isinstance(value, str):
        raise BodyInvalid(where)


def _check_field_condition(field: str, condition: Any) -> dict[str, Any] | Any:
    if not isinstance(condition, dict):
        if not _is_scalar(condition):
            raise BodyInvalid(field)
        _check_value(field, condition, field)
        return condition
    if not condition:
        raise BodyInvalid(field)
    checked: dict[str, Any] = {}
    for operator, value in condition.items():
        if operator in COMPARISONS:
            _check_value(field, value, operator)
        elif operator in LIST_OPERATORS:
            if not isinstance(value, list):
                raise BodyInvalid(operator)
            if len(value) > MAX_VALUES:
                raise LimitExceeded(operator, MAX_VALUES)
            for item in value:
                if not _is_scalar(item):
                    raise BodyInvalid(operator)
                _check_value(field, item, operator)
        elif operator == "$exists":
            if not isinstance(value, bool):
                raise BodyInvalid(operator)
        else:
            raise BodyInvalid(str(operator))
        checked[operator] = value
    return checked


def check_condition(condition: Any, depth: int = 0) -> dict[str, Any]:
    """Check a find `condition` against the allow-list and return it as a MongoDB filter; else 1199006."""
    if condition is None and depth == 0:
        return {}
    if not isinstance(condition, dict):
        raise BodyInvalid("condition")
    if depth > MAX_DEPTH:
        raise BodyInvalid("condition")
    checked: dict[str, Any] = {}
    for key, value in condition.items():
        if key in LOGICAL:
            if not isinstance(value, list) or not value:
                raise BodyInvalid(key)
            if len(value) > MAX_VALUES:
                raise LimitExceeded(key, MAX_VALUES)
            checked[key] = [check_condition(item, depth + 1) for item in value]
        elif key in ASSOCIATION_FIELDS:
            checked[key] = _check_field_condition(key, value)
        else:
            raise BodyInvalid(str(key))
    return checked


def _builder_rule(rule: dict[str, Any]) -> dict[str, Any]:
    field, operator, value = rule.get("field"), rule.get("operator"), rule.get("value")
    if not isinstance(field, str) or field not in BUILDER_FIELDS:
        raise BodyInvalid("field")
    if not isinstance(operator, str) or operator not in BUILDER_OPERATORS:
        raise BodyInvalid("operator")
    mongo_operator = BUILDER_OPERATORS[operator]
    if operator in ("exist", "not_exist"):
        return {field: {"$exists": operator == "exist"}}
    if operator in ("in", "not_in"):
        if not isinstance(value, list):
            raise BodyInvalid("value")
        if len(value) > MAX_VALUES:
            raise LimitExceeded("value", MAX_VALUES)
        for item in value:
            if item is None or not _is_scalar(item):
                raise BodyInvalid("value")
            _check_value(field, item, "value")
    else:
        if value is None or not _is_scalar(value):
            raise BodyInvalid("value")
        _check_value(field, value, "value")
    return {field: {mongo_operator: value}}


def translate_query(conditions: Any, depth: int = 1) -> dict[str, Any]:
    """Turn query-builder `conditions` into a MongoDB filter (search and count share it); else 1199006."""
    if conditions is None and depth == 1:
        return {}
    if not isinstance(conditions, dict):
        raise BodyInvalid("conditions")
    if depth > BUILDER_MAX_DEPTH:
        raise LimitExceeded("conditions depth", BUILDER_MAX_DEPTH)
    combinator = conditions.get("condition")
    rules = conditions.get("rules")
    if combinator not in ("AND", "OR"):
        raise BodyInvalid("condition")
    if not isinstance(rules, list) or not rules:
        raise BodyInvalid("rules")
    if combinator == "OR" and len(rules) > BUILDER_MAX_OR_RULES:
        raise LimitExceeded("rules", BUILDER_MAX_OR_RULES)
    parts = []
    for rule in rules:
        if not isinstance(rule, dict):
            raise BodyInvalid("rules")
        parts.append(translate_query(rule, depth + 1) if "condition" in rule else _builder_rule(rule))
    if combinator == "AND":
        return _merge_and(parts)
    return {"$or": parts}


def _merge_and(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """An AND of parts on distinct fields as one plain filter (the same query, and one that simpler query
    planners, the embedded server's among them, can serve from an index); `$and` otherwise."""
    merged: dict[str, Any] = {}
    for part in parts:
        if any(key in merged or key.startswith("$") for key in part):
            return {"$and": parts}
        merged.update(part)
    return merged
