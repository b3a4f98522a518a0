"""Query filters: the allow-listed `condition` of find, and the query builder of search and count.

Both produce a MongoDB filter from caller input only after checking every key, at every depth, arrays
included, so that nothing but association fields and plain comparison operators reaches MongoDB.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cmdb_asso.errors import BodyInvalid, BodyUndecodable, CmdbError, LimitExceeded, ParamEmpty
from cmdb_asso.inputs import exact_float, is_int64
from cmdb_asso.service.patterns import is_cheap

# Association fields a caller may filter on, and the type each holds.
INT_FIELDS = frozenset({"id", "bk_inst_id", "bk_asst_inst_id", "bk_biz_id"})
STRING_FIELDS = frozenset({"bk_obj_id", "bk_asst_obj_id", "bk_obj_asst_id", "bk_asst_id", "bk_supplier_account"})
ASSOCIATION_FIELDS = INT_FIELDS | STRING_FIELDS
# The type of each field a condition may name: a link's, and a definition's (`cc_ObjAsst`).
LINK_FIELD_TYPES: dict[str, type] = {**dict.fromkeys(INT_FIELDS, int), **dict.fromkeys(STRING_FIELDS, str)}
_DEFINITION_TEXT_FIELDS = ("bk_supplier_account", "bk_obj_asst_id", "bk_obj_asst_name", "bk_obj_id",
                           "bk_asst_obj_id", "bk_asst_id", "mapping", "on_delete")  # fmt: skip
DEFINITION_FIELD_TYPES: dict[str, type] = {"id": int, **dict.fromkeys(_DEFINITION_TEXT_FIELDS, str), "ispre": bool}
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


def _check_value(field: str, value: Any, where: str, types: dict[str, type]) -> None:
    """A comparison value must be a scalar of the field's type (None is allowed, as MongoDB allows it);
    an integer must fit int64, or BSON could not encode the query."""
    if value is None:
        return
    if types[field] is bool:
        if not isinstance(value, bool):
            raise BodyInvalid(where)
    elif types[field] is int:
        # orjson reads an integer past 64 bits as a float; past 2**53 a float names no one integer.
        in_range = isinstance(value, float) and exact_float(value)
        if not (is_int64(value) or in_range):
            raise BodyInvalid(where)
    elif not isinstance(value, str):
        raise BodyInvalid(where)


def _check_field_condition(field: str, condition: Any, types: dict[str, type]) -> dict[str, Any] | Any:
    if not isinstance(condition, dict):
        if not _is_scalar(condition):
            raise BodyInvalid(field)
        _check_value(field, condition, field, types)
        return condition
    if not condition:
        raise BodyInvalid(field)
    checked: dict[str, Any] = {}
    for operator, value in condition.items():
        if operator in COMPARISONS:
            _check_value(field, value, operator, types)
        elif operator in LIST_OPERATORS:
            if not isinstance(value, list):
                raise BodyInvalid(operator)
            if len(value) > MAX_VALUES:
                raise LimitExceeded(operator, MAX_VALUES)
            for item in value:
                if not _is_scalar(item):
                    raise BodyInvalid(operator)
                _check_value(field, item, operator, types)
        elif operator == "$exists":
            if not isinstance(value, bool):
                raise BodyInvalid(operator)
        else:
            raise BodyInvalid(str(operator))
        checked[operator] = value
    return checked


def check_condition(condition: Any, depth: int = 0, types: dict[str, type] = LINK_FIELD_TYPES) -> dict[str, Any]:
    """Check a find `condition` against the allow-list (the fields of `types`, links' by default) and return it
    as a MongoDB filter; else 1199006."""
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
            checked[key] = [check_condition(item, depth + 1, types) for item in value]
        elif key in types:
            checked[key] = _check_field_condition(key, value, types)
        else:
            raise BodyInvalid(str(key))
    return checked


def _merge_and(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """An AND of parts on distinct fields as one plain filter (the same query, and one that simpler query
    planners, the embedded server's among them, can serve from an index); `$and` otherwise."""
    merged: dict[str, Any] = {}
    for part in parts:
        if any(key in merged or key.startswith("$") for key in part):
            return {"$and": parts}
        merged.update(part)
    return merged


# The query builder of links with instance details (CONTRACT-reads 12): bk-cmdb's whole operator set, each
# failure answered with the rule's path (`condition.asst_filter.rules[0].value`), and our bounds of section 8.
RULE_OPERATORS = frozenset(
    {
        *BUILDER_OPERATORS,
        "datetime_less", "datetime_less_or_equal", "datetime_greater", "datetime_greater_or_equal",
        "begins_with", "not_begins_with", "contains", "not_contains", "ends_with", "not_ends_with",
        "is_empty", "is_not_empty", "is_null", "is_not_null",
    }
)  # fmt: skip
_NUMERIC_OPERATORS = {"less": "$lt", "less_or_equal": "$lte", "greater": "$gt", "greater_or_equal": "$gte"}
_DATETIME_OPERATORS = {f"datetime_{name}": mongo for name, mongo in _NUMERIC_OPERATORS.items()}
# operator: (pattern template, negated, case-insensitive)
_PATTERN_OPERATORS = {
    "begins_with": ("^{}", False, False),
    "not_begins_with": ("^{}", True, False),
    "contains": ("{}", False, True),
    "not_contains": ("{}", True, False),
    "ends_with": ("{}$", False, False),
    "not_ends_with": ("{}$", True, False),
}
_VALUELESS: dict[str, dict[str, Any]] = {
    "is_empty": {"$eq": []},
    "is_not_empty": {"$ne": []},
    "is_null": {"$eq": None},
    "is_not_null": {"$ne": None},
    "exist": {"$exists": True},
    "not_exist": {"$exists": False},
}
# bk-cmdb's field pattern (QB/types.go), with Go's ASCII `\w`.
_RULE_FIELD = re.compile(r"[a-zA-Z0-9][0-9A-Za-z_\-.]*")
_NAIVE_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[\t\n\f\r ][0-9]{2}:[0-9]{2}:[0-9]{2}")
_ZONED_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
MAX_PATTERN_LENGTH = 256
ASST_FILTER = "condition.asst_filter"


@dataclass(frozen=True, slots=True)
class AtomRule:
    """One rule: a field, an operator and its value."""

    field: str
    operator: str
    value: Any


@dataclass(frozen=True, slots=True)
class CombinedRule:
    """Rules joined by AND or OR."""

    condition: str
    rules: tuple[AtomRule | CombinedRule, ...]


Rule = AtomRule | CombinedRule


def parse_rule_tree(data: Any) -> Rule | None:
    """A rule tree decoded as bk-cmdb decodes it (QB/parser.go): a rule with `condition` is combined, one with
    `operator` is atomic, null items are dropped; any other shape or a value of the wrong type answers 1199000."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BodyUndecodable()
    if "condition" in data:
        condition, rules = data.get("condition"), data.get("rules")
        if not isinstance(condition, str | None) or not isinstance(rules, list | None):
            raise BodyUndecodable()
        parsed = [parse_rule_tree(item) for item in rules or ()]
        return CombinedRule(condition or "", tuple(rule for rule in parsed if rule is not None))
    if "operator" in data:
        field, operator = data.get("field"), data.get("operator")
        if not isinstance(field, str | None) or not isinstance(operator, str | None):
            raise BodyUndecodable()
        return AtomRule(field or "", operator or "", data.get("value"))
    raise BodyUndecodable()


def check_rule_tree(rule: Rule | None) -> CombinedRule:
    """The checks of CONTRACT-reads 12 step 3 on a decoded tree, each failure 1199011 with the rule's path."""
    if rule is None or not isinstance(rule, CombinedRule):
        raise ParamEmpty(ASST_FILTER)
    _check_combined(rule, f"{ASST_FILTER}.", 1, ParamEmpty)
    return rule


def query_builder_filter(tree: Rule | None) -> dict[str, Any]:
    """Search's and count's decoded `conditions` (`parse_rule_tree`, 1199000) as a MongoDB filter (CONTRACT-ui
    Correction d): every rule checked with its path under `conditions.` (1199006), a tree deeper than 3 checked last
    (1199006 'conditions.rules'), translated as links with details translate theirs; none matches everything."""
    if tree is None:
        return {}
    if not isinstance(tree, CombinedRule):
        raise BodyInvalid("conditions.")
    _check_combined(tree, "conditions.", 1, BodyInvalid, bounded=False)
    if _depth(tree) > BUILDER_MAX_DEPTH:
        raise BodyInvalid("conditions.rules")
    return rule_tree_filter(tree, "conditions.")


def _depth(rule: Rule) -> int:
    """bk-cmdb's depth of a rule (QB GetDeep): 1 for a rule, one more than its deepest rule for a group."""
    return 1 + max(map(_depth, rule.rules), default=0) if isinstance(rule, CombinedRule) else 1


def _check_combined(
    rule: CombinedRule, path: str, depth: int, error: Callable[[str], CmdbError], *, bounded: bool = True
) -> None:
    if bounded and depth > BUILDER_MAX_DEPTH - 1:  # a combined rule this deep would put its rules past the bound
        raise error(path.rstrip("."))
    if rule.condition not in ("AND", "OR"):
        raise error(f"{path}condition")
    if not rule.rules or (rule.condition == "OR" and len(rule.rules) > BUILDER_MAX_OR_RULES):
        raise error(f"{path}rules")
    for index, child in enumerate(rule.rules):
        where = f"{path}rules[{index}]."
        if isinstance(child, CombinedRule):
            _check_combined(child, where, depth + 1, error, bounded=bounded)
        else:
            _check_atom(child, where, error)


def _check_atom(rule: AtomRule, path: str, error: Callable[[str], CmdbError]) -> None:
    if rule.operator not in RULE_OPERATORS:
        raise error(f"{path}operator")
    if not _RULE_FIELD.fullmatch(rule.field) or rule.field not in ASSOCIATION_FIELDS:
        raise error(f"{path}field")
    if not _value_fits(rule.operator, rule.value):
        raise error(f"{path}value")


def _kind(value: Any) -> str | None:
    """bk-cmdb's value kinds: numeric, boolean, string; None for anything else (or an integer BSON cannot hold)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "numeric" if is_int64(value) else None
    if isinstance(value, float):
        return "numeric" if exact_float(value) else None
    return "string" if isinstance(value, str) else None


def _value_fits(operator: str, value: Any) -> bool:
    if operator in ("equal", "not_equal"):
        return _kind(value) is not None
    if operator in ("in", "not_in"):
        if value is None:
            return True
        if not isinstance(value, list) or len(value) > MAX_VALUES:
            return False
        kinds = {_kind(item) for item in value}
        return None not in kinds and len(kinds) <= 1
    if operator in _NUMERIC_OPERATORS:
        return _kind(value) == "numeric"
    if operator in _DATETIME_OPERATORS:
        return isinstance(value, str) and _datetime_shape(value)
    if operator in _PATTERN_OPERATORS:
        template = _PATTERN_OPERATORS[operator][0]
        return isinstance(value, str) and 0 < len(value) <= MAX_PATTERN_LENGTH and is_cheap(template.format(value))
    return True  # the rest take no value


def _datetime_shape(value: str) -> bool:
    if _NAIVE_DATETIME.fullmatch(value) or _ZONED_DATETIME.fullmatch(value):
        return True
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return len(value) == 10


def rule_tree_filter(rule: CombinedRule, path: str = "") -> dict[str, Any]:
    """A checked tree as the MongoDB filter bk-cmdb builds (QB/types.go ToMgo); a datetime that has the shape
    but names no real time answers 1199006 with the rule's path (step 6)."""
    parts = []
    for index, child in enumerate(rule.rules):
        where = f"{path}rules[{index}]"
        if isinstance(child, CombinedRule):
            parts.append(rule_tree_filter(child, f"{where}."))
        else:
            parts.append(_atom_filter(child, where))
    return _merge_and(parts) if rule.condition == "AND" else {"$or": parts}


def _atom_filter(rule: AtomRule, path: str) -> dict[str, Any]:
    operator, value = rule.operator, rule.value
    if operator in _VALUELESS:
        return {rule.field: dict(_VALUELESS[operator])}
    if operator in _PATTERN_OPERATORS:
        template, negated, insensitive = _PATTERN_OPERATORS[operator]
        pattern: dict[str, Any] = {"$regex": template.format(value)}
        if insensitive:
            pattern["$options"] = "i"
        # `$nor` of the match rather than bk-cmdb's field-level `$not`: the same documents (those without the
        # field included), and a form the embedded server also runs.
        return {"$nor": [{rule.field: pattern}]} if negated else {rule.field: pattern}
    if operator in _DATETIME_OPERATORS:
        return {rule.field: {_DATETIME_OPERATORS[operator]: _datetime_value(value, f"{path}.value")}}
    if operator in ("in", "not_in"):
        return {rule.field: {BUILDER_OPERATORS[operator]: list(value or [])}}
    return {rule.field: {BUILDER_OPERATORS[operator]: value}}


def _datetime_value(value: str, path: str) -> datetime | str:
    """bk-cmdb's reading: a date and time (without a zone: the server's, here UTC) as a time; a date alone stays
    the string it is."""
    try:
        if _NAIVE_DATETIME.fullmatch(value):
            return datetime.strptime(value[:10] + " " + value[11:], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        if _ZONED_DATETIME.fullmatch(value):
            head, _, rest = value.partition(".")
            if rest:  # Python reads at most six digits of a fraction
                digits = re.match(r"[0-9]+", rest)
                assert digits is not None
                value = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):  # no such time, or one that UTC cannot hold (0001-01-01T00:00:00+14:00)
        raise BodyInvalid(path) from None
    return value
