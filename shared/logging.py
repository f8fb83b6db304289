"""structlog set-up: JSON lines off a terminal, readable colour on one; bound to service and site."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_SECRET_KEYS = ("password", "token", "secret", "authorization")
# The AMQP driver logs a broker restart as errors with tracebacks; the bus reports it itself, once, with what it does
# about it (`work_consumer_reconnect`, `publisher_reconnect`, ...), so the driver's own lines are kept quiet.
_QUIETED_DRIVER_LOGGERS = ("aiormq", "aio_pika")


def _drop_secrets(_logger: object, _method: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key in list(event_dict):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(
    service: str, site: str, fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Configure structlog for this process and bind `service` and `site` to every line."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, site=site)
    for name in _QUIETED_DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
