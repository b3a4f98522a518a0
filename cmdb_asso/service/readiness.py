"""Whether the service can serve: its database answers."""

from __future__ import annotations

from cmdb_asso.errors import CmdbError, StoreOutOfSpace
from cmdb_asso.service.context import time_budget
from cmdb_asso.storage.client import MongoConnection

# A probe answers within seconds, not after a request's whole deadline: a MongoDB that has not answered a
# ping by then is not ready.
PING_SECONDS = 2.0


class Readiness:
    """Asks the database whether it answers, for /readyz."""

    def __init__(self, mongo: MongoConnection) -> None:
        self._mongo = mongo
        # A fault found after start-up that the service cannot serve with (sharded association tables).
        self.fault: str | None = None
        # Set when the store refused a write for want of space: each probe then tries a write, until one passes.
        self.out_of_space = False

    def saw(self, error: CmdbError) -> None:
        """Learn from an error a request met: a write refused for want of disk space makes the service not ready."""
        if isinstance(error, StoreOutOfSpace):
            self.out_of_space = True

    async def problem(self) -> str | None:
        """None when MongoDB answers a ping (and, after a full disk, takes a write again); otherwise why not,
        without the driver's text."""
        if self.fault is not None:
            return self.fault
        try:
            with time_budget(PING_SECONDS):
                await self._mongo.ping()
                if self.out_of_space:
                    await self._mongo.write_probe()
                    self.out_of_space = False
        except StoreOutOfSpace:
            return "mongodb: out of disk space (writes are refused)"
        except CmdbError as error:
            return f"mongodb: {type(error).__name__}"
        return None
