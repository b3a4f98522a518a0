"""Middlewares: request id, language and the request log line; every error turned into the envelope."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from cmdb_asso.errors import (
    AppAuthFailed,
    BodyTimeout,
    BodyTooLarge,
    BodyUnreadable,
    CmdbError,
    InputInvalid,
    InternalError,
    Language,
    StoreReadUnavailable,
    StoreWriteUnavailable,
)
from cmdb_asso.keys import (
    DRAINING,
    GATEWAY_SPELLING,
    LANGUAGE,
    METRICS,
    OPERATION_WRITES,
    READINESS,
    REQUEST_ID,
    RESPONSE_CODE,
    SETTINGS,
)
from cmdb_asso.operations import LONG_POLL_MARK
from cmdb_asso.service.context import time_budget
from cmdb_asso.web.envelope import failure, is_esb
from cmdb_asso.web.identity import language_of, on_gateway_path, request_id_of

log = structlog.get_logger("cmdb_asso.access")
# The driver notices its own time budget is spent only when its server selection wakes (every half second):
# the loop's backstop waits a little longer, so that the driver's translated error is what answers.
DEADLINE_GRACE_SECONDS = 1.0


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request id and language, echo the id, and write one log line per request."""
    started = time.perf_counter()
    request_id = request_id_of(request)
    default_language: Language = "zh" if request.app[SETTINGS].language == "zh" else "en"
    request[REQUEST_ID] = request_id
    request[LANGUAGE] = language_of(request, default_language) or default_language
    request[GATEWAY_SPELLING] = on_gateway_path(request)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        response.headers["X-Bkapi-Request-Id"] = request_id
        if request.app[DRAINING].is_set():
            # Shutting down: no connection is kept alive for a request that could meet a closed listener.
            response.force_close()
        elapsed = time.perf_counter() - started
        code = response.get(RESPONSE_CODE)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            code=code,
            duration_ms=round(elapsed * 1000, 3),
            pid=os.getpid(),  # which worker answered, when several serve one port
        )
        request.app[METRICS].observe(request, response.status, code, elapsed)
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


def _http_error(exc: web.HTTPException, request: web.Request) -> tuple[CmdbError, dict[str, str] | None]:
    if exc.status == 413:
        return BodyTooLarge("body", request.app[SETTINGS].http.max_body_bytes), None
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return InputInvalid(http_status=405), {"Allow": ", ".join(sorted(exc.allowed_methods))}
    return InputInvalid(http_status=exc.status), None


async def _receive_body(request: web.Request) -> None:
    """Read the whole body within its own time limit, so that a slow client is told 408 and its slowness
    never counts against the database deadline; a body that cannot be decoded as its headers say is a 400."""
    if not request.body_exists:
        return
    try:
        async with asyncio.timeout(request.app[SETTINGS].http.body_timeout_seconds):
            await request.read()
    except TimeoutError:
        log.info("request_body_timeout", method=request.method, path=request.path)
        raise BodyTimeout() from None
    except (HttpProcessingError, RequestPayloadError):
        # e.g. Content-Encoding: gzip on a body that is not gzip. The parser's text is not echoed.
        raise BodyUnreadable("body") from None


@web.middleware
async def request_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound the time one request may spend (MongoDB work included): past it, 503 rather than a hang."""
    await _receive_body(request)
    settings = request.app[SETTINGS]
    seconds = settings.mongodb.request_deadline_seconds
    # The driver's own budget ends first, so that its error (translated with the operation's read or write
    # code) answers; the loop's deadline is the backstop for everything else. A long poll waits for news for
    # its own time, and each of its reads gets a budget of its own.
    long_poll = getattr(request.match_info.handler, LONG_POLL_MARK, False)
    limit = settings.watch.long_poll_seconds + 3 * seconds if long_poll else seconds
    try:
        async with asyncio.timeout(limit + DEADLINE_GRACE_SECONDS):
            with contextlib.nullcontext() if long_poll else time_budget(seconds):
                return await handler(request)
    except TimeoutError:
        log.warning("request_deadline_exceeded", method=request.method, path=request.path)
        raise (StoreWriteUnavailable() if request.get(OPERATION_WRITES) else StoreReadUnavailable()) from None


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error, expected or not, into the envelope of the request's spelling."""
    try:
        return await handler(request)
    except CmdbError as error:
        if READINESS in request.app:
            request.app[READINESS].saw(error)
        headers = None
        if isinstance(error, AppAuthFailed) and is_esb(request):
            # BlueKing's client libraries recognise an authentication failure by these headers.
            headers = {"X-Bkapi-Error-Code": "1640001", "X-Bkapi-Error-Message": "app authentication failed"}
        response = failure(request, error, headers)
        if isinstance(error, BodyTimeout | BodyUnreadable):
            # The rest of the body is still on its way (or unreadable): the connection cannot carry another request.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refused, allow = _http_error(exc, request)
        return failure(request, refused, allow)
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return failure(request, InternalError("server"))
