"""Time as bk-cmdb stores it."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time as a naive UTC datetime, as bk-cmdb stores times."""
    return datetime.now(UTC).replace(tzinfo=None)
