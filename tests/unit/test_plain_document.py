"""Instances as stored, with BSON's own types, handed out as plain JSON values (what Go's encoder would write)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp

from cmdb_asso.storage.documents import plain_document


def test_every_bson_type_becomes_a_json_value() -> None:
    stored = {
        "n": Int64(7), "price": Decimal128("12.50"), "ref": ObjectId("65f0a0a0a0a0a0a0a0a0a0a0"),
        "blob": Binary(b"\x00\x01"), "raw": b"ab", "pattern": Regex("^a", "i"),
        "at": datetime(2026, 1, 2, 3, 4, 5), "stamp": Timestamp(1767323045, 1),
        "nested": {"list": [Decimal128("1"), None, True]},
    }  # fmt: skip

    plain = plain_document(stored)

    assert plain["n"] == 7
    assert type(plain["n"]) is int
    assert (plain["price"], plain["ref"], plain["blob"], plain["raw"]) == ("12.50", "65f0a0a0a0a0a0a0a0a0a0a0",
                                                                          "AAE=", "YWI=")  # fmt: skip
    assert plain["pattern"] == "^a"
    assert plain["at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert plain["stamp"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert plain["nested"] == {"list": ["1", None, True]}
    orjson.dumps(plain)  # nothing left that the envelope could not write
