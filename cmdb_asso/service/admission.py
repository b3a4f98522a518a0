"""Bounds on the heavy work one process takes on at once, so that no few callers take the store from the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cmdb_asso.errors import Busy


class Gate:
    """At most `limit` requests of one kind of heavy work at once in this process (0: no bound); one more is
    answered at once with Busy (503 and Retry-After), rather than queued behind the others."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one place for the block, or raise Busy when every place is taken."""
        if self.limit and self.in_flight >= self.limit:
            self.refused += 1
            raise Busy(self.name)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
