"""ESB applications: which app codes may call, checked against the salted hashes of their secrets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping

import structlog
from cachetools import TTLCache

from cmdb_asso.credentials import verify_secret
from cmdb_asso.errors import AppAuthFailed

log = structlog.get_logger(__name__)

# How long a refused app secret is remembered, and how many refusals at most.
FAILED_SECRET_SECONDS = 30.0
FAILED_SECRET_ENTRIES = 4096


class AppAuthenticator:
    """Checks ESB applications against the configured app codes and secret hashes."""

    def __init__(self, apps: Mapping[str, str]) -> None:
        self._apps = dict(apps)
        # A secret that passed once is remembered by its SHA-256 digest, so that the deliberately slow hash
        # runs once per app and process, not once per request (one entry per configured app: bounded).
        self._verified: dict[str, bytes] = {}
        # A refused secret is remembered for a short time, so that a caller repeating a wrong secret costs
        # a dictionary look-up, not a PBKDF2 run; bounded, so that varying secrets cannot grow it.
        self._refused: TTLCache[tuple[str, bytes], bool] = TTLCache(FAILED_SECRET_ENTRIES, FAILED_SECRET_SECONDS)

    @property
    def open(self) -> bool:
        """Whether no apps are configured, so that every app is accepted."""
        return not self._apps

    async def authenticate(self, app_code: str, secret: str) -> None:
        """Raise 1199046 unless the app is listed and its secret matches (or no apps are configured).

        The slow hash runs in a worker thread, never on the event loop.
        """
        if self.open:
            return
        stored = self._apps.get(app_code)
        if stored is None:
            raise AppAuthFailed()
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        remembered = self._verified.get(app_code)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return
        if (app_code, digest) in self._refused:
            raise AppAuthFailed()
        if not await asyncio.to_thread(verify_secret, secret, stored):
            log.info("esb_app_rejected", bk_app_code=app_code)
            self._refused[(app_code, digest)] = True
            raise AppAuthFailed()
        self._verified[app_code] = digest
