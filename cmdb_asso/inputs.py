"""What every boundary accepts: one int64 parser, and the tokens that may become part of a table name.

The integer parser takes JSON numbers and ASCII digit strings, bounded to int64.

Python's `str.isdigit()` and `int()` accept far more than a caller means by an id: Arabic-Indic and
full-width digits, superscripts (`isdigit` true, `int` refuses), underscores (`"1_000"`), surrounding
white space. BSON, on the other hand, refuses integers outside int64 only when a command is encoded, deep
inside the driver. So input is parsed here once, strictly, and nothing accepted can fail later.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Past this magnitude a float no longer names one integer (orjson reads an integer beyond 64 bits as a float:
# -9223372036854775809 would round to -2**63 and be taken for it).
FLOAT_EXACT = 2**53


def exact_float(value: float) -> bool:
    """Whether a float names one number exactly enough to stand for an integer: finite, within ±2**53."""
    return math.isfinite(value) and -FLOAT_EXACT <= value <= FLOAT_EXACT


# At most 19 digits: int64's longest; a longer string is refused before `int()` sees it.
_ASCII_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)
# Model ids and supplier accounts become part of table names (`cc_InstAsst_{supplier}_pub_{model}`): only a
# plain ASCII token is accepted, matched in full (`$` would let a trailing newline through).
MODEL_ID = re.compile(r"[A-Za-z0-9_]{1,128}", re.ASCII)
SUPPLIER_ACCOUNT = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)
# Printable text for names that reach storage and logs (users, app codes): no control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def int64_or_none(value: Any, *, from_text: bool = False, minimum: int = INT64_MIN) -> int | None:
    """The int64 that `value` stands for, or None.

    Accepted: a JSON integer, a float with no fraction within ±2**53 (`12.0`), and, when `from_text` is set (path
    parameters, CSV cells), a string of ASCII digits with an optional leading `-`. Refused: booleans,
    fractions, other strings, and anything outside `minimum`..2**63-1.
    """
    number: int
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not exact_float(value) or not value.is_integer():
            return None
        number = int(value)
    elif from_text and isinstance(value, str) and _ASCII_INTEGER.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if minimum <= number <= INT64_MAX else None


def is_int64(value: Any) -> TypeGuard[int]:
    """Whether `value` is a JSON integer BSON can encode (booleans are not integers)."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def is_plain_text(value: str, *, max_length: int = 256) -> bool:
    """Whether `value` is non-empty printable text of at most `max_length` characters that BSON can encode.

    aiohttp decodes header bytes that are not UTF-8 into lone surrogates, which strings may hold but BSON
    refuses to encode: such a value is refused here rather than failing in the driver.
    """
    if not value or len(value) > max_length or _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A Go type as bk-cmdb's JSON decoder reads it: "string", "int" (int64), "bool", "object" (a map), "any"; a struct
# (members by name; others ignored); a list of one type ([type]). A null is the zero value of any of them.
GoType = str | dict[str, "GoType"] | list["GoType"]


def decodes_as(value: Any, go_type: GoType) -> bool:
    """Whether bk-cmdb's decoder reads `value` into `go_type` without error (a number with a fraction or an
    exponent, or out of range, is no int; a string is no number; iteratively: no recursion limit to hit)."""
    pending: list[tuple[Any, GoType]] = [(value, go_type)]
    while pending:
        item, kind = pending.pop()
        if item is None or kind == "any":
            continue
        if isinstance(kind, dict):
            if not isinstance(item, dict):
                return False
            pending += [(item[name], member) for name, member in kind.items() if name in item]
        elif isinstance(kind, list):
            if not isinstance(item, list):
                return False
            pending += [(element, kind[0]) for element in item]
        elif not _SCALARS[kind](item):
            return False
    return True


_SCALARS = {
    "string": lambda item: isinstance(item, str),
    "int": lambda item: not isinstance(item, bool) and isinstance(item, int) and INT64_MIN <= item <= INT64_MAX,
    "bool": lambda item: isinstance(item, bool),
    "object": lambda item: isinstance(item, dict),
}
