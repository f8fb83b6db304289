"""The one error classifier: every retry decision in obsflow asks `classify` what a failure means.

Three answers, one policy everywhere:
- TRANSIENT: the infrastructure failed, not the work (the database or broker is unreachable or restarting, a
  serialization conflict): wait it out, however long it takes; never give the work up for it.
- PERMANENT: the input can never succeed (a malformed event, a validation error, a constraint violated, a path too
  long for any filesystem): set it aside at once, with its reason.
- UNKNOWN: anything else (a bug, a file system error): a few attempts, then set aside with its reason.

Driver errors (asyncpg, aio-pika, aiormq, sockets) are recognised here and nowhere else: code that must turn them
into obsflow errors at its edge uses `translate_db_errors`, code that tidies up after a failure uses
`suppress_transient`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import re
import socket
from collections.abc import Iterator

import aio_pika
import aiormq
import asyncpg
import pydantic

from shared.bounded_json import JsonRefused
from shared.errors import DatabaseUnavailable, PermanentError, StorageUnavailable, TransientError


class Failure(enum.Enum):
    """What a failure says about the work that raised it."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


# PostgreSQL unreachable, restarting (admin/crash shutdown, "cannot connect now"), out of connections or resources.
_DATABASE_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InterfaceError,  # "connection is closed", "connection was closed in the middle of operation"
)
# Two transactions in each other's way: the next attempt succeeds.
_CONTENTION: tuple[type[BaseException], ...] = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# RabbitMQ unreachable or restarting, a channel closed under us.
_BROKER_DOWN: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
)
# ... except what the broker refuses on purpose: a permission, a queue that does not exist (deleted), arguments that
# differ from the declared ones. Waiting does not fix these; a restarted service declares its topology again.
_BROKER_REFUSALS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.DuplicateConsumerTag,
)
# ... but a queue the broker has, whose process is not running yet (just after a restart), is an outage.
_QUEUE_NOT_UP = re.compile(r"is down or inaccessible|process is stopped by supervisor")
# asyncpg's protocol still consuming an error the server sent (state 2: the FATAL of a shutting-down server on a pooled
# connection) when the pool hands that connection to the next query: the connection is going, the database too.
_DATABASE_GOING = re.compile(r"another operation \(2\) is in progress")
# aio-pika and aiormq say a connection that died under a caller with bare RuntimeErrors.
_CONNECTION_GONE = re.compile(r"^(<Connection: .*> closed|Connection was not opened)$")
# Sockets: refused, reset, timed out, a name that did not resolve (DNS restarting).
_NETWORK: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, socket.gaierror)
_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, *_DATABASE_DOWN, *_CONTENTION, *_BROKER_DOWN, *_NETWORK)

_PERMANENT: tuple[type[BaseException], ...] = (
    PermanentError,
    pydantic.ValidationError,
    JsonRefused,
    asyncpg.DataError,  # a value PostgreSQL refuses (out of range, bad encoding)
    asyncpg.IntegrityConstraintViolationError,
)
# Operating-system errors caused by the input itself: retrying the same input gives the same answer.
_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG})


def classify(exc: BaseException) -> Failure:
    """What `exc` says about the work that raised it: wait it out, set it aside, or try a few times."""
    if isinstance(exc, _PERMANENT):
        return Failure.PERMANENT
    if isinstance(exc, _BROKER_REFUSALS):
        not_up = isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity) and _QUEUE_NOT_UP.search(str(exc))
        return Failure.TRANSIENT if not_up else Failure.UNKNOWN
    if isinstance(exc, _TRANSIENT):
        return Failure.TRANSIENT
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return Failure.PERMANENT
    if type(exc) is RuntimeError and _CONNECTION_GONE.match(str(exc)):
        return Failure.TRANSIENT
    if isinstance(exc, asyncpg.InternalClientError) and _DATABASE_GOING.search(str(exc)):
        return Failure.TRANSIENT
    return Failure.UNKNOWN


def is_transient(exc: BaseException) -> bool:
    """True for failures of the infrastructure (database, broker, network) rather than of the work."""
    return classify(exc) is Failure.TRANSIENT


def describe(exc: BaseException) -> str:
    """A one-line reason for headers, rows and logs: the error class and the first line of its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}"[:1000]


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn transient driver-level database failures into DatabaseUnavailable, at the edge."""
    try:
        yield
    except Exception as e:
        if isinstance(e, TransientError) or not is_transient(e):
            raise
        raise DatabaseUnavailable(f"PostgreSQL unavailable: {describe(e)}") from e


@contextlib.contextmanager
def translate_storage_errors(what: str) -> Iterator[None]:
    """Turn a file system failure (OSError) of background upkeep into StorageUnavailable: tried again next round.

    Only for work without an input of its own (measuring stores, sweeping staging): for a message's handler an
    OSError may be the message's fault, and `classify` decides.
    """
    try:
        yield
    except OSError as e:
        if is_transient(e):
            raise
        raise StorageUnavailable(f"{what}: {describe(e)}") from e


@contextlib.contextmanager
def suppress_transient() -> Iterator[None]:
    """Ignore a transient failure of best-effort tidying (releasing a lock on a connection that is gone)."""
    try:
        yield
    except Exception as e:
        if not is_transient(e):
            raise
