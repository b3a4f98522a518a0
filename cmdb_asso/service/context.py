"""Who is calling, and how long the request may take: the identity and budget every operation acts within."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

from cmdb_asso.storage.budget import deadline as budget_deadline
from cmdb_asso.storage.budget import time_budget as storage_time_budget


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request: user, supplier account, ESB app code and request id."""

    user: str
    supplier_account: str
    app_code: str = ""
    request_id: str = ""


def time_budget(seconds: float) -> AbstractContextManager[None]:
    """The scope in which every database command carries the request's remaining time."""
    return storage_time_budget(seconds)


def remaining_budget() -> float | None:
    """Seconds left of the current time budget, if one is set."""
    deadline = budget_deadline()
    return None if deadline is None else deadline - time.monotonic()
