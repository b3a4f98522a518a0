"""The IAM evaluator checked against BlueKing's own, the bk-iam SDK's (a development-only oracle, CONTRACT-blueking
6.3 item 12): the same answer on generated well-formed expressions whose attributes are all present; with
attributes missing, the SDK's answer once each atom on a missing attribute is false (the contract's rule 4.4-2,
IAM's own), where the SDK itself raises or fails open."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iam.eval.expression import make_expression  # type: ignore[import-untyped]
from iam.eval.object import ObjectSet  # type: ignore[import-untyped]

from cmdb_asso.service.iam import allows

IDS = st.sampled_from(["1", "2", "21", "22", "abc"])
PATHS = st.sampled_from(["/biz,1/", "/biz,2/", "/biz,1/set,2/", "/biz,1/set,*/", "/biz,"])
WORDS = st.sampled_from(["a", "b", "ab", "x", "core-sw"])
NUMBERS = st.integers(min_value=-3, max_value=3)
TEXT_OPS = ["eq", "not_eq", "starts_with", "not_starts_with", "ends_with", "not_ends_with", "string_contains"]


def _atom(field: str, ops: list[str], values: Any) -> Any:
    return st.builds(lambda op, value: {"op": op, "field": field, "value": value}, st.sampled_from(ops), values)


ATOMS = st.one_of(
    _atom("host.id", TEXT_OPS, IDS),
    _atom("host.id", ["in", "not_in"], st.lists(IDS, max_size=3)),
    _atom("host._bk_iam_path_", ["starts_with", "not_starts_with", "eq", "not_eq"], PATHS),
    _atom("host._bk_iam_path_", ["in", "not_in"], st.lists(PATHS, max_size=3)),
    _atom("host.level", ["eq", "not_eq", "lt", "lte", "gt", "gte"], NUMBERS),
    _atom("host.level", ["in", "not_in"], st.lists(NUMBERS, max_size=3)),
    _atom("host.tags", ["contains", "not_contains"], WORDS),
    _atom("host.name", TEXT_OPS, WORDS),
    st.just({"op": "any", "field": "", "value": []}),
)
EXPRESSIONS = st.recursive(
    ATOMS,
    lambda children: st.builds(
        lambda op, content: {"op": op, "content": content}, st.sampled_from(["AND", "OR"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)  # fmt: skip
HOSTS = st.fixed_dictionaries({
    "id": IDS, "_bk_iam_path_": st.lists(PATHS.filter(lambda path: "*" not in path), min_size=1, max_size=2),
    "level": NUMBERS, "tags": st.lists(WORDS, max_size=3), "name": WORDS,
})  # fmt: skip
ORACLE = settings(max_examples=1500, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


def sdk_allows(expression: dict[str, Any], objects: dict[str, dict[str, Any]]) -> bool | None:
    """The SDK's answer; None when it raises."""
    object_set = ObjectSet()
    for resource_type, attributes in objects.items():
        object_set.add_object(resource_type, dict(attributes))
    try:
        return bool(make_expression(expression).eval(object_set))
    except Exception:
        return None


@ORACLE
@given(EXPRESSIONS, HOSTS)
def test_the_evaluator_answers_as_the_sdk_when_every_attribute_is_present(
    expression: dict[str, Any], host: dict[str, Any]
) -> None:
    assert allows(expression, {"host": host}) is sdk_allows(expression, {"host": host})


def absent_as_false(expression: dict[str, Any], objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The expression with every atom on an attribute the objects lack replaced by one that is false: IAM's own
    reading of an absent attribute (the contract's rule 4.4-2), which the SDK instead raises on or fails open."""
    if expression.get("op") in ("AND", "OR"):
        return {**expression, "content": [absent_as_false(item, objects) for item in expression["content"]]}
    field = expression.get("field", "")
    if "." in field:
        resource_type, attribute = field.split(".", 1)
        if attribute not in objects.get(resource_type, {}):
            return {"op": "eq", "field": "never.x", "value": "y"}
    return expression


@ORACLE
@given(EXPRESSIONS, HOSTS, st.sets(st.sampled_from(["id", "_bk_iam_path_", "level", "tags", "name"]), min_size=1),
       st.booleans())  # fmt: skip
def test_with_attributes_missing_an_atom_on_them_is_false_never_an_error_nor_an_allow(
    expression: dict[str, Any], host: dict[str, Any], missing: set[str], no_host: bool
) -> None:
    objects = {} if no_host else {"host": {name: value for name, value in host.items() if name not in missing}}
    meant = sdk_allows(absent_as_false(expression, objects), {**objects, "never": {"x": "z"}})

    assert allows(expression, objects) is meant
