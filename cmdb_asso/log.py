"""structlog set-up: JSON lines when not on a terminal, readable console output on one."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from cmdb_asso.config import LogSettings


def _orjson_dumps(event: Any, **_kwargs: Any) -> str:
    return orjson.dumps(event, default=str).decode()


class _StandardOutput:
    """Writes each line to whatever `sys.stdout` is at that moment (not the stream of the moment logging was
    set up: a command run inside a test, or a replaced stream, must not leave loggers writing to a closed
    file once loggers are cached)."""

    def msg(self, message: str) -> None:
        """Write one line and flush it."""
        sys.stdout.write(message + "\n")
        sys.stdout.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _standard_output(*_args: Any) -> _StandardOutput:
    return _StandardOutput()


def setup_logging(settings: LogSettings) -> None:
    """Configure structlog (and the standard library's root logger) once, at start-up."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stdout.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_standard_output,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(level, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
