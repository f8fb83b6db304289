"""The one acknowledgement policy: what happens to a message after its handler ran (or failed)."""

from __future__ import annotations

import enum

import aio_pika
import aiormq
import asyncpg
import pydantic

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.errors import PermanentError, TransientError


class Disposition(enum.Enum):
    """ACK after commit; DEAD_LETTER input that can never succeed; RETRY transient failures (bounded)."""

    ACK = "ack"
    DEAD_LETTER = "dead-letter"
    RETRY = "retry"


# Constraint violations and bad data fail the same way on every attempt.
_PERMANENT: tuple[type[BaseException], ...] = (
    PermanentError,
    pydantic.ValidationError,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)
# The broker went away under us (a restart, a dropped link): the operation may succeed once it is back.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, *TRANSIENT_DB_ERRORS, *BROKER_ERRORS, TimeoutError)


def classify(exc: BaseException) -> Disposition:
    """Decide a failed message's fate from its exception. Unknown errors are retried, bounded by the caller."""
    if isinstance(exc, _PERMANENT):
        return Disposition.DEAD_LETTER
    return Disposition.RETRY


def is_transient(exc: BaseException) -> bool:
    """True for failures of the infrastructure (database, broker) rather than of the message."""
    return isinstance(exc, _TRANSIENT)


def describe(exc: BaseException) -> str:
    """A one-line reason for headers and logs: the error class and its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}"[:1000]
