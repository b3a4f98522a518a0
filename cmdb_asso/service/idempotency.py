"""Safe retries: the first request with an `Idempotency-Key` runs; a retry with the same key and body gets the
first answer again, from any process; the same key with another body is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from cmdb_asso.errors import LANGUAGES, BodyInvalid, CmdbError, Language
from cmdb_asso.service.context import Caller
from cmdb_asso.storage.idempotency import IdempotencyStore, earlier_attempt, reservations_to

MAX_KEY_LENGTH = 255
# Operations whose whole answer follows from the one link they reserved.
SETTLED_BY_RESERVATION = frozenset({"add_instance_association"})
# Body keys that identify the caller rather than the request; they do not change what a retry means.
_CREDENTIAL_KEYS = frozenset({"bk_app_code", "bk_app_secret", "bk_username", "bk_token", "bk_supplier_account"})


class KeyReused(CmdbError):
    """The idempotency key was used before with another request body (1199006, naming the header)."""

    code = 1199006

    def message(self, language: Language) -> str:
        """Says what happened, in the request's language."""
        if language == "zh":
            return "'Idempotency-Key' 已用于另一个不同的请求"
        return "'Idempotency-Key' was already used with a different request"


class KeyInProgress(CmdbError):
    """Another request with this key is still running (HTTP 409, Retry-After): retry later for its answer."""

    code = 1199003
    http_status = 409

    def message(self, language: Language) -> str:
        """Says what happened, in the request's language."""
        if language == "zh":
            return "使用该 'Idempotency-Key' 的请求仍在处理中，请稍后重试"
        return "a request with this 'Idempotency-Key' is still in progress; retry later for its answer"


class ReplayedError(CmdbError):
    """An error answer recorded under an idempotency key, answered again as it was."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(permission=answer.get("permission"), http_status=int(answer.get("http_status", 200)))
        self.code = int(answer["code"])  # type: ignore[misc]
        self.texts = {language: str(answer.get(language, "")) for language in LANGUAGES}

    def message(self, language: Language) -> str:
        """The recorded text in `language`."""
        return self.texts[language]


def fingerprint(operation: str, params: Any) -> str:
    """A digest of the operation and its parameters, credentials left out, key order ignored."""
    if isinstance(params, dict):
        params = {key: value for key, value in params.items() if key not in _CREDENTIAL_KEYS and key != "dry_run"}
    canonical = orjson.dumps([operation, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class Idempotency:
    """Runs an operation at most once per key."""

    def __init__(self, store: IdempotencyStore, *, wait_seconds: float, stale_seconds: float) -> None:
        self.store = store
        self.wait_seconds = wait_seconds
        self.stale_seconds = stale_seconds

    async def run(
        self, caller: Caller, key: str, operation: str, params: Any, execute: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, bool]:
        """The operation's answer, and whether it is a replay. Errors are recorded and replayed too, except
        those a retry should run again (503 and 500), which release the key."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise BodyInvalid("Idempotency-Key")
        scoped = f"{caller.supplier_account}\x1f{caller.user}\x1f{operation}\x1f{key}"
        claim = await self.store.claim(
            scoped, fingerprint(operation, params), wait_seconds=self.wait_seconds, stale_seconds=self.stale_seconds
        )
        if claim.outcome == "mismatch":
            raise KeyReused()
        if claim.outcome == "busy":
            raise KeyInProgress()
        if claim.outcome == "replay" and claim.answer is not None:
            if "error" in claim.answer:
                raise ReplayedError(claim.answer["error"])
            return claim.answer.get("data"), True
        # Taken over from a holder that died or failed ambiguously after reserving its link's id: if that link
        # exists, the first attempt created it, and this is its answer.
        settles = claim.reserved is not None and operation in SETTLED_BY_RESERVATION
        if settles and claim.reserved is not None and await self.store.link_written(claim.reserved):
            data = {"id": claim.reserved["ids"][0]}
            await self.store.complete(scoped, claim.epoch, {"data": data})
            return data, True
        reserved = False

        async def record(link_ids: list[int], table: str) -> None:
            nonlocal reserved
            await self.store.reserve(scoped, claim.epoch, link_ids, table)
            reserved = True

        # A request run again after a take-over answers the links its earlier attempt wrote as its own.
        earlier = frozenset(
            int(i) for i in (claim.reserved or {}).get("every") or (claim.reserved or {}).get("ids") or []
        )
        try:
            with reservations_to(record), earlier_attempt(earlier):
                data = await execute()
        except CmdbError as error:
            if error.retryable:
                # Ran again by the retry; one that may have written stays claimed, to be settled by its ids.
                await (self.store.abandon if reserved else self.store.release)(scoped, claim.epoch)
                raise
            recorded = {language: error.message(language) for language in LANGUAGES}
            await self.store.complete(
                scoped,
                claim.epoch,
                {
                    "error": {
                        "code": error.code,
                        "permission": error.permission,
                        "http_status": error.http_status,
                        **recorded,
                    }
                },
            )
            raise
        except BaseException:
            await (self.store.abandon if reserved else self.store.release)(scoped, claim.epoch)
            raise
        await self.store.complete(scoped, claim.epoch, {"data": data})
        return data, False
