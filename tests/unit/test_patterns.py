"""Which caller patterns are cheap to match: Python's hints about a pattern are no failure of the service."""

from __future__ import annotations

import pytest

from cmdb_asso.service.patterns import is_cheap


@pytest.mark.parametrize("pattern", ["[[a]", "[a||b]", "^app", "switch-[0-9]+$"])
def test_a_valid_pattern_is_judged_without_a_warning(pattern: str) -> None:
    assert is_cheap(pattern)  # warnings are errors in the tests: "possible nested set" would fail here


@pytest.mark.parametrize("pattern", [r"(\w|\w)*!", r"(a+)+$", "a{1,4294967295}", "(", r"(a)\1"])
def test_a_costly_or_broken_pattern_is_refused(pattern: str) -> None:
    assert not is_cheap(pattern)
